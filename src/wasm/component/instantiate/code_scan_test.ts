import assert from "node:assert/strict";
import { encodeName, encodeU32 } from "../leb128.ts";
import { scanWrites } from "./code_scan.ts";
import { prepareImage, RESET_EXPORT_PREFIX } from "./image.ts";
import { importMemory } from "./memory.ts";

const FUNCREF = 0x70;
const I32 = 0x7f;

const section = (id: number, items: number[][]) => {
  const body = [...encodeU32(items.length), ...items.flat()];
  return [id, ...encodeU32(body.length), ...body];
};

/**
 * A module built here: types `() -> ()` (0) and `() -> i32` (1), one memory, one
 * funcref table and one mutable i32 global (after any imports), a function per body
 * (of type 0, `locals` declared in each), a passive element segment of function 0,
 * and `exports`.
 */
function moduleOf(bodies: number[][], options: {
  imports?: number[][];
  exports?: number[][];
  locals?: number[];
} = {}): Uint8Array {
  const code = bodies.map((b) => {
    const body = [...(options.locals ?? [0]), ...b, 0x0b];
    return [...encodeU32(body.length), ...body];
  });
  const bytes = new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, [[0x60, 0, 0], [0x60, 0, 1, I32]]),
    ...(options.imports ? section(2, options.imports) : []),
    ...section(3, bodies.map(() => [0])),
    ...section(4, [[FUNCREF, 0x00, 1]]),
    ...section(5, [[0x00, 1]]),
    ...section(6, [[I32, 1, 0x41, 0, 0x0b]]),
    ...(options.exports ? section(7, options.exports) : []),
    ...section(9, [[1, 0x00, 1, 0]]),
    ...section(10, code),
  ]);
  assert.ok(WebAssembly.validate(bytes), "the test module validates");
  return bytes;
}

const NULL = [0xd0, FUNCREF];
const ZERO = [0x41, 0];

Deno.test("every instruction that writes a table or sets a global is found", () => {
  const cases: [string, number[]][] = [
    ["table.set", [...ZERO, ...NULL, 0x26, 0]],
    ["table.grow", [...NULL, ...ZERO, 0xfc, 15, 0, 0x1a]],
    ["table.fill", [...ZERO, ...NULL, ...ZERO, 0xfc, 17, 0]],
    ["table.copy", [...ZERO, ...ZERO, ...ZERO, 0xfc, 14, 0, 0]],
    ["table.init", [...ZERO, ...ZERO, ...ZERO, 0xfc, 12, 0, 0]],
  ];
  for (const [name, body] of cases) {
    const writes = scanWrites(moduleOf([body]));
    assert.deepEqual(writes.tables, new Set([0]), name);
    assert.deepEqual(writes.globals, new Set(), name);
  }
  const set = scanWrites(moduleOf([[], [...ZERO, 0x24, 0]]));
  assert.deepEqual(set.globals, new Set([0]));
  assert.deepEqual(set.tables, new Set());
});

Deno.test("reading tables and globals is not writing them", () => {
  const body = [
    ...[...ZERO, 0x11, 1, 0, 0x1a], // call_indirect (type 1) table 0
    ...[...ZERO, 0x25, 0, 0x1a], // table.get
    ...[0xfc, 16, 0, 0x1a], // table.size
    ...[0x23, 0, 0x1a], // global.get
    ...[0xfc, 13, 0], // elem.drop
  ];
  const writes = scanWrites(moduleOf([body]));
  assert.deepEqual(writes, {
    tables: new Set(),
    globals: new Set(),
    importedTables: false,
    importedGlobals: false,
  });
});

Deno.test("immediates are skipped, not read as instructions", () => {
  // Constants whose bytes spell table.set / global.set if read as code.
  const body = [
    ...[0x44, 0x26, 0x00, 0x24, 0x00, 0x26, 0x00, 0x24, 0x00, 0x1a], // f64.const
    ...[0x43, 0x26, 0x00, 0x26, 0x00, 0x1a], // f32.const
    ...[0x42, 0xa6, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0x1a], // i64.const
    ...[0xfd, 12, ...Array(8).fill([0x26, 0x00]).flat(), 0x1a], // v128.const
    ...[...ZERO, 0xfd, 0, 0x04, 0x26, 0x1a], // v128.load align 4 offset 0x26
    ...[...ZERO, 0x28, 0x02, 0xa6, 0x00, 0x1a], // i32.load offset 0x26 (two bytes)
    ...[0x02, 0x40, ...ZERO, 0x0e, 1, 0, 0, 0x0b], // block { br_table 0 0 }
  ];
  const writes = scanWrites(moduleOf([body]));
  assert.deepEqual(writes.tables, new Set());
  assert.deepEqual(writes.globals, new Set());
});

Deno.test("writes to imported tables and globals are told apart (indices count imports)", () => {
  const imports = [
    [...encodeName("m"), ...encodeName("t"), 0x01, FUNCREF, 0x00, 1],
    [...encodeName("m"), ...encodeName("g"), 0x03, I32, 1],
  ];
  const own = scanWrites(moduleOf([[...ZERO, ...NULL, 0x26, 1, ...ZERO, 0x24, 1]], { imports }));
  assert.deepEqual(own.tables, new Set([1]));
  assert.deepEqual(own.globals, new Set([1]));
  assert.equal(own.importedTables, false);
  assert.equal(own.importedGlobals, false);
  const theirs = scanWrites(
    moduleOf([[...ZERO, ...NULL, 0x26, 0, ...ZERO, 0x24, 0]], { imports }),
  );
  assert.equal(theirs.importedTables, true);
  assert.equal(theirs.importedGlobals, true);
});

Deno.test("code the scan does not read counts as writing everything", () => {
  // A local of a typed function reference (`(ref null 0)`).
  const writes = scanWrites(moduleOf([[]], { locals: [1, 1, 0x63, 0x00] }));
  assert.equal(writes.tables, "all");
  assert.equal(writes.globals, "all");
  assert.equal(writes.importedTables, true);
  assert.equal(scanWrites(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 10, 5])).tables, "all");
});

/** The reset export names `prepareImage` gives `bytes`. */
function resetOf(bytes: Uint8Array, elsewhere?: { tables: boolean; globals: boolean }) {
  const prepared = prepareImage(importMemory(bytes)!.bytes, { writtenElsewhere: elsewhere });
  if (prepared.kind !== "prepared") throw new Error(prepared.reason);
  const names = (list: string[]) => list.map((n) => n.slice(RESET_EXPORT_PREFIX.length));
  return { tables: names(prepared.reset.tables), globals: names(prepared.reset.globals) };
}

Deno.test("only tables and globals that can be written are set back by a recycled instance", () => {
  const nothing = { tables: false, globals: false };
  assert.deepEqual(resetOf(moduleOf([[0x23, 0, 0x1a]]), nothing), { tables: [], globals: [] });
  assert.deepEqual(resetOf(moduleOf([[...ZERO, ...NULL, 0x26, 0, ...ZERO, 0x24, 0]]), nothing), {
    tables: ["t0"],
    globals: ["g0"],
  });
  // Exported: another module's code may write them if any writes what it imports.
  const exports = [[...encodeName("t"), 0x01, 0], [...encodeName("g"), 0x03, 0]];
  const exported = moduleOf([[]], { exports });
  assert.deepEqual(resetOf(exported, nothing), { tables: [], globals: [] });
  assert.deepEqual(resetOf(exported, { tables: true, globals: false }), {
    tables: ["t0"],
    globals: [],
  });
  assert.deepEqual(resetOf(exported), { tables: ["t0"], globals: ["g0"] });
  // Unread code: everything.
  assert.deepEqual(resetOf(moduleOf([[]], { locals: [1, 1, 0x63, 0x00] }), nothing), {
    tables: ["t0"],
    globals: ["g0"],
  });
});
