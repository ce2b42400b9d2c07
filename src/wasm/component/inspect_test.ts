import assert from "node:assert/strict";
import { Kind, ShimError } from "../../errdefs/errors.ts";
import {
  checkComponentImports,
  componentKind,
  type ComponentShape,
  inspectComponent,
  isWasi02,
  MalformedComponent,
  parseInterfaceName,
} from "./inspect.ts";
import { fixture, FIXTURES } from "./test_util.ts";
import { encodeU32 } from "./leb128.ts";

const PREAMBLE = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const encoder = new TextEncoder();

function name(text: string): number[] {
  const bytes = [...encoder.encode(text)];
  return [0x00, ...encodeU32(bytes.length), ...bytes];
}

/** A component binary with just an import section of instance imports (type index 0). */
function importing(...names: string[]): Uint8Array {
  const body = [...encodeU32(names.length), ...names.flatMap((n) => [...name(n), 0x05, 0x00])];
  return new Uint8Array([...PREAMBLE, 10, ...encodeU32(body.length), ...body]);
}

function rejects(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ShimError, `expected ShimError, got ${err}`);
    assert.equal(err.kind, Kind.INVALID_ARGUMENT);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("inspectComponent lists the command fixture's imports and exports", () => {
  const shape = inspectComponent(fixture(FIXTURES.command));
  const imports = shape.imports.map((i) => i.name);
  assert.ok(imports.includes("wasi:cli/environment@0.2.12"), imports.join());
  assert.ok(imports.includes("wasi:io/streams@0.2.12"), imports.join());
  assert.deepEqual(shape.exports, [
    { name: "greet", kind: "func" },
    { name: "wasi:cli/run@0.2.12", kind: "instance" },
  ]);
});

Deno.test("inspectComponent finds a proxy's incoming-handler export", () => {
  const shape = inspectComponent(fixture(FIXTURES.httpHello));
  assert.deepEqual(shape.exports, [{
    name: "wasi:http/incoming-handler@0.2.12",
    kind: "instance",
  }]);
});

Deno.test("inspectComponent refuses a truncated binary", () => {
  const bytes = fixture(FIXTURES.command).subarray(0, 40);
  assert.throws(() => inspectComponent(bytes), MalformedComponent);
});

Deno.test("parseInterfaceName and isWasi02 split and match versions", () => {
  assert.deepEqual(parseInterfaceName("wasi:cli/run@0.2.3"), {
    base: "wasi:cli/run",
    version: "0.2.3",
  });
  assert.deepEqual(parseInterfaceName("greet"), { base: "greet", version: "" });
  assert.ok(isWasi02("wasi:cli/run@0.2.0", "wasi:cli/run"));
  assert.ok(isWasi02("wasi:cli/run@0.2.12", "wasi:cli/run"));
  assert.ok(isWasi02("wasi:cli/run@0.2.0-rc-2023-12-05", "wasi:cli/run"));
  assert.ok(!isWasi02("wasi:cli/run@0.3.0", "wasi:cli/run"));
  assert.ok(!isWasi02("wasi:cli/run", "wasi:cli/run"));
});

const shape = (...exports: string[]): ComponentShape => ({
  imports: [],
  exports: exports.map((n) => ({ name: n, kind: n.includes(":") ? "instance" : "func" })),
});

Deno.test("componentKind: an incoming-handler export is a proxy, even beside run", () => {
  assert.deepEqual(
    componentKind(
      shape("wasi:cli/run@0.2.0", "wasi:http/incoming-handler@0.2.3"),
      "_start",
      "_start",
      "/a.wasm",
    ),
    { kind: "http", export: "wasi:http/incoming-handler@0.2.3" },
  );
});

Deno.test("componentKind: a run export is a command", () => {
  assert.deepEqual(componentKind(shape("wasi:cli/run@0.2.12"), "_start", "_start", "/a.wasm"), {
    kind: "command",
    export: "wasi:cli/run@0.2.12",
  });
});

Deno.test("componentKind: an explicit function wins", () => {
  assert.deepEqual(
    componentKind(shape("wasi:cli/run@0.2.0", "greet"), "greet", "_start", "/a.wasm"),
    {
      kind: "func",
      func: "greet",
    },
  );
});

Deno.test("componentKind: nothing to run names what the component exports", () => {
  rejects(
    () => componentKind(shape("greet"), "_start", "_start", "/a.wasm"),
    /component \/a\.wasm exports neither wasi:http\/incoming-handler@0\.2\.x nor wasi:cli\/run@0\.2\.x.*use \/a\.wasm#<function>.*it exports greet \(func\)/,
  );
  rejects(
    () => componentKind(shape("wasi:cli/run@0.3.0"), "_start", "_start", "/a.wasm"),
    /it exports wasi:cli\/run@0\.3\.0, but only WASI 0\.2\.x versions of it are supported/,
  );
});

Deno.test("checkComponentImports accepts every WASI 0.2 interface this host implements", () => {
  checkComponentImports(
    inspectComponent(importing(
      "wasi:cli/environment@0.2.0",
      "wasi:filesystem/types@0.2.12",
      "wasi:http/outgoing-handler@0.2.3",
      "wasi:sockets/tcp@0.2.1",
    )),
    "/a.wasm",
  );
});

Deno.test("checkComponentImports names each unsupported import and why", () => {
  rejects(
    () =>
      checkComponentImports(
        inspectComponent(importing(
          "wasi:cli/environment@0.3.0",
          "acme:db/query@1.0.0",
          "wasi:keyvalue/store@0.2.0-draft",
        )),
        "/a.wasm",
      ),
    new RegExp(
      "component /a\\.wasm has imports this host cannot satisfy: " +
        "wasi:cli/environment@0\\.3\\.0 \\(version 0\\.3\\.0; WASI 0\\.2\\.x is supported, not WASI 0\\.3\\); " +
        "acme:db/query@1\\.0\\.0 \\(not a WASI interface; nothing here provides it\\); " +
        "wasi:keyvalue/store@0\\.2\\.0-draft \\(this host does not implement wasi:keyvalue/store\\)",
    ),
  );
});

Deno.test("checkComponentImports refuses a function import", () => {
  const body = [1, ...name("log"), 0x01, 0x00];
  const bytes = new Uint8Array([...PREAMBLE, 10, ...encodeU32(body.length), ...body]);
  rejects(
    () => checkComponentImports(inspectComponent(bytes), "/a.wasm"),
    /log \(a func; only WASI interfaces/,
  );
});
