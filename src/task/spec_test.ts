import assert from "node:assert/strict";
import { parseSpec, readSpec } from "./spec.ts";

Deno.test("parseSpec reads process, root, annotations and the network namespace", () => {
  const spec = parseSpec({
    process: { args: ["/app.wasm", "x"], env: ["A=1"], cwd: "/work" },
    root: { path: "rootfs" },
    annotations: { "io.kubernetes.cri.sandbox-id": "pod" },
    linux: { namespaces: [{ type: "pid" }, { type: "network", path: "/var/run/netns/n1" }] },
  }, "t");
  assert.deepEqual(spec.process, {
    args: ["/app.wasm", "x"],
    env: ["A=1"],
    cwd: "/work",
    terminal: false,
  });
  assert.equal(spec.netns, "/var/run/netns/n1");
  assert.equal(spec.annotations["io.kubernetes.cri.sandbox-id"], "pod");
});

Deno.test("parseSpec: a network namespace without a path means the host's", () => {
  const spec = parseSpec(
    { process: { args: ["a"] }, linux: { namespaces: [{ type: "network" }] } },
    "t",
  );
  assert.equal(spec.netns, undefined);
  assert.equal(spec.process.cwd, "/");
});

Deno.test("parseSpec rejects bad specs precisely", () => {
  assert.throws(() => parseSpec(null, "c.json"), /c.json is not a JSON object/);
  assert.throws(() => parseSpec({}, "c.json"), /no "process" object/);
  assert.throws(() => parseSpec({ process: { args: [] } }, "c.json"), /process.args is empty/);
  assert.throws(() => parseSpec({ process: { args: [1] } }, "c.json"), /must be strings/);
  assert.throws(() => parseSpec({ process: { args: ["a"], cwd: "rel" } }, "c.json"), /absolute/);
});

Deno.test("readSpec reports missing and invalid files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => readSpec(dir), /cannot read OCI spec .*config.json/);
    await Deno.writeTextFile(`${dir}/config.json`, "{nope");
    await assert.rejects(() => readSpec(dir), /is not valid JSON/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
