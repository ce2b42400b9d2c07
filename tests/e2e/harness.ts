/**
 * End-to-end harness: a private containerd (Debian's `/usr/bin/containerd`) with its
 * own root, state, sockets and log in a fresh temp dir, driven through `ctr`.
 *
 * ```ts
 * const cd = await startContainerd({ shimBinDir: "/path/to/bin" });
 * try {
 *   await cd.importImage("image.tar");
 *   const r = await cd.ctr(["run", "--rm", "--runtime", "io.containerd.wasmtime.v1", ref, "t1"]);
 * } finally {
 *   await cd.stop();
 * }
 * ```
 *
 * What stays outside the temp dir, because containerd 1.6 or the shims hard-code it:
 * shim sockets in `/run/containerd/s/` (see {@linkcode Containerd.leftovers}) and task
 * cgroups. `ctr run` / `ctr task start|exec` get `--fifo-dir` (and `run` also
 * `--runc-root`) pointing into the temp dir unless the caller passes them; the wasm
 * shim keeps its native containers' runc state there too (`WASMTIME_SHIM_RUNC_ROOT`
 * = {@linkcode Containerd.runcRoot}).
 *
 * @module
 */

import { exists, sleep } from "./ctr_util.ts";

/** Where the shims of containerd 1.6–2.x put their sockets (hard-coded there). */
export const SHIM_SOCKET_DIR = "/run/containerd/s";
/** The namespace every harness uses. */
export const TEST_NAMESPACE = "shim-e2e";
/**
 * Which containerd the harness runs, from `E2E_CONTAINERD`:
 * - unset, `""` or `"1.6"`: Debian 12's, installed in /usr/bin;
 * - `"1.7"` or `"2"`: Debian 13's (trixie) or sid's, unpacked by `scripts/setup.sh` into
 *   `.cache/containerd/<series>/usr/bin` (never installed);
 * - a path: a directory holding `containerd`, `ctr` and `containerd-shim-runc-v2`.
 *
 * That directory also goes first on containerd's PATH (after the test's shim dir), so
 * containerd starts its own release's runc shim (pause and native containers).
 */
export const CONTAINERD_DIR: string = containerdDir(Deno.env.get("E2E_CONTAINERD") ?? "");
/** The containerd binary the harness runs (see {@linkcode CONTAINERD_DIR}). */
export const CONTAINERD_BIN = `${CONTAINERD_DIR}/containerd`;
/** The `ctr` of the same release. */
export const CTR_BIN = `${CONTAINERD_DIR}/ctr`;

function containerdDir(choice: string): string {
  if (choice === "" || choice === "1.6") return "/usr/bin";
  if (choice.includes("/")) return choice.replace(/\/+$/, "");
  if (!/^[0-9][0-9.]*$/.test(choice)) {
    throw new Error(`E2E_CONTAINERD=${choice}: expected 1.6, 1.7, 2 or a directory`);
  }
  return new URL(`../../.cache/containerd/${choice}/usr/bin`, import.meta.url).pathname;
}

/** A containerd release's version, from `containerd --version`. */
export interface ContainerdVersion {
  major: number;
  minor: number;
  /** The whole version word, e.g. `1.6.20~ds1` or `2.1.9+unknown`. */
  text: string;
}

let versionPromise: Promise<ContainerdVersion> | undefined;

/** The version of {@linkcode CONTAINERD_BIN} (asked once). */
export function containerdVersion(): Promise<ContainerdVersion> {
  versionPromise ??= (async () => {
    const out = await run(CONTAINERD_BIN, ["--version"], { timeoutMs: 10_000 });
    // "containerd github.com/containerd/containerd[/v2] 1.7.24~ds1 <revision>"
    const text = out.stdout.trim().split(/\s+/)[2] ?? "";
    const m = /^v?(\d+)\.(\d+)/.exec(text);
    if (out.code !== 0 || !m) {
      throw new Error(`${CONTAINERD_BIN} --version failed: ${out.stdout}${out.stderr}`);
    }
    return { major: Number(m[1]), minor: Number(m[2]), text };
  })();
  return versionPromise;
}

/** Options for {@linkcode startContainerd}. */
export interface ContainerdOptions {
  /** Put first on containerd's PATH, so it finds `containerd-shim-wasmtime-v1` there. */
  shimBinDir?: string;
  /** The rest of containerd's PATH, after `shimBinDir` (default: this process's PATH). */
  path?: string;
  /**
   * Keep the CRI plugin enabled (default: disabled), with the `runc` (default) and
   * `wasmtime` runtimes, a stream server on 127.0.0.1, network namespaces under the
   * temp dir, and these settings.
   */
  cri?: boolean | CriOptions;
  /** `"overlayfs"` (default, falls back to native if overlay cannot mount) or `"native"`. */
  snapshotter?: "overlayfs" | "native";
  /** containerd log level; default `"debug"` (shim logs land in containerd's log). */
  logLevel?: "trace" | "debug" | "info" | "warn" | "error";
  /**
   * Extra TOML appended to the generated config.toml: config version 2 for containerd
   * 1.x, version 3 for 2.x (see {@linkcode containerdVersion}).
   */
  extraConfig?: string;
  /** Extra environment for containerd (and so for the shims it starts). */
  env?: Record<string, string>;
  /** How long to wait for containerd to answer; default 20 s. */
  startTimeoutMs?: number;
  /** Parent of the temp dir; default the system temp dir. */
  tmpRoot?: string;
}

/** Result of a `ctr` run. */
export interface CtrResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options for {@linkcode Containerd.ctr}. */
export interface CtrOptions {
  /** Bytes or text written to ctr's stdin, which is then closed. */
  stdin?: Uint8Array | string;
  /** Kill ctr (SIGKILL) after this long; default 60 s. The result then has code 137. */
  timeoutMs?: number;
  /** Pass the arguments through without adding `--fifo-dir` / `--runc-root`. */
  raw?: boolean;
  /** Extra environment for ctr. */
  env?: Record<string, string>;
  /** containerd namespace for this call (default {@linkcode TEST_NAMESPACE}), e.g. CRI's `k8s.io`. */
  namespace?: string;
}

/** Options for {@linkcode Containerd.importImage}. */
export interface ImportOptions {
  /** Import without unpacking into a snapshot (`--no-unpack`). */
  noUnpack?: boolean;
  /**
   * Platform to unpack for (`--platform`). Not needed for single-manifest archives
   * (what `src/oci` builds): ctr 1.6 unpacks a top-level manifest whatever its platform.
   */
  platform?: string;
  timeoutMs?: number;
  /** Namespace to import into (default {@linkcode TEST_NAMESPACE}), e.g. CRI's `k8s.io`. */
  namespace?: string;
}

/** A process left behind. */
export interface LeftoverProcess {
  pid: number;
  cmdline: string[];
}

/** What a containerd left outside its control. All empty when everything was cleaned. */
export interface Leftovers {
  /** Mount points under the temp dir (from /proc/self/mountinfo). */
  mounts: string[];
  /** Entries of {@linkcode SHIM_SOCKET_DIR} created after this containerd started. */
  sockets: string[];
  /** `containerd-shim-*` processes started with this containerd's address. */
  processes: LeftoverProcess[];
  /** Task cgroups (`/sys/fs/cgroup/<controller>/<namespace>/<id>`) still present. */
  cgroups: string[];
  /** Warm-runner slot directories (`<dir>/slots/*`, see src/runner/pool.ts) left. */
  slots: string[];
}

/** A running private containerd. */
export interface Containerd {
  /** The temp dir holding everything (config, root, state, sockets, log). */
  readonly dir: string;
  /** gRPC socket path. */
  readonly address: string;
  /** ttrpc socket path. */
  readonly ttrpcAddress: string;
  /** The namespace `ctr` uses. */
  readonly namespace: string;
  /** The snapshotter in use (`overlayfs`, or `native` after a fallback). */
  readonly snapshotter: string;
  /** containerd's pid. */
  readonly pid: number;
  /** Directory given to ctr as `--fifo-dir`. */
  readonly fifoDir: string;
  /** Directory given to `ctr run` as `--runc-root`. */
  readonly runcRoot: string;
  /** Kills containerd (SIGKILL) and starts it again on the same root, state and sockets. */
  restart(): Promise<void>;
  /** Runs `ctr --address <sock> --namespace <ns> ...args`. Never throws on exit status. */
  ctr(args: string[], opts?: CtrOptions): Promise<CtrResult>;
  /** `ctr image import --all-platforms [--no-unpack] [--platform p] <tar>`; throws on failure. */
  importImage(tarPath: string, opts?: ImportOptions): Promise<CtrResult>;
  /** containerd's log so far. */
  logs(): Promise<string>;
  /** What is left behind right now (see {@linkcode Leftovers}). */
  leftovers(): Promise<Leftovers>;
  /**
   * Deletes remaining tasks and containers through containerd (SIGKILL, then delete),
   * stops containerd, kills leftover shims of this containerd (removing their sockets),
   * unmounts everything under the temp dir and removes it, and removes the namespace's
   * cgroup parents if empty. Returns what was still left after the deletes through
   * containerd but *before* the forced cleanup, so tests can assert that shims clean up
   * after themselves. Safe to call more than once (later calls return empty leftovers).
   */
  stop(): Promise<Leftovers>;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** Quotes a string for TOML (basic string). */
function toml(s: string): string {
  return JSON.stringify(s);
}

async function run(
  cmd: string,
  args: string[],
  opts: { stdin?: Uint8Array | string; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<CtrResult> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: opts.env,
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, opts.timeoutMs ?? 60_000);
  try {
    // Feed stdin while collecting output, so neither side can fill a pipe and stall.
    const feeding = (async () => {
      if (opts.stdin === undefined) return;
      const w = child.stdin.getWriter();
      try {
        await w.write(typeof opts.stdin === "string" ? encoder.encode(opts.stdin) : opts.stdin);
        await w.close();
      } catch { /* the child may exit without reading */ }
    })();
    const out = await child.output();
    await feeding;
    const stderr = decoder.decode(out.stderr) +
      (timedOut ? `\n[harness] ${cmd} killed after ${opts.timeoutMs ?? 60_000} ms\n` : "");
    return { code: out.code, stdout: decoder.decode(out.stdout), stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** Whether an overlay mount works with upper/work dirs inside `dir`. */
async function overlayWorks(dir: string): Promise<boolean> {
  const base = `${dir}/overlay-probe`;
  const parts = ["lower", "upper", "work", "merged"];
  try {
    for (const p of parts) await Deno.mkdir(`${base}/${p}`, { recursive: true });
    const r = await run("mount", [
      "-t",
      "overlay",
      "overlay",
      "-o",
      `lowerdir=${base}/lower,upperdir=${base}/upper,workdir=${base}/work`,
      `${base}/merged`,
    ], { timeoutMs: 10_000 });
    if (r.code !== 0) return false;
    await run("umount", [`${base}/merged`], { timeoutMs: 10_000 });
    return true;
  } finally {
    await Deno.remove(base, { recursive: true }).catch(() => {});
  }
}

/**
 * The CRI settings of a test (see {@linkcode ContainerdOptions.cri}); the harness writes
 * them where the running containerd's config version keeps them.
 */
export interface CriOptions {
  /** The pod sandbox (pause) image, already imported into `k8s.io`. */
  sandboxImage?: string;
  /** Where the CNI plugins are. */
  cniBinDir?: string;
  /** The CNI network config directory (the first conflist there is used). */
  cniConfDir?: string;
}

function configToml(o: {
  /** containerd's major version: 1.x reads config version 2, 2.x its own version 3. */
  major: number;
  dir: string;
  address: string;
  ttrpc: string;
  cri?: CriOptions;
  snapshotter: string;
  logLevel: string;
  extra: string;
}): string {
  const v3 = o.major >= 2;
  // containerd 2.x splits 1.x's CRI plugin (io.containerd.grpc.v1.cri) in three: the
  // gRPC service and its streaming server stay there, image settings move to
  // io.containerd.cri.v1.images and runtime/CNI settings to io.containerd.cri.v1.runtime.
  const grpc = `plugins."io.containerd.grpc.v1.cri"`;
  const images = v3 ? `plugins."io.containerd.cri.v1.images"` : grpc;
  const runtime = v3 ? `plugins."io.containerd.cri.v1.runtime"` : grpc;
  // Disabled: the CRI plugins unless asked for (2.x has four), and in 2.x NRI, on by
  // default there (off in 1.7, absent in 1.6), which would create /var/run/nri/nri.sock
  // on the node, shared by every containerd there.
  const disabled = v3
    ? ["io.containerd.nri.v1.nri"].concat(
      o.cri ? [] : [
        "io.containerd.grpc.v1.cri",
        "io.containerd.cri.v1.images",
        "io.containerd.cri.v1.runtime",
        "io.containerd.podsandbox.controller.v1.podsandbox",
      ],
    )
    : o.cri
    ? []
    : ["io.containerd.grpc.v1.cri"];
  const lines = [
    `version = ${v3 ? 3 : 2}`,
    `root = ${toml(`${o.dir}/root`)}`,
    `state = ${toml(`${o.dir}/state`)}`,
    // Go plugins are gone from 2.x (and plugin_dir with them).
    ...(v3 ? [] : [`plugin_dir = ${toml(`${o.dir}/plugins`)}`]),
    `disabled_plugins = [${disabled.map(toml).join(", ")}]`,
    "",
    "[grpc]",
    `  address = ${toml(o.address)}`,
    "",
    "[ttrpc]",
    `  address = ${toml(o.ttrpc)}`,
    "",
    "[debug]",
    `  level = ${toml(o.logLevel)}`,
    "",
    "[metrics]",
    `  address = ""`,
    "",
    // The opt plugin would otherwise create /opt/containerd.
    `[plugins."io.containerd.internal.v1.opt"]`,
    `  path = ${toml(`${o.dir}/opt`)}`,
  ];
  if (v3 && o.snapshotter !== "overlayfs") {
    // ctr 2.x imports through the transfer service, which unpacks only for the
    // platform/snapshotter pairs it lists (by default the default snapshotter's).
    const arch = Deno.build.arch === "aarch64" ? "arm64" : "amd64";
    lines.push(
      "",
      `[[plugins."io.containerd.transfer.v1.local".unpack_config]]`,
      `  platform = "linux/${arch}"`,
      `  snapshotter = ${toml(o.snapshotter)}`,
    );
  }
  if (o.cri) {
    const c = o.cri;
    // Keys per table, in order; in 1.x the three CRI tables are one (merged here: TOML
    // forbids a table twice).
    const tables = new Map<string, string[]>();
    const set = (table: string, ...kv: string[]) =>
      tables.set(table, [...(tables.get(table) ?? []), ...kv.map((l) => `  ${l}`)]);
    set(grpc, `stream_server_address = "127.0.0.1"`, `stream_server_port = "0"`);
    set(images, `snapshotter = ${toml(o.snapshotter)}`);
    // 1.x names the sandbox image in the CRI plugin, 2.x pins it in the images plugin.
    if (c.sandboxImage && !v3) set(grpc, `sandbox_image = ${toml(c.sandboxImage)}`);
    if (c.sandboxImage && v3) set(`${images}.pinned_images`, `sandbox = ${toml(c.sandboxImage)}`);
    set(
      runtime,
      // Network namespaces under containerd's state dir (the temp dir), not /var/run/netns.
      "netns_mounts_under_state_dir = true",
      "disable_apparmor = true",
      // Sandboxes ask for oom_score_adj -998; lowering it needs CAP_SYS_RESOURCE, which a
      // root in a container may lack: keep it at containerd's own value or above.
      "restrict_oom_score_adj = true",
    );
    if (c.cniBinDir) set(`${runtime}.cni`, `bin_dir = ${toml(c.cniBinDir)}`);
    if (c.cniConfDir) set(`${runtime}.cni`, `conf_dir = ${toml(c.cniConfDir)}`, "max_conf_num = 1");
    // 2.x takes the snapshotter from the images plugin only.
    if (!v3) set(`${runtime}.containerd`, `snapshotter = ${toml(o.snapshotter)}`);
    set(`${runtime}.containerd`, `default_runtime_name = "runc"`);
    set(`${runtime}.containerd.runtimes.runc`, `runtime_type = "io.containerd.runc.v2"`);
    set(`${runtime}.containerd.runtimes.runc.options`, `Root = ${toml(`${o.dir}/runc`)}`);
    set(`${runtime}.containerd.runtimes.wasmtime`, `runtime_type = "io.containerd.wasmtime.v1"`);
    for (const [table, kv] of tables) lines.push("", `[${table}]`, ...kv);
  }
  if (o.extra) lines.push("", o.extra);
  return lines.join("\n") + "\n";
}

/**
 * `containerd-shim-*` processes whose argv carries `address`, and launcher-form guest
 * runners whose permissions name a path in `address`'s directory (this containerd's
 * temp dir: its bundles and slots), never another harness's on a shared machine.
 */
async function shimProcesses(address: string): Promise<LeftoverProcess[]> {
  const dir = address.slice(0, address.lastIndexOf("/") + 1);
  const out: LeftoverProcess[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let raw: Uint8Array;
    try {
      raw = await Deno.readFile(`/proc/${e.name}/cmdline`);
    } catch {
      continue; // exited meanwhile
    }
    const cmdline = decoder.decode(raw).split("\0").filter((s) => s !== "");
    if (cmdline.length === 0) continue;
    const exe = cmdline[0].split("/").pop()!;
    // The launcher install form runs `deno … <app>/main.ts …` (the self-extracting
    // one from containerd-shim-wasmtime-<version>-<sha>/); guest runners carry the
    // action `guest` instead of containerd's address.
    const launcher = cmdline.some((a) => /\/containerd-shim-wasmtime(-[^/]+)?\/main\.ts$/.test(a));
    if (!exe.startsWith("containerd-shim") && !launcher) continue;
    const ours = launcher && cmdline.includes("guest") && cmdline.some((a) => a.includes(dir));
    if (!cmdline.includes(address) && !ours) continue;
    out.push({ pid: Number(e.name), cmdline });
  }
  return out.sort((a, b) => a.pid - b.pid);
}

/**
 * Sockets in use by the shim servers of *other* containerds (their `-address` is not
 * `address`): the shim socket directory is shared by every containerd on the machine,
 * so a containerd running beside the tests must not count as ours.
 */
async function foreignShimSockets(address: string): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let cmdline: string[];
    try {
      cmdline = decoder.decode(await Deno.readFile(`/proc/${e.name}/cmdline`)).split("\0");
    } catch {
      continue; // exited meanwhile
    }
    const at = cmdline.indexOf("-address");
    if (at < 0 || cmdline[at + 1] === undefined || cmdline[at + 1] === address) continue;
    for (const s of await boundSockets(Number(e.name))) out.add(s);
  }
  return out;
}

/** Names of the entries of `dir`, sorted; none if it does not exist. */
async function entries(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) names.push(`${dir}/${e.name}`);
  } catch {
    // no such directory
  }
  return names.sort();
}

/** Unescapes the octal escapes (`\040`) of /proc/self/mountinfo. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(parseInt(o, 8)));
}

async function mountsUnder(dir: string): Promise<string[]> {
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    if (fields.length < 5) continue;
    const mp = unescapeMount(fields[4]);
    if (mp === dir || mp.startsWith(`${dir}/`)) out.push(mp);
  }
  return out;
}

/** Unix socket paths a process has bound, via its fds and /proc/net/unix. */
async function boundSockets(pid: number): Promise<string[]> {
  const inodes = new Set<string>();
  try {
    for await (const fd of Deno.readDir(`/proc/${pid}/fd`)) {
      try {
        const m = /^socket:\[(\d+)\]$/.exec(await Deno.readLink(`/proc/${pid}/fd/${fd.name}`));
        if (m) inodes.add(m[1]);
      } catch { /* fd closed meanwhile */ }
    }
  } catch {
    return [];
  }
  const out: string[] = [];
  const table = await Deno.readTextFile("/proc/net/unix").catch(() => "");
  for (const line of table.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path
    if (f.length >= 8 && inodes.has(f[6]) && f[7].startsWith("/")) out.push(f[7]);
  }
  return out;
}

/** Cgroup directories of one namespace, one per controller hierarchy (cgroup v1 and v2). */
async function namespaceCgroups(namespace: string): Promise<string[]> {
  const out: string[] = [];
  const text = await Deno.readTextFile("/proc/self/mountinfo");
  for (const line of text.split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const fstype = line.slice(sep + 3).split(" ")[0];
    if (fstype !== "cgroup" && fstype !== "cgroup2") continue;
    const dir = `${unescapeMount(line.split(" ")[4])}/${namespace}`;
    if (await exists(dir)) out.push(dir);
  }
  return out;
}

/** Task cgroups left under a namespace's cgroup directories. */
async function taskCgroups(namespace: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await namespaceCgroups(namespace)) {
    try {
      for await (const e of Deno.readDir(dir)) if (e.isDirectory) out.push(`${dir}/${e.name}`);
    } catch { /* removed meanwhile */ }
  }
  return out.sort();
}

function pidAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT"); // harmless probe; throws ESRCH when gone
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts a private containerd and waits until `ctr version` answers through its
 * socket. Throws with the log tail if it does not come up, and with the Debian
 * package name if containerd or ctr is missing.
 */
export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  for (const [bin, what] of [[CONTAINERD_BIN, "containerd"], [CTR_BIN, "ctr"]]) {
    if (!(await exists(bin))) {
      throw new Error(
        CONTAINERD_DIR === "/usr/bin"
          ? `${what} not found at ${bin}: the e2e tests need Debian's containerd; ` +
            `install it with 'apt-get install -y containerd runc'`
          : `${what} not found at ${bin} (E2E_CONTAINERD=${Deno.env.get("E2E_CONTAINERD")}): ` +
            `run 'deno task setup:containerd-releases' as root to fetch it`,
      );
    }
  }
  if (Deno.uid() !== 0) {
    throw new Error(
      "the e2e harness must run as root: containerd needs to mount and create cgroups",
    );
  }
  const dir = await Deno.makeTempDir({ dir: opts.tmpRoot, prefix: "cd-e2e-" });
  const address = `${dir}/c.sock`;
  const ttrpcAddress = `${address}.ttrpc`;
  if (ttrpcAddress.length > 100) {
    await Deno.remove(dir, { recursive: true });
    throw new Error(
      `socket path ${ttrpcAddress} is too long for a unix socket: use a shorter tmpRoot`,
    );
  }
  const fifoDir = `${dir}/fifo`;
  const runcRoot = `${dir}/runc`;
  const logPath = `${dir}/containerd.log`;
  for (const d of [`${dir}/root`, `${dir}/state`, fifoDir, runcRoot]) {
    await Deno.mkdir(d, { recursive: true, mode: 0o711 });
  }
  let snapshotter: string = opts.snapshotter ?? "overlayfs";
  if (snapshotter === "overlayfs" && !(await overlayWorks(dir))) snapshotter = "native";
  await Deno.writeTextFile(
    `${dir}/config.toml`,
    configToml({
      dir,
      address,
      ttrpc: ttrpcAddress,
      major: (await containerdVersion()).major,
      cri: opts.cri === true ? {} : opts.cri || undefined,
      snapshotter,
      logLevel: opts.logLevel ?? "debug",
      extra: opts.extraConfig ?? "",
    }),
  );

  const startedAt = Date.now();
  const pathEnv = [
    opts.shimBinDir,
    // A caller that gives the PATH (a node without some tools) gets exactly that,
    // plus the directory of a containerd release other than the system's.
    opts.path !== undefined && CONTAINERD_DIR === "/usr/bin" ? "" : CONTAINERD_DIR,
    opts.path ?? Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
  ]
    .filter(Boolean).join(":");
  const log = await Deno.open(logPath, { write: true, create: true, append: true });
  const spawnContainerd = () => {
    const child = new Deno.Command(CONTAINERD_BIN, {
      args: ["--config", `${dir}/config.toml`],
      env: {
        // Warm-runner slots inside the temp dir (so leftovers are seen), and a short
        // idle period for the shared server, so that it is gone soon after a suite.
        WASMTIME_SHIM_SLOT_DIR: `${dir}/slots`,
        // Transpiled components and artifact blobs start empty for every containerd:
        // a test never depends on what an earlier run left in the node's cache.
        WASMTIME_SHIM_CACHE_DIR: `${dir}/cache`,
        // Native containers' runc state (`<runcRoot>/<namespace>/<id>`, where
        // killOrphanedTasks looks), not the host's /run/containerd/runc.
        WASMTIME_SHIM_RUNC_ROOT: runcRoot,
        WASMTIME_SHIM_IDLE_TIMEOUT_MS: "1000",
        ...opts.env,
        PATH: pathEnv,
      },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Drain both streams into the log file so containerd never blocks on a full pipe.
    for (const s of [child.stdout, child.stderr]) {
      drains.push((async () => {
        for await (const chunk of s) await log.write(chunk).catch(() => 0);
      })());
    }
    return child;
  };
  const drains: Promise<void>[] = [];
  let proc = spawnContainerd();
  let exited: Deno.CommandStatus | undefined;
  let statusPromise = proc.status.then((s) => (exited = s));

  const ctrEnv = { CONTAINERD_SNAPSHOTTER: snapshotter };
  const baseArgs = ["--address", address, "--namespace", TEST_NAMESPACE];
  let stopped: Promise<Leftovers> | undefined;

  const cleanupDir = async () => {
    for (const mp of (await mountsUnder(dir)).reverse()) {
      await run("umount", ["-R", mp], { timeoutMs: 10_000 });
      if (await mountsUnder(mp).then((m) => m.length > 0)) {
        await run("umount", ["-R", "-l", mp], { timeoutMs: 10_000 });
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };

  // Tasks whose shim was killed keep running (runc containers survive their shim): kill
  // them through runc's state, then whatever is still in their cgroups.
  const killOrphanedTasks = async () => {
    const taskDir = `${dir}/state/io.containerd.runtime.v2.task/${TEST_NAMESPACE}`;
    let ids: string[] = [];
    try {
      ids = (await Array.fromAsync(Deno.readDir(taskDir))).map((e) => e.name);
    } catch { /* no tasks were ever created */ }
    for (const id of ids) {
      if (await exists(`${runcRoot}/${TEST_NAMESPACE}/${id}`)) {
        await run("runc", ["--root", `${runcRoot}/${TEST_NAMESPACE}`, "delete", "--force", id], {
          timeoutMs: 10_000,
        });
      }
      const groups = (await namespaceCgroups(TEST_NAMESPACE)).map((g) => `${g}/${id}`);
      for (let attempt = 0; attempt < 20; attempt++) {
        let alive = 0;
        for (const g of groups) {
          const procs = await Deno.readTextFile(`${g}/cgroup.procs`).catch(() => "");
          for (const pid of procs.split("\n").filter(Boolean)) {
            alive++;
            try {
              Deno.kill(Number(pid), "SIGKILL");
            } catch { /* gone */ }
          }
        }
        if (alive === 0) break;
        await sleep(100);
      }
      for (const g of groups) await Deno.remove(g).catch(() => {});
    }
    // Any container runc still knows under the harness's root, in any namespace (native
    // containers of the wasm shim keep their state there too, WASMTIME_SHIM_RUNC_ROOT),
    // even when containerd has forgotten its task.
    for (const root of await entries(runcRoot)) {
      for (const state of await entries(root)) {
        const id = state.slice(root.length + 1);
        await run("runc", ["--root", root, "delete", "--force", id], { timeoutMs: 10_000 });
      }
    }
  };

  const withInjectedFlags = (args: string[]): string[] => {
    const has = (flag: string) => args.some((a) => a === flag || a.startsWith(`${flag}=`));
    let at = -1;
    const extra: string[] = [];
    if (args[0] === "run") {
      at = 1;
      if (!has("--runc-root")) extra.push("--runc-root", runcRoot);
    } else if (["task", "tasks", "t"].includes(args[0]) && ["start", "exec"].includes(args[1])) {
      at = 2;
    }
    if (at < 0) return args;
    if (!has("--fifo-dir")) extra.push("--fifo-dir", fifoDir);
    return [...args.slice(0, at), ...extra, ...args.slice(at)];
  };

  const ctr = (args: string[], o: CtrOptions = {}) =>
    run(CTR_BIN, [
      "--address",
      address,
      "--namespace",
      o.namespace ?? TEST_NAMESPACE,
      ...(o.raw ? args : withInjectedFlags(args)),
    ], {
      stdin: o.stdin,
      timeoutMs: o.timeoutMs,
      env: { ...ctrEnv, ...o.env },
    });

  const leftovers = async (): Promise<Leftovers> => {
    const born: string[] = [];
    try {
      for await (const e of Deno.readDir(SHIM_SOCKET_DIR)) {
        const p = `${SHIM_SOCKET_DIR}/${e.name}`;
        try {
          const st = await Deno.lstat(p);
          const at = st.birthtime ?? st.ctime ?? st.mtime;
          if (at && at.getTime() >= startedAt - 50) born.push(p);
        } catch { /* removed meanwhile */ }
      }
    } catch { /* no socket dir: nothing left */ }
    // Only sockets born during this run can be ours: scan /proc for other containerds'
    // shims just when there are some (the callers poll this).
    const foreign = born.length > 0 ? await foreignShimSockets(address) : new Set<string>();
    return {
      mounts: await mountsUnder(dir),
      sockets: born.filter((p) => !foreign.has(p)).sort(),
      processes: await shimProcesses(address),
      cgroups: await taskCgroups(TEST_NAMESPACE),
      slots: await entries(`${dir}/slots`),
    };
  };

  const stop = (): Promise<Leftovers> => {
    if (stopped) {
      return stopped.then(() => ({
        mounts: [],
        sockets: [],
        processes: [],
        cgroups: [],
        slots: [],
      }));
    }
    stopped = (async () => {
      if (!exited) {
        // Best effort: remove what tests left, so shims get a clean shutdown.
        const tasks = await ctr(["task", "ls", "-q"], { timeoutMs: 10_000 });
        for (const id of tasks.stdout.split("\n").filter(Boolean)) {
          await ctr(["task", "kill", "-s", "SIGKILL", id], { timeoutMs: 5_000 });
          await ctr(["task", "delete", "-f", id], { timeoutMs: 10_000 });
        }
        const ctrs = await ctr(["container", "ls", "-q"], { timeoutMs: 10_000 });
        for (const id of ctrs.stdout.split("\n").filter(Boolean)) {
          await ctr(["container", "delete", id], { timeoutMs: 10_000 });
        }
      }
      // Give shims that were just told to shut down a moment to exit.
      for (let i = 0; !exited && i < 30 && (await shimProcesses(address)).length > 0; i++) {
        await sleep(100);
      }
      const before = await leftovers();
      if (!exited) {
        try {
          proc.kill("SIGTERM");
        } catch { /* gone */ }
        const done = await Promise.race([statusPromise, sleep(5_000).then(() => undefined)]);
        if (!done) {
          try {
            proc.kill("SIGKILL");
          } catch { /* gone */ }
        }
      }
      await statusPromise;
      await Promise.allSettled(drains);
      log.close();
      // Shims outlive containerd by design; end ours and remove their sockets.
      for (const p of await shimProcesses(address)) {
        for (const s of await boundSockets(p.pid)) {
          if (s.startsWith(`${SHIM_SOCKET_DIR}/`)) await Deno.remove(s).catch(() => {});
        }
        try {
          Deno.kill(p.pid, "SIGKILL");
        } catch { /* gone */ }
      }
      for (let i = 0; i < 50 && (await shimProcesses(address)).some((p) => pidAlive(p.pid)); i++) {
        await sleep(100);
      }
      await killOrphanedTasks();
      await cleanupDir();
      // runc removes a task's cgroup but not the namespace's parent; remove it if empty
      // (it fails harmlessly while another harness still has tasks there).
      for (const dir of await namespaceCgroups(TEST_NAMESPACE)) {
        await Deno.remove(dir).catch(() => {});
      }
      return before;
    })();
    return stopped;
  };

  const waitUntilAnswering = async () => {
    const deadline = Date.now() + (opts.startTimeoutMs ?? 20_000);
    for (;;) {
      if (exited) {
        const text = await Deno.readTextFile(logPath).catch(() => "");
        await Promise.allSettled(drains);
        log.close();
        await cleanupDir();
        throw new Error(
          `containerd exited with code ${exited.code} before answering; log tail:\n` +
            text.split("\n").slice(-30).join("\n"),
        );
      }
      if (await exists(address)) {
        const v = await run(CTR_BIN, [...baseArgs, "version"], { timeoutMs: 5_000 });
        if (v.code === 0) break;
      }
      if (Date.now() > deadline) {
        const text = await Deno.readTextFile(logPath).catch(() => "");
        await stop();
        throw new Error(
          `containerd did not answer 'ctr version' within ${opts.startTimeoutMs ?? 20_000} ms; ` +
            `log tail:\n${text.split("\n").slice(-30).join("\n")}`,
        );
      }
      await sleep(50);
    }
  };
  await waitUntilAnswering();

  /** Kills containerd with SIGKILL and starts it again on the same root, state and sockets. */
  const restart = async () => {
    if (exited === undefined) {
      try {
        proc.kill("SIGKILL");
      } catch { /* gone */ }
      await statusPromise;
    }
    exited = undefined;
    proc = spawnContainerd();
    statusPromise = proc.status.then((s) => (exited = s));
    await waitUntilAnswering();
  };

  return {
    dir,
    address,
    ttrpcAddress,
    namespace: TEST_NAMESPACE,
    snapshotter,
    get pid() {
      return proc.pid;
    },
    restart,
    fifoDir,
    runcRoot,
    ctr,
    async importImage(tarPath: string, o: ImportOptions = {}) {
      const args = ["image", "import", "--all-platforms"];
      if (o.noUnpack) args.push("--no-unpack");
      if (o.platform) args.push("--platform", o.platform);
      args.push(tarPath);
      const r = await ctr(args, { timeoutMs: o.timeoutMs ?? 120_000, namespace: o.namespace });
      if (r.code !== 0) {
        throw new Error(`ctr ${args.join(" ")} failed (exit ${r.code}): ${r.stderr.trim()}`);
      }
      return r;
    },
    logs: () => Deno.readTextFile(logPath).catch(() => ""),
    leftovers,
    stop,
  };
}
