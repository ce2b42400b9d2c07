import assert from "node:assert/strict";
import { importMemory, MEMORY_IMPORT } from "./memory.ts";
import { virtualizeMemory, VSIZE_EXPORT } from "./vsize.ts";

const PAGE = 65536;
const original = Deno.readFileSync(new URL("../testdata/image/vsize.wasm", import.meta.url));

/** `vsize.wat` with its memory imported from the pool (as `plan.ts` does), and rewritten. */
function modules() {
  const imported = importMemory(original)!;
  const rewritten = virtualizeMemory(imported.bytes, imported.memory);
  assert.equal(rewritten.kind, "rewritten");
  return {
    plain: new WebAssembly.Module(imported.bytes as BufferSource),
    virtual: new WebAssembly.Module((rewritten as { bytes: BufferSource }).bytes),
  };
}

type Exports = Record<string, (...a: number[]) => number>;

/** An instance of `module` over `memory`, with its exports and the memory. */
function instance(module: WebAssembly.Module, memory: WebAssembly.Memory) {
  const i = new WebAssembly.Instance(module, {
    [MEMORY_IMPORT.module]: { [MEMORY_IMPORT.name]: memory },
  });
  return { exports: i.exports as unknown as Exports, raw: i.exports };
}

/** The value of `fn(...args)`, or the trap's message. */
function outcome(e: Exports, fn: string, ...args: number[]): number | string {
  try {
    return e[fn](...args);
  } catch (err) {
    assert.ok(err instanceof WebAssembly.RuntimeError, String(err));
    return `trap: ${err.message}`;
  }
}

/** Calls every case and answers what each gave. */
const CASES: [string, ...number[]][] = [
  ["size"],
  ["load", 16],
  ["fill", 2 * PAGE - 1, 0, 2],
  ["fill", 2 * PAGE, 0, 0],
  ["fill", 2 * PAGE + 1, 0, 0],
  ["fill", 0xffff_ffff, 0, 2],
  ["copy", 2 * PAGE - 1, 0, 2],
  ["copy", 0, 2 * PAGE - 1, 2],
  ["copy", 0, 0, 0xffff_ffff],
  ["init", 2 * PAGE - 1, 0, 2],
  ["init", 0, 5, 3],
  ["init", 0, 0, 7],
  ["grow", 5],
  ["grow", 0xffff_ffff],
  ["grow", 1],
  ["size"],
  ["fill", 3 * PAGE - 1, 7, 1],
  ["load", 3 * PAGE - 1],
  ["fill", 3 * PAGE - 1, 7, 2],
  ["copy", 3 * PAGE - 2, 0, 2],
  ["grow", 0],
  ["grow", 3],
  ["size"],
  ["grow", 1],
  ["fill", 6 * PAGE - 4, 1, 4],
  ["fill", 6 * PAGE - 4, 1, 5],
];

function run(e: Exports) {
  return CASES.map(([fn, ...args]) => `${fn}(${args.join(", ")}) = ${outcome(e, fn, ...args)}`);
}

Deno.test("a fresh instance with a virtual size behaves as without (size, grow, bulk traps)", () => {
  const { plain, virtual } = modules();
  const a = instance(plain, new WebAssembly.Memory({ initial: 2, maximum: 6 }));
  const b = instance(virtual, new WebAssembly.Memory({ initial: 2, maximum: 6 }));
  const expected = run(a.exports);
  assert.ok(expected.some((line) => line.includes("trap: memory access out of bounds")));
  assert.ok(expected.includes("grow(5) = -1"), expected.join("\n"));
  assert.deepEqual(run(b.exports), expected);
  assert.equal((b.raw[VSIZE_EXPORT] as WebAssembly.Global).value, 6);
});

Deno.test("over a memory that grew before, the virtual size is what the code sees", () => {
  const { plain, virtual } = modules();
  const expected = run(instance(plain, new WebAssembly.Memory({ initial: 2, maximum: 6 })).exports);
  // A memory an earlier instance grew to its maximum (and the reset zeroed).
  const grown = new WebAssembly.Memory({ initial: 2, maximum: 6 });
  grown.grow(4);
  const b = instance(virtual, grown);
  assert.deepEqual(run(b.exports), expected);
  assert.equal(grown.buffer.byteLength, 6 * PAGE, "never grown past the high-water mark");
  // What differs: a plain store past the virtual size (below the real one) does not trap.
  const c = instance(virtual, grown);
  assert.equal(c.exports.size(), 2);
  assert.equal(outcome(c.exports, "store", 5 * PAGE, 1), undefined as unknown as number);
  assert.equal(c.exports.load(5 * PAGE), 1);
});

Deno.test("without a declared maximum, growing past 65536 pages fails as without", () => {
  const imported = importMemory(original.slice())!;
  const memory = { ...imported.memory, maximum: null };
  const rewritten = virtualizeMemory(imported.bytes, memory);
  assert.equal(rewritten.kind, "rewritten");
  const grown = new WebAssembly.Memory({ initial: 2, maximum: 6 });
  const e = instance(new WebAssembly.Module((rewritten as { bytes: BufferSource }).bytes), grown);
  assert.equal(e.exports.grow(65535), -1);
  assert.equal(e.exports.grow(0x8000_0000), -1);
  assert.equal(e.exports.size(), 2);
});

Deno.test("a module whose code never grows its memory is left as it is", () => {
  const wat = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0, 0x05, 0x03, 0x01, 0x00, 0x01]);
  const imported = importMemory(wat)!;
  const out = virtualizeMemory(imported.bytes, imported.memory);
  assert.deepEqual(out, { kind: "unchanged", reason: "its code never grows the memory" });
});
