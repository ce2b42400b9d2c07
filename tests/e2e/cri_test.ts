/**
 * End to end through Kubernetes' CRI: a private containerd with its CRI plugin, driven
 * the way kubelet drives it (`runtime.v1.RuntimeService` over containerd's socket), runs
 * a pod whose RuntimeClass handler is `wasmtime`:
 *
 * - the pod sandbox (pause container: `tests/fixtures/built/pause`, a native binary),
 *   on a CNI bridge network (Debian's plugins in /usr/lib/cni; bridge + host-local
 *   on a private /24, CRI adds loopback itself);
 * - a wasi:http component (`http_hello.wasm`) that answers on the pod's IP, port 8080,
 *   and whose stdout/stderr lines (written on `/log`) reach its CRI log file;
 * - a WASI preview1 container (`probe.wasm hello`) whose stdout and stderr must land
 *   in its CRI log file (`<log_directory>/<log_path>`, CRI format);
 * - a native sidecar (`native_sleep`) in the same pod;
 * - `ContainerStats` with CPU and memory for the wasm container;
 * - StopContainer / StopPodSandbox / RemovePodSandbox, then nothing may be left: no shim
 *   processes, sockets, mounts (netns, shm, rootfs), veths, CNI state, cgroups.
 *
 * A third pod then runs a Wasm OCI artifact and an OCI image whose only layer is Wasm
 * (non-tar layers: what containerd 1.6, 1.7 and 2.x each allow, see artifactPod).
 *
 * A `runc` pod runs first, as a baseline for the harness itself (its containers are all
 * native): when it passes and the `wasmtime` pod fails, the failure is the shim's.
 *
 * Every CRI call has a deadline, every wait is bounded, and everything this test makes
 * is removed in `finally` blocks, also after a failure.
 */

import assert from "node:assert/strict";
import { ANNOTATION_TITLE, buildImage, MediaType } from "../../src/oci/image.ts";
import { containerdVersion } from "./harness.ts";
import { exists, poll } from "./ctr_util.ts";
import { fixture } from "./shim_install.ts";
import type { ContainerStats } from "./cri_client.ts";
import {
  answerOf,
  assertNothingLeft,
  containerConfig,
  criLog,
  deletePod,
  endSuite,
  type Env,
  K8S_NAMESPACE,
  NATIVE_IMAGE,
  netnsOf,
  podConfig,
  podNetwork,
  removeAllPods,
  REPO,
  setup,
  sh,
  startContainer,
  step,
  waitExited,
  WASM_IMAGE,
} from "./cri_env.ts";

const TESTDATA = new URL("../../src/wasm/component/testdata/", import.meta.url).pathname;
const HELLO = "Hello, this is your first wasi:http/proxy world!\n";
const HTTP_PORT = 8080;
/** The runc pod: the harness, CRI, CNI and cleanup checks, with nothing of the shim. */
/** Waits until the CRI log at `logPath` has the preview1 hello's two lines. */
function helloInCriLog(logPath: string): Promise<string[]> {
  return poll("both lines in the CRI log", 10_000, async () => {
    const lines = await criLog(logPath);
    return lines.includes("stdout hello from wasm") && lines.includes("stderr hello on stderr")
      ? lines
      : undefined;
  }, 200);
}

async function runcPod(env: Env): Promise<void> {
  const pod = podConfig(env, "runc-pod");
  const netnsPaths: string[] = [];
  try {
    const podId = await step("RunPodSandbox (runc)", () => env.cri.runPodSandbox(pod, "runc"));
    const net = await step("PodSandboxStatus (runc)", () => podNetwork(env, podId));
    netnsPaths.push(net.netns);
    assert.equal(net.handler, "runc");
    const sidecar = await startContainer(
      env,
      podId,
      pod,
      containerConfig("sidecar", NATIVE_IMAGE, ["/native_sleep"]),
    );
    assert.equal((await env.cri.containerStatus(sidecar)).status?.state, "CONTAINER_RUNNING");
    assert.ok(await exists(`${pod.log_directory}/sidecar/0.log`), "the sidecar's log file");
    // The runc shim's metrics as the CRI reports them: the baseline for the shim's.
    const stats = await step("ContainerStats (runc)", () => env.cri.containerStats(sidecar));
    assert.equal(stats?.attributes?.id, sidecar);
    assert.ok((stats?.cpu?.usage_core_nano_seconds?.value ?? 0) > 0, JSON.stringify(stats));
    assert.ok((stats?.memory?.working_set_bytes?.value ?? -1) >= 0, JSON.stringify(stats));
    const [side] = await deletePod(env, podId, pod, [sidecar]);
    // native_sleep is PID 1 of its own pid namespace: SIGTERM does not end it.
    assert.equal(side.exit_code, 137, "the sidecar is SIGKILLed after the grace period");
  } finally {
    await removeAllPods(env.cri);
  }
  await assertNothingLeft(env, pod, netnsPaths);
}

/** The wasmtime pod: pause and sidecar through the shim's runc, two wasm containers. */
async function wasmtimePod(env: Env): Promise<void> {
  const pod = podConfig(env, "wasm-pod");
  const netnsPaths: string[] = [];
  try {
    const podId = await step(
      "RunPodSandbox (wasmtime)",
      () => env.cri.runPodSandbox(pod, "wasmtime"),
    );
    const net = await step("PodSandboxStatus (wasmtime)", () => podNetwork(env, podId));
    netnsPaths.push(net.netns);
    assert.equal(net.handler, "wasmtime");

    const http = await startContainer(
      env,
      podId,
      pod,
      containerConfig("http", WASM_IMAGE, ["/http_hello.wasm"]),
    );
    const hello = await startContainer(
      env,
      podId,
      pod,
      containerConfig("hello", WASM_IMAGE, ["/probe.wasm", "hello"]),
    );
    const sidecar = await startContainer(
      env,
      podId,
      pod,
      containerConfig("sidecar", NATIVE_IMAGE, ["/native_sleep"]),
    );

    // The component serves on the pod's network namespace: the host reaches it on the pod IP.
    const url = `http://${net.ip}:${HTTP_PORT}/`;
    const body = await answerOf(url);
    assert.equal(body, HELLO);
    // Some load, so that the stats have CPU time to show.
    const bodies = await Promise.all(
      Array.from(
        { length: 20 },
        () => fetch(url, { signal: AbortSignal.timeout(10_000) }).then((r) => r.text()),
      ),
    );
    assert.deepEqual(new Set(bodies), new Set([HELLO]));

    await step("ContainerStats (wasmtime pod)", async () => {
      let last: ContainerStats | undefined;
      try {
        await poll("CPU and memory in ContainerStats", 10_000, async () => {
          last = await env.cri.containerStats(http);
          const cpu = last?.cpu?.usage_core_nano_seconds?.value ?? 0;
          const mem = last?.memory?.working_set_bytes?.value ?? 0;
          return cpu > 0 && mem > 0 ? last : undefined;
        }, 500);
      } catch (err) {
        throw new Error(`${(err as Error).message}; last stats: ${JSON.stringify(last)}`);
      }
      assert.equal(last?.attributes?.id, http);
      // The native sidecar's, from the shim too (its runc container's cgroup).
      const side = await env.cri.containerStats(sidecar);
      assert.ok((side?.cpu?.usage_core_nano_seconds?.value ?? 0) > 0, JSON.stringify(side));
      assert.ok((side?.memory?.working_set_bytes?.value ?? 0) > 0, JSON.stringify(side));
    });

    const helloEnd = await step("the preview1 container exits 0", () => waitExited(env, hello));
    assert.equal(helloEnd.exit_code, 0, helloEnd.message);
    // containerd runs the shim with -debug at its debug level (the harness's): the lines
    // about a task of a pod, copied into containerd's log, name the task and its sandbox.
    await step(
      "the shim's lines about the container carry its id and pod",
      () =>
        poll("debug lines about the preview1 container", 10_000, async () => {
          const log = await env.cd.logs();
          const fields = `id="${hello}" pod="${podId}"`;
          const server = new RegExp(
            `level=debug msg="task ${hello}: Start ok in [^"]*".* ${fields}`,
          );
          // Its runner's own debug lines come the same way.
          const runner = new RegExp(
            `level=debug msg="guest ${hello} \\(runner pid \\d+\\): started".* ${fields}`,
          );
          return server.test(log) && runner.test(log) ? true : undefined;
        }, 200),
    );
    const logPath = `${pod.log_directory}/hello/0.log`;
    await step(`CRI log ${logPath}`, () => helloInCriLog(logPath));
    // The component writes to its stdout and stderr only on `/log`: those lines reach its
    // CRI log file too (nothing else does: the other requests are silent).
    const logged = await fetch(`${url}log`, { signal: AbortSignal.timeout(10_000) });
    assert.equal(await logged.text(), HELLO);
    const httpLog = `${pod.log_directory}/http/0.log`;
    const httpLines = await step(
      `CRI log ${httpLog}`,
      () =>
        poll("the component's lines in its CRI log", 10_000, async () => {
          const lines = await criLog(httpLog);
          return lines.includes("stdout a log line from a wasi:http request") &&
              lines.includes("stderr a stderr line from a wasi:http request")
            ? lines
            : undefined;
        }, 200),
    );
    assert.equal(httpLines.length, 2, JSON.stringify(httpLines));

    // Both still run, in the pod's network namespace (the pause container's).
    await step("the containers share the pod's netns", async () => {
      const podNs = await netnsOf(net.pid);
      assert.equal(podNs, `net:[${(await Deno.stat(net.netns)).ino}]`);
      for (const id of [http, sidecar]) {
        const res = await env.cri.containerStatus(id, true);
        assert.equal(res.status?.state, "CONTAINER_RUNNING");
        const pid = Number(JSON.parse(res.info.info ?? "{}").pid);
        assert.equal(await netnsOf(pid), podNs, `container ${id} (pid ${pid})`);
      }
    });

    const [httpEnd, , sideEnd] = await deletePod(env, podId, pod, [http, hello, sidecar]);
    assert.equal(httpEnd.exit_code, 143, "the component drains and exits 143 on SIGTERM");
    assert.equal(sideEnd.exit_code, 137, "the sidecar is SIGKILLed after the grace period");
  } finally {
    await removeAllPods(env.cri);
  }
  await assertNothingLeft(env, pod, netnsPaths);
}

/**
 * Wasm OCI images through the CRI, in a wasmtime pod: an artifact (Wasm config media
 * type) and an OCI image whose only layer is Wasm. containerd 1.7+ imports them
 * unpacking (an empty rootfs: no tar layers); 1.6.20 cannot unpack them, so there they
 * are imported with `--no-unpack`. Either way the CRI makes an empty snapshot (the
 * config lists no diff_ids) and the shim reads the Wasm layer from the content store.
 */
async function artifactPod(env: Env): Promise<void> {
  const { major, minor } = await containerdVersion();
  const probe = await Deno.readFile(fixture("probe.wasm"));
  const layer = {
    mediaType: MediaType.wasm,
    data: probe,
    annotations: { [ANNOTATION_TITLE]: "probe.wasm" },
  };
  const refs: Record<string, string> = {};
  for (const [shape, asArtifact] of Object.entries({ artifact: true, image: false })) {
    const built = await buildImage({
      name: `wasm-${shape}`,
      repo: REPO,
      tag: "v1",
      outPath: `${env.tmp}/wasm-${shape}.tar`,
      asArtifact,
      config: asArtifact ? undefined : { entrypoint: ["/probe.wasm"] },
      layers: [layer],
    });
    await env.cd.importImage(built.path, {
      namespace: K8S_NAMESPACE,
      noUnpack: major === 1 && minor < 7,
    });
    refs[shape] = built.reference;
    await poll(
      `the CRI to know ${built.reference}`,
      10_000,
      () => env.cri.imageStatus(built.reference),
    );
  }
  const pod = podConfig(env, "art-pod");
  const netnsPaths: string[] = [];
  try {
    const podId = await step(
      "RunPodSandbox (artifacts)",
      () => env.cri.runPodSandbox(pod, "wasmtime"),
    );
    netnsPaths.push((await podNetwork(env, podId)).netns);
    const ids: string[] = [];
    for (const [shape, ref] of Object.entries(refs)) {
      const config = containerConfig(shape, ref, ["/probe.wasm", "hello"]);
      const id = await startContainer(env, podId, pod, config);
      ids.push(id);
      const end = await step(`the ${shape} container exits 0`, () => waitExited(env, id));
      assert.equal(end.exit_code, 0, end.message);
      const logPath = `${pod.log_directory}/${shape}/0.log`;
      await step(`CRI log ${logPath}`, () => helloInCriLog(logPath));
    }
    await deletePod(env, podId, pod, ids);
  } finally {
    await removeAllPods(env.cri);
  }
  await assertNothingLeft(env, pod, netnsPaths);
}

Deno.test({
  name: "CRI: a runc pod, then wasmtime pods (wasi:http, preview1, native sidecar; artifacts)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const env = await setup([
      { path: "/http_hello.wasm", hostPath: `${TESTDATA}http_hello.wasm` },
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
    ], "/http_hello.wasm");
    const passed: boolean[] = [];
    try {
      passed.push(
        await t.step(
          "runc pod (harness baseline): sandbox, network, sidecar, stats",
          () => runcPod(env),
        ),
      );
      passed.push(
        await t.step(
          "wasmtime pod: wasi:http on the pod IP, CRI logs, stats, sidecar",
          () => wasmtimePod(env),
        ),
      );
      passed.push(
        await t.step(
          "wasmtime pod: a Wasm OCI artifact and a Wasm-layer image",
          () => artifactPod(env),
        ),
      );
    } finally {
      await endSuite(env, passed.length === 3 && passed.every(Boolean));
    }
    assert.notEqual((await sh("ip", ["link", "show", env.bridge])).code, 0, "the bridge is gone");
    assert.equal(await exists(env.tmp), false, "the temp dir is gone");
  },
});
