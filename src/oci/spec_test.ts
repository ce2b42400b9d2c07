import assert from "node:assert/strict";
import {
  containerLimits,
  guestNetworkAllowed,
  parseGuestNetworkEnv,
  parseLinuxResources,
  parseSpec,
  readSpec,
} from "./spec.ts";

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
  assert.equal(spec.network, "join");
  assert.equal(spec.annotations["io.kubernetes.cri.sandbox-id"], "pod");
});

Deno.test("parseSpec: a network namespace without a path is a new one, none is the host's", () => {
  const spec = parseSpec(
    { process: { args: ["a"] }, linux: { namespaces: [{ type: "network" }] } },
    "t",
  );
  assert.equal(spec.netns, undefined);
  assert.equal(spec.network, "new");
  assert.equal(spec.process.cwd, "/");
  const host = parseSpec({ process: { args: ["a"] }, linux: { namespaces: [] } }, "t");
  assert.equal(host.network, "host");
});

Deno.test("guestNetworkAllowed: a pod's or the host's network, or the operator's opt-in", () => {
  assert.equal(guestNetworkAllowed({ network: "join" }, false), true);
  assert.equal(guestNetworkAllowed({ network: "host" }, false), true);
  assert.equal(guestNetworkAllowed({ network: "new" }, false), false);
  assert.equal(guestNetworkAllowed({ network: "new" }, true), true);
  assert.equal(parseGuestNetworkEnv(undefined), false);
  assert.equal(parseGuestNetworkEnv("0"), false);
  assert.equal(parseGuestNetworkEnv(" 1 "), true);
  assert.equal(parseGuestNetworkEnv("TRUE"), true);
  assert.throws(() => parseGuestNetworkEnv("yes"), /WASMTIME_SHIM_GUEST_NETWORK="yes" must be/);
});

Deno.test("parseSpec rejects bad specs precisely", () => {
  assert.throws(() => parseSpec(null, "c.json"), /c.json is not a JSON object/);
  assert.throws(() => parseSpec({}, "c.json"), /no "process" object/);
  assert.throws(() => parseSpec({ process: { args: [] } }, "c.json"), /process.args is empty/);
  assert.throws(() => parseSpec({ process: { args: [1] } }, "c.json"), /must be strings/);
  assert.throws(() => parseSpec({ process: { args: ["a"], cwd: "rel" } }, "c.json"), /absolute/);
});

Deno.test("parseSpec reads linux.maskedPaths and linux.readonlyPaths; relative ones are refused", () => {
  const spec = parseSpec({
    process: { args: ["a"] },
    linux: { maskedPaths: ["/proc/kcore", "/sys/firmware"], readonlyPaths: ["/proc/sys"] },
  }, "t");
  assert.deepEqual(spec.maskedPaths, ["/proc/kcore", "/sys/firmware"]);
  assert.deepEqual(spec.readonlyPaths, ["/proc/sys"]);
  assert.equal(parseSpec({ process: { args: ["a"] } }, "t").maskedPaths, undefined);
  assert.throws(
    () => parseSpec({ process: { args: ["a"] }, linux: { maskedPaths: ["proc/x"] } }, "c.json"),
    /c.json: linux.maskedPaths must be absolute paths/,
  );
  assert.throws(
    () => parseSpec({ process: { args: ["a"] }, linux: { readonlyPaths: [1] } }, "c.json"),
    /linux.readonlyPaths must be absolute paths/,
  );
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

Deno.test("containerLimits: memory and CPUs a container may use, where set and positive", () => {
  assert.deepEqual(containerLimits(undefined), {});
  assert.deepEqual(
    containerLimits({ memory: { limit: 268435456 }, cpu: { quota: 150000, period: 100000 } }),
    { memoryBytes: 268435456, cpus: 1.5 },
  );
  // -1 (unlimited), 0, or a quota without a period: no limit.
  assert.deepEqual(
    containerLimits({ memory: { limit: -1 }, cpu: { quota: -1, period: 100000 } }),
    {},
  );
  assert.deepEqual(containerLimits({ memory: { limit: 0 }, cpu: { quota: 50000 } }), {});
  assert.deepEqual(containerLimits({ cpu: { shares: 1024 } }), {});
});

Deno.test("parseSpec reads linux.resources; parseLinuxResources rejects bad values", () => {
  const spec = parseSpec({
    process: { args: ["a"] },
    linux: {
      cgroupsPath: "/shim-e2e/t1",
      resources: {
        devices: [{ allow: false, access: "rwm" }],
        memory: { limit: 67108864, swappiness: 0 },
        cpu: { shares: 1024, quota: -1 },
        pids: { limit: 5 },
      },
    },
  }, "t");
  assert.equal(spec.cgroupsPath, "/shim-e2e/t1");
  assert.deepEqual(spec.resources, {
    memory: { limit: 67108864 },
    cpu: { shares: 1024, quota: -1 },
    pids: { limit: 5 },
  });
  assert.equal(parseSpec({ process: { args: ["a"] } }, "t").resources, undefined);
  assert.deepEqual(parseLinuxResources(null, "r"), {});
  assert.deepEqual(parseLinuxResources({ unified: { "memory.high": "1G" } }, "r"), {
    unified: { "memory.high": "1G" },
  });
  assert.throws(() => parseLinuxResources([], "r"), /r is not a JSON object/);
  assert.throws(() => parseLinuxResources({ memory: 5 }, "r"), /r: memory must be an object/);
  assert.throws(
    () => parseLinuxResources({ memory: { limit: "64M" } }, "r"),
    /r: memory.limit must be an integer, not 64M/,
  );
  assert.throws(() => parseLinuxResources({ unified: { a: 1 } }, "r"), /unified must map/);
  assert.throws(
    () =>
      parseSpec({ process: { args: ["a"] }, linux: { resources: { pids: { limit: 1.5 } } } }, "c"),
    /OCI spec c: linux.resources: pids.limit must be an integer/,
  );
});
