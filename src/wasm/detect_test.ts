import assert from "node:assert/strict";
import { type ErrorKind, Kind, ShimError } from "../errdefs/errors.ts";
import { checkExport, checkImports, describeStart, detectKind } from "./detect.ts";

const MODULE_HEADER = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const COMPONENT_HEADER = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const TESTDATA = new URL("./testdata/", import.meta.url);

function rejects(fn: () => unknown, code: ErrorKind, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ShimError, `expected ShimError, got ${err}`);
    assert.equal(err.kind, code);
    assert.match(err.message, pattern);
    return true;
  });
}

/** Compiles one of the test guests in testdata/. */
function compileTestdata(name: string): WebAssembly.Module {
  return new WebAssembly.Module(Deno.readFileSync(new URL(name, TESTDATA)));
}

Deno.test("detectKind tells a core module by its version", () => {
  assert.equal(detectKind(new Uint8Array(MODULE_HEADER)), "module");
  assert.equal(detectKind(new Uint8Array([...MODULE_HEADER, 1, 2, 3])), "module");
});

Deno.test("detectKind tells a component by its version and layer", () => {
  assert.equal(detectKind(new Uint8Array(COMPONENT_HEADER)), "component");
});

Deno.test("detectKind refuses an ELF binary, naming the path and its first bytes", () => {
  const elf = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00]);
  rejects(
    () => detectKind(elf, "/bin/app.wasm"),
    Kind.INVALID_ARGUMENT,
    /^\/bin\/app\.wasm is not a WebAssembly module or component \(starts with 7f 45 4c 46 02 01 01 00 "\.ELF\.\.\.\."\)/,
  );
});

Deno.test("detectKind refuses a script and an empty file", () => {
  rejects(
    () => detectKind(new TextEncoder().encode("#!/bin/sh\necho hi\n"), "/app"),
    Kind.INVALID_ARGUMENT,
    /starts with 23 21 2f 62 69 6e 2f 73 "#!\/bin\/s"/,
  );
  rejects(() => detectKind(new Uint8Array(), "/empty.wasm"), Kind.INVALID_ARGUMENT, /empty/);
});

Deno.test("detectKind refuses a short or unknown-version wasm binary", () => {
  rejects(
    () => detectKind(new Uint8Array([0x00, 0x61, 0x73, 0x6d]), "/x.wasm"),
    Kind.INVALID_ARGUMENT,
    /WebAssembly magic but an unsupported version\/layer/,
  );
  rejects(
    () => detectKind(new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x02, 0x00, 0x00, 0x00]), "/x.wasm"),
    Kind.INVALID_ARGUMENT,
    /unsupported version/,
  );
});

Deno.test("describeStart shows at most 8 bytes, non-printables as dots", () => {
  assert.equal(describeStart(new TextEncoder().encode("abc")), '61 62 63 "abc"');
  assert.equal(
    describeStart(new Uint8Array([0, 1, 0x41, 3, 4, 5, 6, 7, 8, 9])),
    '00 01 41 03 04 05 06 07 "..A....."',
  );
});

Deno.test("checkExport accepts an exported function", () => {
  const module = compileTestdata("funcs.wasm");
  checkExport(module, "_start", "/funcs.wasm");
  checkExport(module, "hello", "/funcs.wasm");
});

Deno.test("checkExport names the missing function and lists the ones there are", () => {
  const module = compileTestdata("funcs.wasm");
  rejects(
    () => checkExport(module, "nope", "/funcs.wasm"),
    Kind.INVALID_ARGUMENT,
    /^module \/funcs\.wasm has no exported function "nope"; it exports "_start", "hello", "exit3", "trap", "add"/,
  );
});

Deno.test("checkExport says when the name is exported but is not a function", () => {
  const module = compileTestdata("funcs.wasm");
  rejects(
    () => checkExport(module, "memory", "/funcs.wasm"),
    Kind.INVALID_ARGUMENT,
    /has no exported function "memory" \("memory" is a memory, not a function\)/,
  );
});

Deno.test("checkExport on a reactor asked for _start", () => {
  const module = compileTestdata("reactor.wasm");
  rejects(
    () => checkExport(module, "_start", "/reactor.wasm"),
    Kind.INVALID_ARGUMENT,
    /no exported function "_start"; it exports "_initialize", "greet"/,
  );
});

Deno.test("checkImports accepts provided imports and names the missing ones", () => {
  const wasi = { wasi_snapshot_preview1: ["fd_write", "proc_exit"] };
  checkImports(compileTestdata("funcs.wasm"), "/funcs.wasm", wasi);
  rejects(
    () => checkImports(compileTestdata("foreign_import.wasm"), "/f.wasm", wasi),
    Kind.INVALID_ARGUMENT,
    /^module \/f\.wasm imports "env"\."host_log" \(function\), which this shim does not provide \(it provides wasi_snapshot_preview1\)/,
  );
  rejects(
    () =>
      checkImports(compileTestdata("funcs.wasm"), "/funcs.wasm", { wasi_snapshot_preview1: [] }),
    Kind.INVALID_ARGUMENT,
    /"wasi_snapshot_preview1"\."fd_write" \(function\), "wasi_snapshot_preview1"\."proc_exit"/,
  );
});
