import assert from "node:assert/strict";
import { Kind, ShimError } from "../errdefs/errors.ts";
import {
  containerLimits,
  guestNetworkAllowed,
  parseGuestNetworkEnv,
  parseLinuxResources,
  parseSeccomp,
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

Deno.test("parseSeccomp: the spec's profile, kept raw by parseSpec (runc reads a native one)", () => {
  const raw = {
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: 38,
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    flags: ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
    syscalls: [
      { names: ["read", "write"], action: "SCMP_ACT_ALLOW" },
      {
        names: ["personality"],
        action: "SCMP_ACT_ALLOW",
        args: [{ index: 0, value: 8, op: "SCMP_CMP_EQ" }],
      },
      { names: ["mkdir"], action: "SCMP_ACT_ERRNO", errnoRet: 30, args: null },
    ],
  };
  const spec = parseSpec({ process: { args: ["a"] }, linux: { seccomp: raw } }, "c");
  assert.equal(spec.seccomp, raw);
  assert.deepEqual(parseSeccomp(raw, "c"), {
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: 38,
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
    flags: 2 | 4,
    syscalls: [
      { names: ["read", "write"], action: "SCMP_ACT_ALLOW", errnoRet: undefined, args: [] },
      {
        names: ["personality"],
        action: "SCMP_ACT_ALLOW",
        errnoRet: undefined,
        args: [{ index: 0, value: 8, valueTwo: 0, op: "SCMP_CMP_EQ" }],
      },
      { names: ["mkdir"], action: "SCMP_ACT_ERRNO", errnoRet: 30, args: [] },
    ],
  });
  assert.equal(parseSeccomp(undefined, "c"), undefined);
  // A profile the runner cannot apply: INVALID_ARGUMENT saying what and why.
  const bad = (patch: Record<string, unknown>, message: RegExp) =>
    assert.throws(
      () => parseSeccomp({ defaultAction: "SCMP_ACT_ALLOW", ...patch }, "c"),
      (err: unknown) =>
        err instanceof ShimError && err.kind === Kind.INVALID_ARGUMENT && message.test(err.message),
      message.source,
    );
  const rule = (r: Record<string, unknown>) => ({ syscalls: [{ names: ["read"], ...r }] });
  bad(
    { defaultAction: "SCMP_ACT_BLOCK" },
    /linux\.seccomp\.defaultAction: unknown action "SCMP_ACT_BLOCK"/,
  );
  bad(
    { defaultAction: "SCMP_ACT_NOTIFY" },
    /defaultAction: SCMP_ACT_NOTIFY needs a seccomp agent, which a wasm guest's runner cannot serve/,
  );
  bad(
    rule({ action: "SCMP_ACT_NOTIFY" }),
    /syscalls\[0\]\.action: SCMP_ACT_NOTIFY needs a seccomp agent/,
  );
  bad(
    { listenerPath: "/run/agent.sock" },
    /listenerPath "\/run\/agent\.sock": a wasm guest's runner cannot/,
  );
  bad(
    rule({ action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: 1, op: "SCMP_CMP_LIKE" }] }),
    /syscalls\[0\]\.args\[0\]\.op: unknown comparison "SCMP_CMP_LIKE"/,
  );
  bad(
    rule({ action: "SCMP_ACT_ALLOW", args: [{ index: 6, value: 1, op: "SCMP_CMP_EQ" }] }),
    /args\[0\]\.index \(seccomp sees six arguments\): 6 is not a whole number in 0\.\.5/,
  );
  bad(
    rule({ action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: -1, op: "SCMP_CMP_EQ" }] }),
    /args\[0\]\.value: -1 is not a whole number/,
  );
  bad(
    rule({ action: "SCMP_ACT_ERRNO", errnoRet: 70000 }),
    /errnoRet: 70000 is not a whole number in 0\.\.65535/,
  );
  bad(rule({ names: [], action: "SCMP_ACT_ALLOW" }), /syscalls\[0\]\.names is empty/);
  bad({ architectures: ["SCMP_ARCH_VAX"] }, /unknown architecture "SCMP_ARCH_VAX"/);
  bad(
    { flags: ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"] },
    /flags: "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" is not one a wasm guest's runner applies/,
  );
  bad({ syscalls: {} }, /linux\.seccomp\.syscalls is not an array/);
});
