/**
 * What the CRI end-to-end tests share: a private containerd with its CRI plugin on a
 * CNI bridge network of its own (Debian's plugins in /usr/lib/cni; bridge + host-local
 * on a private /24), driven the way kubelet drives it; pods and containers as kubelet
 * asks for them; and the checks that nothing of a pod is left after it.
 *
 * Every CRI call has a deadline, every wait is bounded, and {@linkcode teardown} removes
 * everything {@linkcode setup} made, also after a failure.
 *
 * @module
 */

import assert from "node:assert/strict";
import { buildImage, type LayerFile } from "../../src/oci/image.ts";
import { type Containerd, type Leftovers, startContainerd } from "./harness.ts";
import { exists, poll, sleep } from "./ctr_util.ts";
import { fixture, installShim } from "./shim_install.ts";
import {
  type ContainerConfig,
  type ContainerStatus,
  CriClient,
  type PodSandboxConfig,
} from "./cri_client.ts";

/** CRI's containerd namespace. */
export const K8S_NAMESPACE = "k8s.io";
/** Where Debian's containernetworking-plugins puts the CNI plugins. */
export const CNI_BIN_DIR = "/usr/lib/cni";
export const REPO = "example.com/cri-e2e";
export const NATIVE_IMAGE = `${REPO}/native:v1`;
export const WASM_IMAGE = `${REPO}/wasm:v1`;

const decoder = new TextDecoder();

/**
 * Runs a command with a deadline (SIGKILL after `timeoutMs`). Never throws: a command that
 * cannot be spawned gives code -1 and the reason on stderr.
 */
export async function sh(cmd: string, args: string[], timeoutMs = 10_000) {
  try {
    const out = await new Deno.Command(cmd, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } catch (err) {
    return { code: -1, stdout: "", stderr: `${cmd}: ${(err as Error).message}` };
  }
}

/** Runs one step, prefixing its error with the step's name (for precise failure reports). */
export async function step<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const e = err as Error;
    e.message = `[${name}] ${e.message}`;
    throw e;
  }
}

/** GETs `url` until a component of a pod answers there (30 s at most): its body. */
export function answerOf(url: string, everyMs = 100): Promise<string> {
  return step(`GET ${url}`, () =>
    poll(`the component to answer on ${url}`, 30_000, async () => {
      const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
      return await res.text();
    }, everyMs));
}

/** Mount points of the cgroup hierarchies (cgroup v1 controllers, or the v2 root). */
export async function cgroupRoots(): Promise<string[]> {
  const roots: string[] = [];
  for (const line of (await Deno.readTextFile("/proc/self/mountinfo")).split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const fstype = line.slice(sep + 3).split(" ")[0];
    if (fstype === "cgroup" || fstype === "cgroup2") roots.push(line.split(" ")[4]);
  }
  return roots;
}

/** Every directory under `dir` (deepest first), `dir` included; none if it does not exist. */
export async function subtree(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    try {
      for await (const e of Deno.readDir(d)) if (e.isDirectory) await walk(`${d}/${e.name}`);
    } catch {
      return;
    }
    out.push(d);
  };
  await walk(dir);
  return out;
}

/** Pids in the cgroups under `parent` (a path relative to each hierarchy's root). */
export async function cgroupPids(parent: string): Promise<number[]> {
  const pids = new Set<number>();
  for (const root of await cgroupRoots()) {
    for (const d of await subtree(`${root}${parent}`)) {
      const text = await Deno.readTextFile(`${d}/cgroup.procs`).catch(() => "");
      for (const p of text.split("\n").filter(Boolean)) pids.add(Number(p));
    }
  }
  return [...pids].sort((a, b) => a - b);
}

/** `dir` and the cgroup directories below it, in any hierarchy. */
export async function cgroupDirs(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const root of await cgroupRoots()) out.push(...await subtree(`${root}${dir}`));
  return out.sort();
}

/** Kills what is in the cgroups under `parent`, then removes them (children first). */
export async function removeCgroups(parent: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const pids = await cgroupPids(parent);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    await sleep(100);
  }
  for (const root of await cgroupRoots()) {
    for (const d of await subtree(`${root}${parent}`)) await Deno.remove(d).catch(() => {});
  }
}

/**
 * A free private /24 for the pod network, 10.88.x.0/24 with a random x (so that two runs
 * at once do not share one) that no route or address of the host covers.
 */
export async function pickSubnet(): Promise<string> {
  const routes = (await sh("ip", ["-4", "route", "show"])).stdout +
    (await sh("ip", ["-4", "addr", "show"])).stdout;
  for (let i = 0; i < 100; i++) {
    const octet = 64 + Math.floor(Math.random() * 190);
    if (!routes.includes(`10.88.${octet}.`)) return `10.88.${octet}.0/24`;
  }
  throw new Error("no free 10.88.x.0/24 subnet for the pod network");
}

/** One CRI-enabled containerd, its images and its CNI network, for the whole file. */
export interface Env {
  cd: Containerd;
  cri: CriClient;
  tmp: string;
  /** Bridge device the CNI bridge plugin creates (deleted at the end). */
  bridge: string;
  /** CNI network name (CNI result cache entries are named after it). */
  network: string;
  subnet: string;
  /** host-local's dataDir. */
  ipamDir: string;
  /** Cgroup parent of the pods, relative to each hierarchy's root. */
  cgroupParent: string;
  /** /var/run/netns entries before the test. */
  netnsBefore: Set<string>;
}

/**
 * Starts a CRI-enabled containerd on a private CNI network, with the native image
 * (pause, native_sleep) and a wasm image of `wasmFiles` ({@linkcode WASM_IMAGE},
 * entrypoint `entrypoint`) imported into CRI's namespace.
 */
export async function setup(wasmFiles: LayerFile[], entrypoint: string): Promise<Env> {
  for (const plugin of ["bridge", "host-local", "loopback"]) {
    if (!(await exists(`${CNI_BIN_DIR}/${plugin}`))) {
      throw new Error(
        `CNI plugin ${CNI_BIN_DIR}/${plugin} not found: the CRI test needs Debian's CNI ` +
          `plugins; install them with 'apt-get install -y containernetworking-plugins'`,
      );
    }
  }
  const { binDir } = await installShim();
  const tmp = await Deno.makeTempDir({ prefix: "shim-e2e-cri-" });
  const tag = crypto.randomUUID().replaceAll("-", "").slice(0, 6);
  const env: Partial<Env> & { tmp: string } = {
    tmp,
    bridge: `crie2e${tag}`, // at most 15 characters (IFNAMSIZ)
    network: `shim-cri-e2e-${tag}`,
    cgroupParent: `/shim-cri-e2e-${tag}`,
    netnsBefore: new Set(
      await Array.fromAsync(Deno.readDir("/var/run/netns")).then(
        (es) => es.map((e) => e.name),
        () => [] as string[],
      ),
    ),
  };
  try {
    env.subnet = await pickSubnet();
    env.ipamDir = `${tmp}/cni/ipam`;
    const confDir = `${tmp}/cni/net.d`;
    await Deno.mkdir(confDir, { recursive: true });
    await Deno.writeTextFile(
      `${confDir}/10-shim-cri-e2e.conflist`,
      JSON.stringify(
        {
          cniVersion: "1.0.0",
          name: env.network,
          plugins: [{
            type: "bridge",
            bridge: env.bridge,
            isGateway: true,
            ipMasq: false,
            hairpinMode: false,
            ipam: {
              type: "host-local",
              ranges: [[{ subnet: env.subnet }]],
              dataDir: env.ipamDir,
            },
          }],
        },
        null,
        2,
      ),
    );
    const images = await Promise.all([
      buildImage({
        name: "native",
        repo: REPO,
        tag: "v1",
        outPath: `${tmp}/native.tar`,
        config: {
          os: "linux",
          architecture: Deno.build.arch === "aarch64" ? "arm64" : "amd64",
          entrypoint: ["/pause"],
        },
        layers: [{
          files: [
            { path: "/pause", hostPath: fixture("pause"), mode: 0o755 },
            { path: "/native_sleep", hostPath: fixture("native_sleep"), mode: 0o755 },
          ],
        }],
      }),
      buildImage({
        name: "wasm",
        repo: REPO,
        tag: "v1",
        outPath: `${tmp}/wasm.tar`,
        config: { entrypoint: [entrypoint] },
        layers: [{ files: wasmFiles }],
      }),
    ]);
    assert.deepEqual(images.map((i) => i.reference), [NATIVE_IMAGE, WASM_IMAGE]);
    const cdOpts = {
      shimBinDir: binDir,
      // The harness declares the `runc` and `wasmtime` runtimes of the CRI, and writes
      // these where the containerd's config version keeps them.
      cri: { sandboxImage: NATIVE_IMAGE, cniBinDir: CNI_BIN_DIR, cniConfDir: confDir },
      // The harness puts the shim's runc state (pause, sidecar) in its runcRoot, as runc's.
      env: { WASMTIME_SHIM_CACHE_DIR: `${tmp}/cache` },
    };
    env.cd = await startContainerd(cdOpts);
    env.cri = await CriClient.connect({ address: env.cd.address });
    const version = await poll("the CRI plugin to answer Version", 20_000, async () => {
      return await env.cri!.version(2_000);
    });
    assert.equal(version.runtime_api_version, "v1");
    for (const image of images) {
      await env.cd.importImage(image.path, { namespace: K8S_NAMESPACE });
    }
    // The CRI learns about imported images from containerd's events.
    for (const image of [NATIVE_IMAGE, WASM_IMAGE]) {
      await poll(`the CRI to know ${image}`, 10_000, () => env.cri!.imageStatus(image));
    }
    return env as Env;
  } catch (err) {
    await teardown(env).catch(() => {});
    throw err;
  }
}

/** CRI format: `<RFC 3339 time> <stream> <P|F> <text>`. */
const CRI_LOG_LINE =
  /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([PF]) (.*)$/;

/** The lines of a CRI log file as `stream text` (full lines only). */
export async function criLog(path: string): Promise<string[]> {
  const text = await Deno.readTextFile(path);
  return text.split("\n").filter(Boolean).map((line) => {
    const m = CRI_LOG_LINE.exec(line);
    if (!m) throw new Error(`${path}: not a CRI log line: ${JSON.stringify(line)}`);
    return `${m[2]} ${m[4]}`;
  });
}

/** Stops and removes every pod the CRI knows (kubelet's teardown), with deadlines. */
export async function removeAllPods(cri: CriClient): Promise<void> {
  const pods = await cri.listPodSandbox().catch(() => []);
  for (const pod of pods) {
    await cri.stopPodSandbox(pod.id, 30_000).catch(() => {});
    await cri.removePodSandbox(pod.id, 30_000).catch(() => {});
  }
}

/** What CRI, CNI and the shim may have left of the pods, beyond the harness' leftovers. */
interface PodLeftovers {
  /** Host-side interfaces still attached to the bridge (veths). */
  veths: string[];
  /** CNI result cache entries of this network (libcni's /var/lib/cni/results). */
  cniCache: string[];
  /** host-local reservations (files named after an IP). */
  ipReservations: string[];
  /** New entries of /var/run/netns. */
  varRunNetns: string[];
  /** Network namespace files the pods used, still present. */
  netns: string[];
  /** The pod's cgroup (kubelet's, removed by the test) and those below it; pids in them. */
  cgroups: string[];
  cgroupPids: number[];
  /** runc state in CRI's namespace: the runc shim's, and the shim's native containers'. */
  runcState: string[];
}

export async function podLeftovers(
  env: Env,
  pod: PodSandboxConfig,
  netnsPaths: string[],
): Promise<PodLeftovers> {
  const podCgroup = pod.linux!.cgroup_parent!;
  const links = await sh("ip", ["-o", "link", "show", "master", env.bridge]);
  const names = (dir: string, keep: (n: string) => boolean = () => true) =>
    Array.fromAsync(Deno.readDir(dir)).then(
      (es) => es.map((e) => e.name).filter(keep).sort(),
      () => [] as string[],
    );
  return {
    veths: links.code === 0
      ? links.stdout.split("\n").filter(Boolean).map((l) => l.split(": ")[1]?.split("@")[0] ?? l)
      : [],
    cniCache: await names("/var/lib/cni/results", (n) => n.startsWith(`${env.network}-`)),
    ipReservations: await names(
      `${env.ipamDir}/${env.network}`,
      (n) => /^\d+\.\d+\.\d+\.\d+$/.test(n),
    ),
    varRunNetns: await names("/var/run/netns", (n) => !env.netnsBefore.has(n)),
    netns: (await Promise.all(netnsPaths.map(async (p) => (await exists(p)) ? p : ""))).filter(
      Boolean,
    ),
    cgroups: await cgroupDirs(podCgroup),
    cgroupPids: await cgroupPids(podCgroup),
    runcState: await names(`${env.cd.runcRoot}/${K8S_NAMESPACE}`),
  };
}

/**
 * Ends a CRI suite: on a failure (`ok` false) prints containerd's errors first (the
 * shims' and runc's included: they tell why), then tears everything down and checks that
 * no shim process or socket outlived containerd.
 */
export async function endSuite(env: Partial<Env> & { tmp: string }, ok: boolean): Promise<void> {
  if (!ok && env.cd) {
    const errors = (await env.cd.logs()).split("\n").filter((l) => /level=(error|fatal)/.test(l));
    console.error(`containerd's errors:\n${errors.slice(-30).join("\n")}`);
  }
  const left = await teardown(env);
  assert.deepEqual(left?.processes ?? [], [], "shim processes at containerd's stop");
  assert.deepEqual(left?.sockets ?? [], [], "shim sockets at containerd's stop");
}

/** Removes everything {@linkcode setup} made, whatever state the test left it in. */
export async function teardown(
  env: Partial<Env> & { tmp: string },
): Promise<Leftovers | undefined> {
  let left: Leftovers | undefined;
  if (env.cri) {
    await removeAllPods(env.cri);
    env.cri.close();
  }
  if (env.cd) {
    const cd = env.cd;
    // The harness cleans its own namespace; CRI's is ours to clean.
    const ns = { namespace: K8S_NAMESPACE, timeoutMs: 10_000 };
    const tasks = await cd.ctr(["task", "ls", "-q"], ns);
    for (const id of tasks.stdout.split("\n").filter(Boolean)) {
      await cd.ctr(["task", "kill", "-s", "SIGKILL", id], ns);
      await cd.ctr(["task", "delete", "-f", id], ns);
    }
    const ctrs = await cd.ctr(["container", "ls", "-q"], ns);
    for (const id of ctrs.stdout.split("\n").filter(Boolean)) {
      await cd.ctr(["container", "delete", id], ns);
    }
    // runc containers outlive their killed shims (the runc shim's and ours: the harness
    // gives both its runcRoot).
    const runcRoot = `${cd.runcRoot}/${K8S_NAMESPACE}`;
    for (const id of await Array.fromAsync(Deno.readDir(runcRoot)).catch(() => [])) {
      await sh("runc", ["--root", runcRoot, "delete", "--force", id.name]);
    }
    left = await cd.stop();
  }
  if (env.cgroupParent) await removeCgroups(env.cgroupParent);
  if (env.bridge) await sh("ip", ["link", "del", env.bridge]);
  if (env.network) {
    const cache = await Array.fromAsync(Deno.readDir("/var/lib/cni/results")).catch(() => []);
    for (const e of cache) {
      if (e.name.startsWith(`${env.network}-`)) {
        await Deno.remove(`/var/lib/cni/results/${e.name}`).catch(() => {});
      }
    }
  }
  await Deno.remove(env.tmp, { recursive: true }).catch(() => {});
  return left;
}

/** A pod with kubelet's defaults for a best-effort pod, logging into the temp dir. */
export function podConfig(env: Env, name: string): PodSandboxConfig {
  const uid = crypto.randomUUID();
  return {
    metadata: { name, uid, namespace: "cri-e2e", attempt: 0 },
    hostname: name,
    log_directory: `${env.tmp}/pods/cri-e2e_${name}_${uid}`,
    labels: { "io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "cri-e2e" },
    linux: {
      cgroup_parent: `${env.cgroupParent}/pod${uid}`,
      security_context: { namespace_options: { network: "POD", pid: "CONTAINER", ipc: "POD" } },
    },
  };
}

/** A container as kubelet asks for one: logs to `<name>/0.log` under the pod's directory. */
export function containerConfig(name: string, image: string, command: string[]): ContainerConfig {
  return {
    metadata: { name, attempt: 0 },
    image: { image },
    command,
    log_path: `${name}/0.log`,
    labels: { "io.kubernetes.container.name": name },
    linux: {
      resources: { cpu_period: 100_000, cpu_shares: 2, oom_score_adj: 1000 },
      security_context: { namespace_options: { network: "POD", pid: "CONTAINER", ipc: "POD" } },
    },
  };
}

/** Creates and starts a container the way kubelet does (its log directory first). */
export async function startContainer(
  env: Env,
  podId: string,
  pod: PodSandboxConfig,
  config: ContainerConfig,
): Promise<string> {
  return await step(`CreateContainer/StartContainer ${config.metadata.name}`, async () => {
    await Deno.mkdir(`${pod.log_directory}/${config.metadata.name}`, { recursive: true });
    const id = await env.cri.createContainer(podId, config, pod, 60_000);
    await env.cri.startContainer(id, 60_000);
    return id;
  });
}

/** The network namespace of a process (`net:[<inode>]`). */
export async function netnsOf(pid: number): Promise<string> {
  assert.ok(pid > 0, `a pid (${pid})`);
  return await Deno.readLink(`/proc/${pid}/ns/net`);
}

/** The pod's netns path and IP, from PodSandboxStatus (verbose). */
export async function podNetwork(env: Env, podId: string) {
  const res = await env.cri.podSandboxStatus(podId, true);
  assert.equal(res.status?.state, "SANDBOX_READY");
  const ip = res.status?.network?.ip ?? "";
  const prefix = env.subnet.replace(/\.0\/24$/, ".");
  assert.ok(ip.startsWith(prefix), `pod IP ${ip} is in the pod network ${env.subnet}`);
  const info = JSON.parse(res.info.info ?? "{}");
  const netns: string = info.runtimeSpec?.linux?.namespaces?.find((
    n: { type: string },
  ) => n.type === "network")?.path ?? "";
  assert.ok(netns.startsWith(`${env.cd.dir}/`), `the pod's netns ${netns} is in the temp dir`);
  // The address is on the pod's eth0, inside its network namespace.
  const addr = await sh("nsenter", [`--net=${netns}`, "ip", "-4", "-o", "addr", "show", "eth0"]);
  assert.match(addr.stdout, new RegExp(` ${ip.replaceAll(".", "\\.")}/24 `), addr.stderr);
  // CRI's own loopback network brought `lo` up.
  const lo = await sh("nsenter", [`--net=${netns}`, "ip", "-o", "link", "show", "lo"]);
  assert.match(lo.stdout, /[<,]UP[,>]/, lo.stdout + lo.stderr);
  return { ip, netns, pid: Number(info.pid), handler: res.status?.runtime_handler };
}

/**
 * kubelet's pod teardown: stop the containers (SIGTERM, SIGKILL after a grace period of
 * 2 s), stop and remove the pod, then remove the pod's cgroup (kubelet's own, which
 * runc and the shim never remove; `rmdir` fails while a container's cgroup is left in
 * it). Returns the containers' statuses after their stop.
 */
export async function deletePod(
  env: Env,
  podId: string,
  pod: PodSandboxConfig,
  containers: string[],
): Promise<ContainerStatus[]> {
  const stopped = await step("StopContainer", async () => {
    await Promise.all(containers.map((id) => env.cri.stopContainer(id, 2)));
    return await Promise.all(containers.map(async (id) => {
      const st = (await env.cri.containerStatus(id)).status;
      assert.equal(st?.state, "CONTAINER_EXITED", `${id} exited`);
      return st!;
    }));
  });
  await step("StopPodSandbox", () => env.cri.stopPodSandbox(podId, 30_000));
  await step("RemovePodSandbox", () => env.cri.removePodSandbox(podId, 30_000));
  assert.deepEqual(await env.cri.listPodSandbox(), []);
  assert.deepEqual(await env.cri.listContainers(), []);
  for (const root of await cgroupRoots()) {
    await Deno.remove(`${root}${pod.linux!.cgroup_parent}`).catch(() => {});
  }
  return stopped;
}

/** After a pod is gone: nothing of it may be left (waits for shims to exit first). */
export async function assertNothingLeft(
  env: Env,
  pod: PodSandboxConfig,
  netnsPaths: string[],
): Promise<void> {
  await step("nothing left behind", async () => {
    let left = await env.cd.leftovers();
    for (let i = 0; i < 100 && left.processes.length + left.sockets.length > 0; i++) {
      await sleep(100);
      left = await env.cd.leftovers();
    }
    assert.deepEqual(left.processes, [], "shim processes");
    assert.deepEqual(left.sockets, [], "shim sockets");
    assert.deepEqual(left.slots, [], "runner slots");
    assert.deepEqual(left.mounts, [], "mounts (rootfs, shm, netns)");
    assert.deepEqual(await podLeftovers(env, pod, netnsPaths), {
      veths: [],
      cniCache: [],
      ipReservations: [],
      varRunNetns: [],
      netns: [],
      cgroups: [],
      cgroupPids: [],
      runcState: [],
    });
  });
}

/** Waits until a container has exited; its status. */
export function waitExited(env: Env, id: string, timeoutMs = 30_000) {
  return poll(`container ${id} to exit`, timeoutMs, async () => {
    const st = (await env.cri.containerStatus(id)).status;
    return st?.state === "CONTAINER_EXITED" ? st : undefined;
  });
}
