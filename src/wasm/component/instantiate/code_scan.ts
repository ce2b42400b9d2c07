/**
 * Which tables and globals a core module's code can write: a prepare-time scan of
 * every function body, so that a recycled instance sets back only what a request
 * could have changed (see `recycle.ts`).
 *
 * Why: setting a table back costs one `table.copy` of all its entries per request
 * (~300 µs for the 7,782 entries of a componentize-js guest's function table), yet
 * what toolchains emit almost never writes its tables after instantiation (LLVM's
 * indirect function table is filled by active element segments only). A table or
 * global is written after instantiation only by an instruction (`table.set`,
 * `table.grow`, `table.fill`, `table.copy` into it, `table.init` into it,
 * `global.set`) in some module's code: by this module's, or, for one it exports, by
 * the code of another module that imports it. The component model gives the host no
 * way to reach a core module's tables or globals, and element and data segments are
 * applied during instantiation, before a recycled instance's state is taken.
 *
 * An instruction this scan does not know makes it answer "everything can be written":
 * it can only make a recycled instance restore more than it needs, never less.
 *
 * @module
 */

/** What a module's code can write (indices count imports first, as in the module). */
export interface CodeWrites {
  /** Indices of tables written, or "all" if the code could not be read. */
  tables: Set<number> | "all";
  /** Indices of globals written, or "all" if the code could not be read. */
  globals: Set<number> | "all";
  /** Its code writes a table it imports (one another module defines and exports). */
  importedTables: boolean;
  /** Its code sets a global it imports. */
  importedGlobals: boolean;
}

/** An instruction (or a module construct) the scan does not read. */
class Unknown extends Error {}

const ALL: CodeWrites = {
  tables: "all",
  globals: "all",
  importedTables: true,
  importedGlobals: true,
};

/**
 * What the code of `module` (a module that validates) can write. Never throws: a
 * module it cannot read is answered with "everything".
 */
export function scanWrites(module: Uint8Array): CodeWrites {
  try {
    return scan(module, null);
  } catch {
    return ALL;
  }
}

/** The memory instructions the virtual memory size rewrites (see `vsize.ts`). */
export type MemoryOpKind = "size" | "grow" | "fill" | "copy" | "init";

/** Where a module's code uses its memory's size, and its function bodies. */
export interface MemoryOps {
  /** Each instruction: its kind and `[start, end)` in the module's bytes. */
  ops: { kind: MemoryOpKind; start: number; end: number }[];
  /** Each function body: `[start, end)` of its bytes after the size (locals and code). */
  bodies: { start: number; end: number }[];
}

/**
 * Where the code of `module` (a module that validates) uses memory instructions whose
 * meaning depends on the memory's size, or null if an instruction could not be read.
 */
export function scanMemoryOps(module: Uint8Array): MemoryOps | null {
  const found: MemoryOps = { ops: [], bodies: [] };
  try {
    scan(module, found);
  } catch {
    return null;
  }
  return found;
}

function scan(m: Uint8Array, memory: MemoryOps | null): CodeWrites {
  let at = 8;
  const u32 = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = m[at++];
      if (b === undefined) throw new Unknown("unexpected end");
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 35) throw new Unknown("LEB128 too long");
    }
  };
  /** Skips a LEB128 number (signed or unsigned) of any width up to 64 bits. */
  const leb = (): void => {
    for (let n = 0; n < 10; n++) {
      const b = m[at++];
      if (b === undefined) throw new Unknown("unexpected end");
      if ((b & 0x80) === 0) return;
    }
    throw new Unknown("LEB128 too long");
  };
  /** Skips a value type; typed references (two or more bytes) are not read. */
  const valType = (): void => {
    const t = m[at++];
    if (t === 0x63 || t === 0x64) throw new Unknown("a typed reference");
  };
  const memarg = (): void => {
    const align = u32();
    if (align & 0x40) u32(); // a memory index (multi-memory)
    leb();
  };

  let importedTables = 0;
  let importedGlobals = 0;
  const tables = new Set<number>();
  const globals = new Set<number>();
  while (at < m.length) {
    const id = m[at++];
    const size = u32();
    const end = at + size;
    if (id === 2) {
      for (let n = u32(); n > 0; n--) {
        for (let name = 0; name < 2; name++) { // module and field names
          const length = u32();
          at += length;
        }
        const kind = m[at++];
        if (kind === 0x00) u32();
        else if (kind === 0x01) {
          importedTables++;
          valType();
          const flag = m[at++];
          u32();
          if (flag & 0x01) u32();
        } else if (kind === 0x02) {
          const flag = m[at++];
          u32();
          if (flag & 0x01) u32();
        } else if (kind === 0x03) {
          importedGlobals++;
          valType();
          at++; // mutability
        } else throw new Unknown(`import kind ${kind}`);
      }
    } else if (id === 10) {
      for (let n = u32(); n > 0; n--) {
        const bodyEnd = u32() + at;
        memory?.bodies.push({ start: at, end: bodyEnd });
        for (let k = u32(); k > 0; k--) {
          u32();
          valType();
        }
        while (at < bodyEnd) instruction(m[at++]);
        if (at !== bodyEnd) throw new Unknown("a function body overruns");
      }
    }
    at = end;
  }
  const imported = (set: Set<number>, count: number) => [...set].some((i) => i < count);
  return {
    tables,
    globals,
    importedTables: imported(tables, importedTables),
    importedGlobals: imported(globals, importedGlobals),
  };

  function instruction(op: number): void {
    if (op >= 0x45 && op <= 0xc4) return; // numeric, no immediates
    if (op >= 0x28 && op <= 0x3e) return memarg();
    switch (op) {
      case 0x00: // unreachable
      case 0x01: // nop
      case 0x05: // else
      case 0x0b: // end
      case 0x0f: // return
      case 0x1a: // drop
      case 0x1b: // select
      case 0xd1: // ref.is_null
        return;
      case 0x02: // block
      case 0x03: // loop
      case 0x04: { // if
        const t = m[at];
        if (t === 0x63 || t === 0x64) throw new Unknown("a typed reference block type");
        return leb(); // 0x40, a value type (one byte) or a type index (s33)
      }
      case 0x0c: // br
      case 0x0d: // br_if
      case 0x10: // call
      case 0x12: // return_call
      case 0x20: // local.get
      case 0x21: // local.set
      case 0x22: // local.tee
      case 0x23: // global.get
      case 0x25: // table.get
      case 0xd2: // ref.func
        u32();
        return;
      case 0x0e: // br_table
        for (let n = u32(); n >= 0; n--) u32();
        return;
      case 0x11: // call_indirect
      case 0x13: // return_call_indirect
        u32();
        u32();
        return;
      case 0x1c: // select t*
        for (let n = u32(); n > 0; n--) {
          valType();
        }
        return;
      case 0x24: // global.set
        globals.add(u32());
        return;
      case 0x26: // table.set
        tables.add(u32());
        return;
      case 0x3f: // memory.size
      case 0x40: { // memory.grow
        const start = at - 1;
        u32();
        memory?.ops.push({ kind: op === 0x3f ? "size" : "grow", start, end: at });
        return;
      }
      case 0x41: // i32.const
      case 0x42: // i64.const
        return leb();
      case 0x43: // f32.const
        at += 4;
        return;
      case 0x44: // f64.const
        at += 8;
        return;
      case 0xd0: { // ref.null
        const t = m[at++];
        if (t !== 0x70 && t !== 0x6f) throw new Unknown("ref.null of a typed reference");
        return;
      }
      case 0xfc: {
        const start = at - 1;
        const sub = u32();
        bulk(sub);
        const kind = sub === 8 ? "init" : sub === 10 ? "copy" : sub === 11 ? "fill" : null;
        if (kind !== null) memory?.ops.push({ kind, start, end: at });
        return;
      }
      case 0xfd:
        return simd(u32());
      case 0xfe: { // atomics (threads)
        const sub = u32();
        if (sub === 0x03) at++; // atomic.fence
        else memarg();
        return;
      }
    }
    throw new Unknown(`opcode 0x${op.toString(16)}`);
  }

  function bulk(sub: number): void {
    if (sub <= 7) return; // saturating truncations
    switch (sub) {
      case 8: // memory.init
      case 10: // memory.copy
        u32();
        u32();
        return;
      case 9: // data.drop
      case 11: // memory.fill
      case 13: // elem.drop
      case 16: // table.size
        u32();
        return;
      case 12: // table.init elem table
        u32();
        tables.add(u32());
        return;
      case 14: // table.copy dst src
        tables.add(u32());
        u32();
        return;
      case 15: // table.grow
      case 17: // table.fill
        tables.add(u32());
        return;
    }
    throw new Unknown(`opcode 0xfc ${sub}`);
  }

  function simd(sub: number): void {
    if (sub <= 11 || sub === 92 || sub === 93) return memarg(); // loads, stores
    if (sub === 12 || sub === 13) { // v128.const, i8x16.shuffle
      at += 16;
      return;
    }
    if (sub >= 21 && sub <= 34) { // extract/replace lane
      at++;
      return;
    }
    if (sub >= 84 && sub <= 91) { // load/store lane
      memarg();
      at++;
      return;
    }
    if (sub <= 0x113) return; // the rest (relaxed SIMD included) have no immediates
    throw new Unknown(`opcode 0xfd ${sub}`);
  }
}
