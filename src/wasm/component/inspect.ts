/**
 * Reads a component's top-level imports and exports from its binary (component model
 * binary format: sections 10 and 11 of the outer component), and decides how it runs.
 * This needs no transpile, so a component that cannot run fails fast with a precise
 * message.
 *
 * @module
 */

import { invalidArgument } from "../../errdefs/errors.ts";
import { SUPPORTED_INTERFACES } from "./host/mod.ts";
import { BinaryReader, type BinaryReader as Reader, type Fail } from "./binary.ts";

/** Section ids of the outer component that matter here. */
const IMPORT_SECTION = 10;
const EXPORT_SECTION = 11;
/** Size of the preamble: magic, version, layer. */
const PREAMBLE_LENGTH = 8;

/** What kind of item an import or export is. */
export type ItemKind =
  | "core-module"
  | "func"
  | "value"
  | "type"
  | "component"
  | "instance"
  | "core-func"
  | "core-other";

/** One top-level import or export. */
export interface Item {
  /** Its name, e.g. `wasi:cli/run@0.2.0` or `hello`. */
  name: string;
  kind: ItemKind;
}

/** The top-level imports and exports of a component. */
export interface ComponentShape {
  imports: Item[];
  exports: Item[];
}

/** Thrown for a binary this parser cannot read. */
export class MalformedComponent extends Error {
  /** A parse failure at byte `offset`. */
  constructor(message: string, offset: number) {
    super(`${message} at byte ${offset}`);
    this.name = "MalformedComponent";
  }
}

/** Reports malformed input as a {@linkcode MalformedComponent}. */
const malformed: Fail = (what, offset) => {
  throw new MalformedComponent(what, offset);
};

/** A reader of `bytes[offset, end)` failing with {@linkcode MalformedComponent}. */
function reader(bytes: Uint8Array, offset: number, end: number): Reader {
  return new BinaryReader(bytes, offset, end, malformed);
}

const SORTS: Record<number, ItemKind> = {
  0x01: "func",
  0x02: "value",
  0x03: "type",
  0x04: "component",
  0x05: "instance",
};

/**
 * Reads `importname'`/`exportname'`: 0x00 or 0x01 (the encoding wasm-tools uses for
 * interface names) then the name; 0x02 adds a version suffix after it.
 */
function readName(r: Reader): string {
  const tag = r.byte();
  if (tag === 0x00 || tag === 0x01) return r.string();
  if (tag === 0x02) {
    const name = r.string();
    r.string();
    return name;
  }
  throw new MalformedComponent(`unknown name encoding 0x${tag.toString(16)}`, r.offset - 1);
}

/** Reads an `externdesc`, returning its kind. */
function readExternDesc(r: Reader): ItemKind {
  const tag = r.byte();
  switch (tag) {
    case 0x00:
      if (r.byte() !== 0x11) throw new MalformedComponent("bad core module type", r.offset - 1);
      r.u32();
      return "core-module";
    case 0x01:
    case 0x04:
    case 0x05:
      r.u32();
      return SORTS[tag];
    case 0x02: {
      const bound = r.byte();
      if (bound === 0x00) r.u32();
      else r.s33();
      return "value";
    }
    case 0x03: {
      const bound = r.byte();
      if (bound === 0x00) r.u32();
      return "type";
    }
    default:
      throw new MalformedComponent(`unknown externdesc 0x${tag.toString(16)}`, r.offset - 1);
  }
}

/** Reads a `sortidx`, returning its kind. */
function readSortIdx(r: Reader): ItemKind {
  const sort = r.byte();
  let kind: ItemKind;
  if (sort === 0x00) {
    kind = r.byte() === 0x00 ? "core-func" : "core-other";
  } else if (sort in SORTS) {
    kind = SORTS[sort];
  } else {
    throw new MalformedComponent(`unknown sort 0x${sort.toString(16)}`, r.offset - 1);
  }
  r.u32();
  return kind;
}

/**
 * Lists the top-level imports and exports of a component binary.
 *
 * @throws {MalformedComponent} if the binary is not a component this parser can read
 */
export function inspectComponent(bytes: Uint8Array): ComponentShape {
  const shape: ComponentShape = { imports: [], exports: [] };
  const r = reader(bytes, PREAMBLE_LENGTH, bytes.length);
  if (bytes.length < PREAMBLE_LENGTH) throw new MalformedComponent("too short", 0);
  while (!r.done) {
    const id = r.byte();
    const size = r.u32();
    const end = r.offset + size;
    if (end > bytes.length) throw new MalformedComponent(`section ${id} overruns`, r.offset);
    if (id === IMPORT_SECTION || id === EXPORT_SECTION) {
      const s = reader(bytes, r.offset, end);
      const count = s.u32();
      for (let i = 0; i < count; i++) {
        const name = readName(s);
        if (id === IMPORT_SECTION) {
          shape.imports.push({ name, kind: readExternDesc(s) });
        } else {
          const kind = readSortIdx(s);
          if (s.byte() === 0x01) readExternDesc(s);
          shape.exports.push({ name, kind });
        }
      }
    }
    r.offset = end;
  }
  return shape;
}

/** An interface name split into its parts. */
export interface InterfaceName {
  /** `wasi:cli/run` */
  base: string;
  /** `0.2.0`, or "" when unversioned. */
  version: string;
}

/** Splits `ns:pkg/iface@version`. */
export function parseInterfaceName(name: string): InterfaceName {
  const at = name.indexOf("@");
  return at < 0
    ? { base: name, version: "" }
    : { base: name.slice(0, at), version: name.slice(at + 1) };
}

/** WASI 0.2.x: 0.2.0, 0.2.1, … (pre-release suffixes included). */
const WASI_02 = /^0\.2\.\d+(?:-[0-9A-Za-z.-]+)?$/;

/** True if `name` is a WASI 0.2.x `interface` at any patch version. */
export function isWasi02(name: string, base: string): boolean {
  const parsed = parseInterfaceName(name);
  return parsed.base === base && WASI_02.test(parsed.version);
}

/** How a component runs. */
export type ComponentKind =
  | { kind: "http"; export: string }
  | { kind: "command"; export: string }
  | { kind: "func"; func: string };

/** The interface an HTTP proxy exports. */
export const HTTP_HANDLER = "wasi:http/incoming-handler";
/** The interface a command exports. */
export const CLI_RUN = "wasi:cli/run";

/**
 * Decides how a component runs: an explicit function (`path#func`, anything but
 * `defaultFunc`), else a `wasi:http/incoming-handler@0.2.x` export (HTTP proxy), else a
 * `wasi:cli/run@0.2.x` export (command).
 *
 * @throws {ShimError} INVALID_ARGUMENT if there is nothing to run
 */
export function componentKind(
  shape: ComponentShape,
  func: string,
  defaultFunc: string,
  path: string,
): ComponentKind {
  if (func !== defaultFunc) return { kind: "func", func };
  const http = shape.exports.find((e) => isWasi02(e.name, HTTP_HANDLER));
  if (http) return { kind: "http", export: http.name };
  const run = shape.exports.find((e) => isWasi02(e.name, CLI_RUN));
  if (run) return { kind: "command", export: run.name };
  const names = shape.exports.map((e) => `${e.name} (${e.kind})`);
  const other = shape.exports.find((e) => {
    const base = parseInterfaceName(e.name).base;
    return base === HTTP_HANDLER || base === CLI_RUN;
  });
  const why = other
    ? `it exports ${other.name}, but only WASI 0.2.x versions of it are supported`
    : `it exports ${names.length > 0 ? names.join(", ") : "nothing"}`;
  throw invalidArgument(
    `component ${path} exports neither ${HTTP_HANDLER}@0.2.x nor ${CLI_RUN}@0.2.x, and no ` +
      `function was named (use ${path}#<function>); ${why}`,
  );
}

/**
 * Checks that the host provides every import of the component.
 *
 * @throws {ShimError} INVALID_ARGUMENT naming each unsupported import and why
 */
export function checkComponentImports(shape: ComponentShape, path: string): void {
  const supported = new Set(SUPPORTED_INTERFACES);
  const problems: string[] = [];
  for (const item of shape.imports) {
    if (item.kind === "type") continue;
    const { base, version } = parseInterfaceName(item.name);
    if (item.kind !== "instance") {
      problems.push(`${item.name} (a ${item.kind}; only WASI interfaces can be imported)`);
    } else if (!supported.has(base)) {
      problems.push(
        base.startsWith("wasi:")
          ? `${item.name} (this host does not implement ${base})`
          : `${item.name} (not a WASI interface; nothing here provides it)`,
      );
    } else if (!WASI_02.test(version)) {
      problems.push(
        `${item.name} (version ${version || "missing"}; WASI 0.2.x is supported` +
          `${version.startsWith("0.3") ? ", not WASI 0.3" : ""})`,
      );
    }
  }
  if (problems.length > 0) {
    throw invalidArgument(
      `component ${path} has imports this host cannot satisfy: ${problems.join("; ")}`,
    );
  }
}
