import assert from "node:assert/strict";
import { OUTPUT_FILE, readProtoFiles, renderProtoSources } from "../../scripts/gen_proto.ts";
import { PROTO_SOURCES } from "./proto_sources.ts";

Deno.test("proto_sources.ts is up to date with proto/*.proto", async () => {
  const expected = renderProtoSources(await readProtoFiles());
  const actual = await Deno.readTextFile(OUTPUT_FILE);
  assert.ok(
    actual === expected,
    "src/proto/proto_sources.ts is stale: run `deno run -A scripts/gen_proto.ts`",
  );
});

Deno.test("proto_sources.ts embeds every .proto file verbatim", async () => {
  const files = await readProtoFiles();
  assert.deepEqual(Object.keys(PROTO_SOURCES), [...files.keys()]);
  for (const [name, text] of files) assert.equal(PROTO_SOURCES[name], text, name);
});
