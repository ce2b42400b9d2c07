import assert from "node:assert/strict";
import {
  committedModules,
  generate,
  OUTPUT_FILE,
  parseProto,
  ProtoSyntaxError,
  readProtoFiles,
  resolveFiles,
} from "./gen_proto.ts";

Deno.test("src/proto/gen/ and proto_sources.ts are exactly what gen_proto.ts generates", async () => {
  const expected = await generate(await readProtoFiles());
  const actual = await committedModules();
  actual.set("proto_sources.ts", await Deno.readTextFile(OUTPUT_FILE));
  const stale = "run `deno run -A scripts/gen_proto.ts`";
  assert.deepEqual(
    [...actual.keys()].sort(),
    [...expected.keys()].sort(),
    `files differ: ${stale}`,
  );
  for (const [path, text] of expected) {
    assert.ok(actual.get(path) === text, `src/proto/${path} is stale: ${stale}`);
  }
});

/** Parses and resolves `body` as `bad.proto` (with well_known.proto beside it). */
async function resolveBad(body: string): Promise<void> {
  const files = await readProtoFiles();
  const texts = new Map([["well_known.proto", files.get("well_known.proto")!]]);
  texts.set("bad.proto", body);
  resolveFiles(texts);
}

Deno.test("gen_proto refuses what it cannot generate, naming file and line", async () => {
  const head = 'syntax = "proto3";\npackage x;\n';
  const cases: [string, RegExp][] = [
    ['syntax = "proto2";\n', /^proto\/bad\.proto:1: only syntax = "proto3" is supported/],
    ["package x;\nmessage A {}\n", /^proto\/bad\.proto:1: no syntax = "proto3" statement/],
    [
      `${head}message A {\n  oneof k { string a = 1; }\n}\n`,
      /bad\.proto:4: "oneof" is not supported/,
    ],
    [
      `${head}message A {\n  optional string a = 1;\n}\n`,
      /bad\.proto:4: "optional" is not supported/,
    ],
    [`${head}message A {\n  reserved 2;\n}\n`, /bad\.proto:4: "reserved" is not supported/],
    [`${head}option go_package = "x";\n`, /bad\.proto:3: options are not supported/],
    [
      `${head}message A {\n  double d = 1;\n}\n`,
      /bad\.proto:4: field d: type double is not supported/,
    ],
    [`${head}message A {\n  sint64 d = 1;\n}\n`, /bad\.proto:4: .*type sint64 is not supported/],
    [`${head}message A {\n  string a = 1 [deprecated = true];\n}\n`, /bad\.proto:4: field options/],
    [`${head}message A {\n  map<int32, string> m = 1;\n}\n`, /bad\.proto:4: .*only string keys/],
    [
      `${head}message A {\n  map<string, bool> m = 1;\n}\n`,
      /bad\.proto:4: .*only string, bytes or message values/,
    ],
    [`${head}message A {\n  B b = 1;\n}\n`, /bad\.proto:4: unknown type "B"/],
    [
      `${head}message A {\n  google.protobuf.Any a = 1;\n}\n`,
      /bad\.proto:4: google\.protobuf\.Any is defined in well_known\.proto, which bad\.proto does not import/,
    ],
    [`${head}import "nope.proto";\n`, /bad\.proto:3: import "nope\.proto": no such file/],
    [
      `${head}message A {\n  string a = 1;\n  string b = 1;\n}\n`,
      /bad\.proto:5: field b = 1 clashes with a = 1/,
    ],
    [`${head}message A {\n  string a = 0;\n}\n`, /bad\.proto:4: field a has an invalid number 0/],
    [`${head}enum E {\n  A = 1;\n}\n`, /bad\.proto:4: the first value of enum E must be 0/],
    [
      `${head}service S {\n  rpc M(stream A) returns (A);\n}\nmessage A {}\n`,
      /bad\.proto:4: streaming/,
    ],
    [`${head}message A {\n  string a = 1\n}\n`, /bad\.proto:5: expected ";", found "}"/],
    [`${head}message A {\n  string a = 1;\n`, /bad\.proto:5: unexpected end of file/],
    [`${head}message A { string a = 1; } @`, /bad\.proto:3: unexpected character "@"/],
  ];
  for (const [text, pattern] of cases) {
    await assert.rejects(() => resolveBad(text), (err: Error) => {
      assert.ok(err instanceof ProtoSyntaxError, `${err}`);
      assert.match(err.message, pattern);
      return true;
    }, text);
  }
});

Deno.test("gen_proto keeps nested messages, enums, comments and imports", () => {
  const file = parseProto(
    "n.proto",
    [
      "// The file.",
      'syntax = "proto3";',
      "package a.b;",
      "// Outer.",
      "message Outer {",
      "  // A field.",
      "  Inner inner = 1;",
      "  message Inner { Kind kind = 1; repeated uint64 n = 2; }",
      "  enum Kind { ZERO = 0; ONE = 1; }",
      "}",
    ].join("\n"),
  );
  assert.deepEqual(file.doc, ["The file."]);
  assert.equal(file.messages[0].fullName, "a.b.Outer");
  assert.deepEqual(file.messages[0].doc, ["Outer."]);
  assert.deepEqual(file.messages[0].fields[0].doc, ["A field."]);
  assert.equal(file.messages[0].messages[0].tsName, "Outer_Inner");
  assert.equal(file.messages[0].enums[0].fullName, "a.b.Outer.Kind");
  const [resolved] = resolveFiles(
    new Map([[
      "n.proto",
      'syntax = "proto3";\npackage a.b;\nmessage O { message I { E e = 1; }\n' +
      "  enum E { Z = 0; }\n  I i = 1; }\n",
    ]]),
  );
  const inner = resolved.messages[0].messages[0];
  assert.equal(inner.fields[0].type?.kind, "enum");
  assert.equal(resolved.messages[0].fields[0].type?.kind, "message");
});
