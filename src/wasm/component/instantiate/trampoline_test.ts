import assert from "node:assert/strict";
import type { FuncSig } from "./abi.ts";
import {
  GLUE_MODULE_NAME,
  TRAMPOLINE_IMPORTS,
  trampolineModule,
  tryImportName,
} from "./trampoline.ts";

const SIGS: FuncSig[] = [
  { params: [], results: [] },
  { params: ["i32", "i64", "f32", "f64"], results: ["f64"] },
  { params: ["i32"], results: ["i32"] },
  { params: Array.from({ length: 200 }, () => "i32" as const), results: ["i64"] },
];

Deno.test("trampoline: a valid module whose exports forward arguments and results", () => {
  const bytes = trampolineModule(SIGS);
  assert.ok(WebAssembly.validate(bytes));
  const module = new WebAssembly.Module(bytes);
  assert.deepEqual(
    WebAssembly.Module.imports(module).map((i) => `${i.module}/${i.name}:${i.kind}`),
    SIGS.map((_, k) => `${TRAMPOLINE_IMPORTS}/${k}:function`),
  );
  const calls: unknown[][] = [];
  const host = {
    0: () => {
      calls.push([]);
    },
    1: (a: number, b: bigint, c: number, d: number) => {
      calls.push([a, b, c, d]);
      return a + Number(b) + c + d;
    },
    2: (a: number) => a * 2,
    3: (...args: number[]) => BigInt(args.reduce((s, x) => s + x, 0)),
  };
  const ex = new WebAssembly.Instance(module, { [TRAMPOLINE_IMPORTS]: host })
    .exports as Record<string, (...a: unknown[]) => unknown>;
  assert.equal(ex[0](), undefined);
  assert.equal(ex[1](1, 2n, 0.5, 0.25), 3.75);
  assert.deepEqual(calls, [[], [1, 2n, 0.5, 0.25]]);
  assert.equal(ex[2](-7), -14);
  assert.equal(ex[3](...Array.from({ length: 200 }, (_, i) => i)), 19900n);
});

Deno.test("trampoline: a host function's throw passes through", () => {
  const module = new WebAssembly.Module(trampolineModule([{ params: [], results: [] }]));
  const boom = new Error("boom");
  const ex = new WebAssembly.Instance(module, {
    [TRAMPOLINE_IMPORTS]: {
      0: () => {
        throw boom;
      },
    },
  }).exports as Record<string, () => void>;
  assert.throws(() => ex[0](), (err) => err === boom);
});

Deno.test("trampoline: a module importing its exports links them with their types", () => {
  // A guest importing (i32) -> i32 links to export "2"; a wrong type is a LinkError.
  const tramp = new WebAssembly.Instance(new WebAssembly.Module(trampolineModule(SIGS)), {
    [TRAMPOLINE_IMPORTS]: { 0: () => {}, 1: () => 0, 2: (a: number) => a + 1, 3: () => 0n },
  }).exports;
  // (module (import "m" "f" (func (param i32) (result i32)))
  //   (func (export "g") (param i32) (result i32) local.get 0 call 0))
  // deno-fmt-ignore
  const guest = new Uint8Array([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0x06, 0x01, 0x60, 0x01, 0x7f, 0x01,
    0x7f, 0x02, 0x07, 0x01, 0x01, 0x6d, 0x01, 0x66, 0x00, 0x00, 0x03, 0x02, 0x01, 0x00, 0x07,
    0x05, 0x01, 0x01, 0x67, 0x00, 0x01, 0x0a, 0x08, 0x01, 0x06, 0x00, 0x20, 0x00, 0x10, 0x00,
    0x0b,
  ]);
  const g = new WebAssembly.Instance(new WebAssembly.Module(guest), { m: { f: tramp[2] } })
    .exports.g as (a: number) => number;
  assert.equal(g(41), 42);
  assert.throws(
    () => new WebAssembly.Instance(new WebAssembly.Module(guest), { m: { f: tramp[1] } }),
    WebAssembly.LinkError,
  );
});

Deno.test("trampoline: named, so that trap backtraces can leave its frames out", () => {
  const module = new WebAssembly.Module(trampolineModule([{ params: [], results: [] }]));
  assert.equal(WebAssembly.Module.customSections(module, "name").length, 1);
  const ex = new WebAssembly.Instance(module, {
    [TRAMPOLINE_IMPORTS]: {
      0: () => {
        throw new WebAssembly.RuntimeError("a host trap");
      },
    },
  }).exports as Record<string, () => void>;
  try {
    ex[0]();
    assert.fail("the host function traps");
  } catch (err) {
    assert.match((err as Error).stack!, new RegExp(`wasm://wasm/${GLUE_MODULE_NAME}-`));
  }
});

Deno.test("trampoline: a function tried first calls its second import only if the first answered 0", async () => {
  const sigs: FuncSig[] = [
    { params: ["i32", "i64"], results: [] },
    { params: ["i32"], results: ["i32"] },
  ];
  const bytes = trampolineModule(sigs, [true, false]);
  assert.ok(WebAssembly.validate(bytes));
  const module = new WebAssembly.Module(bytes);
  assert.deepEqual(
    WebAssembly.Module.imports(module).map((i) => i.name),
    ["0", "1", tryImportName(0)],
  );
  const calls: string[] = [];
  const Suspending = (WebAssembly as unknown as {
    Suspending: new (f: unknown) => WebAssembly.ImportValue;
  }).Suspending;
  const promising = (WebAssembly as unknown as {
    promising(f: unknown): (...a: unknown[]) => Promise<unknown>;
  }).promising;
  const ex = new WebAssembly.Instance(module, {
    [TRAMPOLINE_IMPORTS]: {
      [tryImportName(0)]: (a: number, b: bigint) => {
        calls.push(`try ${a} ${b}`);
        return a > 0 ? 1 : 0;
      },
      0: new Suspending(async (a: number, b: bigint) => {
        await Promise.resolve();
        calls.push(`wait ${a} ${b}`);
      }),
      1: (a: number) => a + 1,
    },
  }).exports as Record<string, (...a: unknown[]) => unknown>;
  const run = promising(ex[0]);
  const done = run(1, 2n);
  assert.deepEqual(calls, ["try 1 2"], "completed: nothing to wait for");
  await done;
  await run(0, 3n);
  assert.deepEqual(calls, ["try 1 2", "try 0 3", "wait 0 3"]);
  assert.equal(ex[1](1), 2);
  assert.throws(
    () => trampolineModule([{ params: [], results: ["i32"] }], [true]),
    /only a function without results/,
  );
});
