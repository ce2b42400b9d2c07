/**
 * End to end: the spec's own `linux.seccomp` on a wasm guest's runner (see
 * src/sys/seccomp_profile.ts), with one CRI-enabled containerd:
 *
 * - a pod whose container asks for `seccompProfile: RuntimeDefault` (CRI's
 *   `linux.security_context.seccomp`): containerd's CRI puts its default profile in the
 *   spec, and the wasm runner runs under it (one filter more in its
 *   `/proc/<pid>/status`);
 * - `ctr run --seccomp --seccomp-profile` with that same profile (read from the CRI
 *   container's spec) made to refuse `openat` with `O_CREAT` (EACCES): the guest can read
 *   a file but creating one gets the denial;
 * - a profile the runner cannot apply (`SCMP_ACT_NOTIFY`) and one that refuses the runner
 *   a call it needs (`mmap`) fail at Create, saying so;
 * - `ctr run` without a profile: the runner's own filter only, as before.
 */

import assert from "node:assert/strict";
import { parseSeccomp } from "../../src/oci/spec.ts";
import { filterArch } from "../../src/sys/seccomp.ts";
import { compileSeccompProfile } from "../../src/sys/seccomp_profile.ts";
import { fixture } from "./shim_install.ts";
import { poll } from "./ctr_util.ts";
import type { ContainerConfig } from "./cri_client.ts";
import {
  answerOf,
  assertNothingLeft,
  containerConfig,
  deletePod,
  endSuite,
  type Env,
  podConfig,
  podNetwork,
  setup,
  startContainer,
  step,
  WASM_IMAGE,
} from "./cri_env.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const TESTDATA = new URL("../../src/wasm/component/testdata/", import.meta.url).pathname;

/** `Seccomp_filters:` of a process: how many filters it has. */
async function filtersOf(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const m = status.match(/^Seccomp_filters:\s+(\d+)$/m);
  assert.ok(m, `no Seccomp_filters in /proc/${pid}/status`);
  return Number(m[1]);
}

/** A pod running probe.wasm under RuntimeDefault; the profile containerd gave it. */
async function runtimeDefaultPod(env: Env): Promise<Record<string, unknown>> {
  const pod = podConfig(env, "seccomp");
  const podId = await step("RunPodSandbox", () => env.cri.runPodSandbox(pod, "wasmtime", 60_000));
  const net = await step("PodSandboxStatus", () => podNetwork(env, podId));
  const runtimeDefault = (config: ContainerConfig) => {
    config.linux!.security_context!.seccomp = { profile_type: "RuntimeDefault" };
    return config;
  };
  const id = await startContainer(
    env,
    podId,
    pod,
    runtimeDefault(containerConfig("guest", WASM_IMAGE, ["/probe.wasm", "sleep", "30"])),
  );
  // A wasi:http proxy (serving threads, sockets) works under it too.
  const http = await startContainer(
    env,
    podId,
    pod,
    runtimeDefault(containerConfig("http", WASM_IMAGE, ["/http_hello.wasm"])),
  );
  const url = `http://${net.ip}:8080/`;
  const body = await answerOf(url);
  assert.equal(body, "Hello, this is your first wasi:http/proxy world!\n");
  const profile = await step("the runner under RuntimeDefault", async () => {
    const info = JSON.parse((await env.cri.containerStatus(id, true)).info.info ?? "{}");
    const pid = Number(info.pid);
    assert.ok(pid > 0, `the container's pid (${info.pid})`);
    const seccomp = info.runtimeSpec?.linux?.seccomp;
    assert.equal(seccomp?.defaultAction, "SCMP_ACT_ERRNO", "containerd's default profile");
    assert.ok(seccomp.syscalls.length > 0);
    // The runner's own filter, then the profile.
    assert.equal(await filtersOf(pid), 2, "Seccomp_filters of the runner");
    // All of containerd's profile compiles, well within BPF's limit (its names of
    // calls newer than the kernel headers, or of other architectures, are skipped).
    const compiled = compileSeccompProfile(parseSeccomp(seccomp, id)!, filterArch());
    assert.ok(compiled.instructions < 4096, `${compiled.instructions} instructions`);
    return seccomp as Record<string, unknown>;
  });
  const httpInfo = JSON.parse((await env.cri.containerStatus(http, true)).info.info ?? "{}");
  assert.equal(await filtersOf(Number(httpInfo.pid)), 2, "Seccomp_filters of the proxy's runner");
  await deletePod(env, podId, pod, [id, http]);
  await assertNothingLeft(env, pod, [net.netns]);
  return profile;
}

/** `ctr run --rm` of probe.wasm with `ctrArgs` before the image. */
function ctrRun(env: Env, id: string, ctrArgs: string[], args: string[]) {
  return env.cd.ctr(["run", "--rm", "--runtime", RUNTIME, ...ctrArgs, WASM_IMAGE, id, ...args], {
    timeoutMs: 30_000,
  });
}

/** RuntimeDefault, but `openat` with `O_CREAT` refused with EACCES, and the runner's check. */
async function deniedCall(env: Env, runtimeDefault: Record<string, unknown>): Promise<void> {
  const O_CREAT = 0o100;
  const rules = runtimeDefault.syscalls as { names: string[]; args?: unknown[] }[];
  const profile = {
    ...runtimeDefault,
    syscalls: [
      {
        names: ["openat"],
        action: "SCMP_ACT_ERRNO",
        errnoRet: 13,
        args: [{ index: 2, value: O_CREAT, valueTwo: O_CREAT, op: "SCMP_CMP_MASKED_EQ" }],
      },
      ...rules,
    ],
  };
  const path = `${env.tmp}/profile.json`;
  await Deno.writeTextFile(path, JSON.stringify(profile));
  const opts = ["--seccomp", "--seccomp-profile", path];
  const read = await ctrRun(env, "sc-read", opts, ["/probe.wasm", "ls", "/"]);
  assert.equal(read.code, 0, read.stderr);
  assert.match(read.stdout, /^probe\.wasm$/m, "reads work under the profile");
  const write = await ctrRun(env, "sc-write", opts, ["/probe.wasm", "write", "/new", "x"]);
  assert.equal(write.code, 1, write.stdout + write.stderr);
  assert.match(
    write.stderr,
    /error: Permission denied/,
    "creating a file gets the profile's errno",
  );

  // A profile the runner cannot apply fails Create, saying what and why.
  const notify = {
    defaultAction: "SCMP_ACT_ALLOW",
    syscalls: [{ names: ["mkdir"], action: "SCMP_ACT_NOTIFY" }],
  };
  await Deno.writeTextFile(path, JSON.stringify(notify));
  const refused = await ctrRun(env, "sc-notify", opts, ["/probe.wasm", "hello"]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /syscalls\[0\]\.action: SCMP_ACT_NOTIFY needs a seccomp agent/);

  // A profile that takes from the runner what it needs (mmap) fails Create, saying so.
  const noMmap = {
    defaultAction: "SCMP_ACT_ALLOW",
    syscalls: [{ names: ["mmap"], action: "SCMP_ACT_ERRNO" }],
  };
  await Deno.writeTextFile(path, JSON.stringify(noMmap));
  const broken = await ctrRun(env, "sc-broken", opts, ["/probe.wasm", "hello"]);
  assert.notEqual(broken.code, 0);
  assert.match(broken.stderr, /seccomp profile, linux\.seccomp/, broken.stderr);
  assert.doesNotMatch(broken.stdout, /hello from wasm/);
}

/** No profile: the spec has none, and the runner has its own filter only. */
async function noProfile(env: Env): Promise<void> {
  const run = ctrRun(env, "sc-none", [], ["/probe.wasm", "sleep", "5"]);
  const pid = await poll("the task sc-none to run", 10_000, async () => {
    const r = await env.cd.ctr(["task", "ls"]);
    const row = r.stdout.split("\n").find((l) => l.startsWith("sc-none "));
    return row?.includes("RUNNING") ? Number(row.trim().split(/\s+/)[1]) : undefined;
  });
  const spec = JSON.parse((await env.cd.ctr(["container", "info", "sc-none"])).stdout).Spec;
  assert.equal(spec.linux.seccomp, undefined, "ctr run puts no profile in the spec");
  assert.equal(await filtersOf(pid), 1, "Seccomp_filters of the runner");
  await env.cd.ctr(["task", "kill", "-s", "SIGKILL", "sc-none"]);
  assert.equal((await run).code, 137);
}

Deno.test({
  name:
    "seccomp: RuntimeDefault through CRI, a denied call, a profile the runner cannot run under, none",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const env = await setup([
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
      { path: "/http_hello.wasm", hostPath: `${TESTDATA}http_hello.wasm` },
    ], "/probe.wasm");
    const passed: boolean[] = [];
    try {
      // ctr run uses the test namespace: the image there too.
      await env.cd.importImage(`${env.tmp}/wasm.tar`);
      let profile: Record<string, unknown> | undefined;
      passed.push(
        await t.step("a pod's container under RuntimeDefault", async () => {
          profile = await runtimeDefaultPod(env);
        }),
      );
      passed.push(
        await t.step(
          "ctr run --seccomp-profile: a denied call; a profile the runner cannot take",
          () => deniedCall(env, profile ?? {}),
        ),
      );
      passed.push(await t.step("ctr run without a profile: as before", () => noProfile(env)));
    } finally {
      await endSuite(env, passed.length === 3 && passed.every(Boolean));
    }
  },
});
