/**
 * End to end through Kubernetes' CRI: what a pod's volumes, security context and DNS
 * mean for its wasm containers (see src/wasm/container_setup.ts). One `wasmtime` pod,
 * its volumes made on the node as kubelet makes them and passed as kubelet passes them
 * (`ContainerConfig.mounts`):
 *
 * - a hostPath directory (rw), a ConfigMap key mounted as a single file (kubelet's
 *   `subPath`: a symlink into the atomic writer's `..data`, read-only), a Secret
 *   directory (a tmpfs on the node, read-only), an emptyDir (rw, in two containers),
 *   `/dev/termination-log` (a file of the pod's directory) and `/etc/hosts` (kubelet's
 *   own file, with the pod's hostAliases);
 * - `files`: `http_probe.wasm` (wasi:http, C) as uid 1000 with a read-only rootfs,
 *   answering what it sees; `peer`: the same as uid 0, sharing the emptyDir and the
 *   pod's `/dev/shm`; `fetch`: `http_app.wasm` fetching `http://backend.test:PORT/`
 *   (known only to the pod's `/etc/hosts`) and `http://dns-backend.test:PORT/` (known
 *   only to a DNS responder the test runs in the pod's network namespace, named in the
 *   sandbox's `dns_config`); the backend is a server of the test on the node.
 *
 * A container whose volume would climb out of its rootfs through a symlink of the image
 * fails at StartContainer (the shim's Create) naming the entry, and the pod's other
 * containers keep serving. While the pod runs nothing of its volumes is in the node's
 * mount table; after the pod, nothing is left (the checks of `cri_env.ts`).
 */

import assert from "node:assert/strict";
import { POD_NSSWITCH } from "../../src/wasm/container_setup.ts";
import { fixture } from "./shim_install.ts";
import { exists, poll } from "./ctr_util.ts";
import type { ContainerConfig, CriMount } from "./cri_client.ts";
import {
  assertNothingLeft,
  containerConfig,
  deletePod,
  endSuite,
  type Env,
  podConfig,
  podNetwork,
  removeAllPods,
  setup,
  sh,
  startContainer,
  step,
  WASM_IMAGE,
} from "./cri_env.ts";

const TESTDATA = new URL("../../src/wasm/component/testdata/", import.meta.url).pathname;
const PROBE = new URL("../fixtures/guests/built/http_probe.wasm", import.meta.url).pathname;
const RESPONDER = new URL("./dns_responder.ts", import.meta.url).pathname;
/** The wasi:http listen address variable (src/wasm/component/http_server.ts). */
const ADDR_ENV = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
const PORTS = { files: 8080, peer: 8081, fetch: 8082 } as const;
const GUEST_UID = 1000;
const BACKEND_ANSWER = "the backend answers\n";

/** Mount lines of the node (`/proc/self/mountinfo` without the ids, which change). */
async function nodeMounts(): Promise<Set<string>> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  return new Set(text.split("\n").filter(Boolean).map((l) => l.split(" ").slice(3).join(" ")));
}

/** GET of `path` on a container of the pod: the body. */
async function ask(ip: string, port: number, path: string): Promise<string> {
  const res = await fetch(`http://${ip}:${port}${path}`, { signal: AbortSignal.timeout(20_000) });
  const body = await res.text();
  assert.equal(res.status, 200, `${path}: ${body}`);
  return body;
}

/** The pod's volumes on the node, as kubelet lays them out. */
interface Volumes {
  host: string;
  configMapFile: string;
  secret: string;
  emptyDir: string;
  terminationLog: string;
  etcHosts: string;
}

async function makeVolumes(env: Env, podDir: string): Promise<Volumes> {
  const vol = `${env.tmp}/volumes`;
  const v: Volumes = {
    host: `${vol}/host`,
    configMapFile: `${vol}/configmap/app.conf`,
    secret: `${vol}/secret`,
    emptyDir: `${podDir}/volumes/kubernetes.io~empty-dir/cache`,
    terminationLog: `${podDir}/containers/files/term`,
    etcHosts: `${podDir}/etc-hosts`,
  };
  await Deno.chmod(env.tmp, 0o755);
  await Deno.mkdir(`${v.host}/shared`, { recursive: true });
  await Deno.chmod(vol, 0o755);
  await Deno.writeTextFile(`${v.host}/node.txt`, "from the node\n");
  await Deno.writeTextFile(`${v.host}/root-only`, "root only\n", { mode: 0o600 });
  await Deno.chown(`${v.host}/shared`, GUEST_UID, GUEST_UID);
  // A ConfigMap volume: the atomic writer's timestamped directory behind `..data`.
  const stamp = `${vol}/configmap/..2026_01_01_00_00_00.000000001`;
  await Deno.mkdir(stamp, { recursive: true });
  await Deno.writeTextFile(`${stamp}/app.conf`, "from a configmap\n");
  await Deno.symlink(stamp.slice(stamp.lastIndexOf("/") + 1), `${vol}/configmap/..data`);
  await Deno.symlink("..data/app.conf", v.configMapFile);
  // A Secret volume: kubelet backs it with a tmpfs, so that it never reaches a disk.
  await Deno.mkdir(v.secret);
  const mounted = await sh("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", v.secret]);
  assert.equal(mounted.code, 0, mounted.stderr);
  await Deno.writeTextFile(`${v.secret}/token`, "s3cr3t\n", { mode: 0o644 });
  await Deno.mkdir(v.emptyDir, { recursive: true, mode: 0o777 });
  await Deno.chmod(v.emptyDir, 0o777);
  await Deno.mkdir(`${podDir}/containers/files`, { recursive: true });
  await Deno.writeTextFile(v.terminationLog, "", { mode: 0o666 });
  await Deno.chmod(v.terminationLog, 0o666);
  return v;
}

/** A wasm container of the pod, serving wasi:http on `port`. */
function wasmContainer(
  name: string,
  entrypoint: string,
  port: number,
  mounts: CriMount[],
  user?: { uid: number; readonlyRoot: boolean },
): ContainerConfig {
  const config = containerConfig(name, WASM_IMAGE, [entrypoint]);
  config.envs = [{ key: ADDR_ENV, value: `0.0.0.0:${port}` }];
  config.mounts = mounts;
  if (user) {
    config.linux!.security_context = {
      ...config.linux!.security_context,
      run_as_user: { value: user.uid },
      readonly_rootfs: user.readonlyRoot,
    };
  }
  return config;
}

/** Starts the DNS responder in the pod's network namespace; resolves once it listens. */
async function startResponder(netns: string, names: Record<string, string>) {
  const child = new Deno.Command("nsenter", {
    args: [
      `--net=${netns}`,
      Deno.execPath(),
      "run",
      "--allow-net",
      "--unstable-net",
      RESPONDER,
      "127.0.0.1:53",
      ...Object.entries(names).map(([n, ip]) => `${n}=${ip}`),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await Promise.race([
    reader.read(),
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error("the DNS responder did not start")), 10_000)
    ),
  ]);
  reader.releaseLock();
  assert.match(new TextDecoder().decode(first.value), /^listening/);
  return child;
}

async function volumesPod(env: Env): Promise<void> {
  const pod = podConfig(env, "vol-pod");
  pod.dns_config = { servers: ["127.0.0.1"], searches: [], options: ["ndots:1"] };
  const podDir = `${env.tmp}/kubelet/pods/${pod.metadata.uid}`;
  const v = await makeVolumes(env, podDir);
  const gateway = env.subnet.replace(/\.0\/24$/, ".1");
  const backend = Deno.serve(
    { hostname: "0.0.0.0", port: 0, onListen: () => {} },
    () => new Response(BACKEND_ANSWER),
  );
  const netnsPaths: string[] = [];
  let responder: Deno.ChildProcess | undefined;
  const before = await nodeMounts();
  try {
    const podId = await step("RunPodSandbox", () => env.cri.runPodSandbox(pod, "wasmtime"));
    const net = await podNetwork(env, podId);
    netnsPaths.push(net.netns);
    // kubelet's /etc/hosts: the pod's own names, then the pod's hostAliases.
    const etcHosts = `127.0.0.1\tlocalhost\n${net.ip}\tvol-pod\n` +
      `# Entries added by HostAliases.\n${gateway}\tbackend.test\n`;
    await Deno.writeTextFile(v.etcHosts, etcHosts);
    responder = await step(
      "DNS responder in the pod's netns",
      () => startResponder(net.netns, { "dns-backend.test": gateway }),
    );
    const hosts: CriMount = { container_path: "/etc/hosts", host_path: v.etcHosts };
    const cache: CriMount = { container_path: "/cache", host_path: v.emptyDir };
    const files = await startContainer(
      env,
      podId,
      pod,
      wasmContainer("files", "/http_probe.wasm", PORTS.files, [
        { container_path: "/host", host_path: v.host },
        { container_path: "/etc/app/app.conf", host_path: v.configMapFile, readonly: true },
        { container_path: "/etc/secret", host_path: v.secret, readonly: true },
        cache,
        { container_path: "/dev/termination-log", host_path: v.terminationLog },
        hosts,
      ], { uid: GUEST_UID, readonlyRoot: true }),
    );
    const peer = await startContainer(
      env,
      podId,
      pod,
      wasmContainer("peer", "/http_probe.wasm", PORTS.peer, [cache, hosts]),
    );
    const fetcher = await startContainer(
      env,
      podId,
      pod,
      wasmContainer("fetch", "/http_app.wasm", PORTS.fetch, [hosts]),
    );
    const get = (port: number, path: string) => ask(net.ip, port, path);
    await step(
      "the guests answer",
      () =>
        Promise.all(
          Object.values(PORTS).map((port) =>
            poll(`port ${port}`, 30_000, async () => {
              const res = await fetch(`http://${net.ip}:${port}/`, {
                signal: AbortSignal.timeout(5_000),
              });
              await res.body?.cancel();
              return res.status;
            }, 200)
          ),
        ),
    );

    await step("read-only volumes and rootfs", async () => {
      const erofs = "error: Read-only file system\n";
      assert.equal(await get(PORTS.files, "/cat/etc/app/app.conf"), "from a configmap\n");
      assert.equal(await get(PORTS.files, "/write/etc/app/app.conf?x"), erofs);
      assert.equal(await get(PORTS.files, "/ls/etc/secret"), "token\n");
      assert.equal(await get(PORTS.files, "/cat/etc/secret/token"), "s3cr3t\n");
      assert.equal(await get(PORTS.files, "/write/etc/secret/new?x"), erofs);
      assert.equal(await get(PORTS.files, "/write/written-to-root?x"), erofs);
      // The peer's rootfs is writable (its own): what it writes stays in its container.
      assert.equal(await get(PORTS.peer, "/write/written-to-root?x"), "wrote 1\n");
      assert.equal(
        await get(PORTS.files, "/cat/written-to-root"),
        "error: No such file or directory\n",
      );
    });

    await step("hostPath and emptyDir as runAsUser", async () => {
      assert.equal(await get(PORTS.files, "/cat/host/node.txt"), "from the node\n");
      assert.equal(await get(PORTS.files, "/cat/host/root-only"), "error: Permission denied\n");
      assert.equal(await get(PORTS.files, "/write/host/denied?x"), "error: Permission denied\n");
      assert.equal(await get(PORTS.files, "/write/host/shared/by-guest?hi"), "wrote 2\n");
      const st = await Deno.stat(`${v.host}/shared/by-guest`);
      assert.deepEqual([st.uid, st.gid], [GUEST_UID, 0], "the file is the guest's (uid, gid)");
      assert.equal(await Deno.readTextFile(`${v.host}/shared/by-guest`), "hi");
      assert.equal(await get(PORTS.files, "/write/cache/note?from-files"), "wrote 10\n");
      assert.equal(await get(PORTS.peer, "/cat/cache/note"), "from-files");
      assert.equal((await Deno.stat(`${v.emptyDir}/note`)).uid, GUEST_UID);
    });

    await step("/dev/shm, /dev/termination-log, devices, pod files", async () => {
      assert.equal(await get(PORTS.files, "/stat/dev/shm"), "dir\n");
      assert.equal(await get(PORTS.files, "/write/dev/shm/seg?shared"), "wrote 6\n");
      assert.equal(await get(PORTS.peer, "/cat/dev/shm/seg"), "shared");
      assert.equal(await get(PORTS.files, "/write/dev/termination-log?done"), "wrote 4\n");
      assert.equal(await Deno.readTextFile(v.terminationLog), "done");
      assert.equal(await get(PORTS.files, "/stat/dev/null"), "char\n");
      assert.equal(await get(PORTS.files, "/cat/etc/hostname"), "vol-pod\n");
      assert.match(await get(PORTS.files, "/cat/etc/hosts"), /\tbackend\.test\n/);
      assert.match(await get(PORTS.files, "/cat/etc/resolv.conf"), /^nameserver 127\.0\.0\.1$/m);
    });

    await step("the runner of a runAsUser guest", async () => {
      const res = await env.cri.containerStatus(files, true);
      const pid = Number(JSON.parse(res.info.info ?? "{}").pid);
      // What containerd's CRI made of the volumes: kubelet's paths (a ConfigMap key's
      // symlinks resolved), and its own /dev/shm (the sandbox's), hostname, resolv.conf.
      const spec = JSON.parse(res.info.info ?? "{}").runtimeSpec;
      const specMounts = new Map<string, { source: string; options: string[] }>(
        spec.mounts.map((m: { destination: string }) => [m.destination, m]),
      );
      assert.equal(specMounts.get("/dev/termination-log")?.source, v.terminationLog);
      assert.equal(
        specMounts.get("/etc/app/app.conf")?.source,
        await Deno.realPath(v.configMapFile),
      );
      for (const [path, name] of [["/dev/shm", "shm"], ["/etc/resolv.conf", "resolv.conf"]]) {
        assert.match(
          specMounts.get(path)?.source ?? "",
          new RegExp(`/sandboxes/[0-9a-f]{64}/${name}$`),
        );
      }
      const status = await Deno.readTextFile(`/proc/${pid}/status`);
      const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1];
      assert.equal(field("Uid"), `${GUEST_UID}\t${GUEST_UID}\t${GUEST_UID}\t${GUEST_UID}`);
      assert.equal(field("CapEff"), "0000000000000000");
      assert.equal(field("CapPrm"), "0000000000000000");
      assert.equal(field("NoNewPrivs"), "1");
      // It resolves names with the pod's files only (nothing of the node's name services).
      assert.equal(await Deno.readTextFile(`/proc/${pid}/root/etc/nsswitch.conf`), POD_NSSWITCH);
      assert.equal(await Deno.readTextFile(`/proc/${pid}/root/etc/hosts`), etcHosts);
    });

    await step("pod DNS: /etc/hosts and dns_config", async () => {
      const port = (backend.addr as Deno.NetAddr).port;
      // The node knows neither name: only the pod's files and DNS server do.
      for (const name of ["backend.test", "dns-backend.test"]) {
        const r = await sh("getent", ["hosts", name]);
        assert.notEqual(r.code, 0, `the node resolves ${name}: ${r.stdout}`);
      }
      for (const name of ["backend.test", "dns-backend.test"]) {
        const url = encodeURIComponent(`http://${name}:${port}/`);
        assert.equal(await get(PORTS.fetch, `/fetch?url=${url}`), `200 ${BACKEND_ANSWER}`, name);
      }
    });

    await step("a bad volume fails the container only; the pod keeps serving", async () => {
      // `/out` is a symlink of the image that climbs out of the rootfs.
      const config = wasmContainer("escape", "/http_probe.wasm", 8083, [
        { container_path: "/out/escaped", host_path: v.host, readonly: true },
      ]);
      await Deno.mkdir(`${pod.log_directory}/escape`, { recursive: true });
      const id = await env.cri.createContainer(podId, config, pod, 60_000);
      await assert.rejects(
        () => env.cri.startContainer(id, 60_000),
        /bind on \/out\/escaped\): .*leads outside the container's root/,
      );
      await env.cri.removeContainer(id, 30_000);
      assert.equal(await exists("/tmp/escaped"), false);
      assert.equal(await get(PORTS.files, "/cat/host/node.txt"), "from the node\n");
      assert.equal(await get(PORTS.peer, "/cat/cache/note"), "from-files");
    });

    await step("nothing of the volumes on the node", async () => {
      const now = await nodeMounts();
      const ours = [...now].filter((l) => !before.has(l)).filter((l) =>
        l.includes(`${env.tmp}/volumes`) || l.includes(podDir) ||
        / \/(host|cache|etc\/secret|etc\/app\/app\.conf|dev\/termination-log) /.test(l)
      );
      assert.deepEqual(ours, []);
    });

    await deletePod(env, podId, pod, [files, peer, fetcher]);
  } finally {
    responder?.kill("SIGKILL");
    await responder?.status;
    await removeAllPods(env.cri);
    await backend.shutdown();
  }
  await assertNothingLeft(env, pod, netnsPaths);
  const added = [...await nodeMounts()].filter((l) => !before.has(l));
  assert.deepEqual(added, [], "no mount of the pod is left on the node");
  const umount = await sh("umount", [v.secret]);
  assert.equal(umount.code, 0, umount.stderr);
}

Deno.test({
  name: "CRI pod: volumes, runAsUser, readOnlyRootFilesystem, /dev/shm, pod DNS for wasm",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const env = await setup([
      { path: "/http_probe.wasm", hostPath: PROBE },
      { path: "/http_app.wasm", hostPath: `${TESTDATA}http_app.wasm` },
      { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
      { path: "/out", type: "symlink", linkname: "../../../../../../tmp" },
    ], "/http_probe.wasm");
    let ok = false;
    try {
      await volumesPod(env);
      ok = true;
    } finally {
      const secret = `${env.tmp}/volumes/secret`;
      await sh("umount", [secret]);
      await endSuite(env, ok);
    }
  },
});
