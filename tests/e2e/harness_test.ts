import assert from "node:assert/strict";
import { main as ociTarBuilder } from "../../src/oci/builder_cli.ts";
import { buildImage, MediaType } from "../../src/oci/image.ts";
import { type Containerd, containerdVersion, type Leftovers, startContainerd } from "./harness.ts";
import { exists } from "./ctr_util.ts";

const FIXTURES = new URL("../fixtures/built/", import.meta.url).pathname;
const NONE: Leftovers = { mounts: [], sockets: [], processes: [], cgroups: [], slots: [] };
/** System paths a private containerd must not create. */
const SYSTEM_PATHS = [
  "/opt/containerd",
  "/var/lib/containerd",
  "/run/containerd/runc",
  "/run/containerd/fifo",
];

/** Runs the CLI with its console output silenced; returns the exit code. */
async function cli(args: string[]): Promise<number> {
  const { log, error } = console;
  const lines: string[] = [];
  console.log = console.error = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    const code = await ociTarBuilder(args);
    if (code !== 0) {
      throw new Error(`oci-tar-builder ${args.join(" ")} failed:\n${lines.join("\n")}`);
    }
    return code;
  } finally {
    console.log = log;
    console.error = error;
  }
}

function ok(r: { code: number; stdout: string; stderr: string }, what: string) {
  assert.equal(r.code, 0, `${what} failed (exit ${r.code}):\n${r.stdout}${r.stderr}`);
  return r;
}

Deno.test({
  name:
    "harness: private containerd runs a native image with runc, imports wasm images, leaves nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const preexisting = new Map(
      await Promise.all(SYSTEM_PATHS.map(async (p) => [p, await exists(p)] as const)),
    );
    const work = await Deno.makeTempDir({ prefix: "harness-test-" });
    let cd: Containerd | undefined;
    try {
      cd = await startContainerd({ shimBinDir: work });
      assert.ok(["overlayfs", "native"].includes(cd.snapshotter));
      const version = ok(await cd.ctr(["version"]), "ctr version");
      // The release E2E_CONTAINERD picks (Debian 12's 1.6 by default) answers.
      const { major, minor } = await containerdVersion();
      assert.match(version.stdout, new RegExp(`Server:\\s+Version:\\s+v?${major}\\.${minor}\\.`));
      const cfg = await Deno.readTextFile(`${cd.dir}/config.toml`);
      assert.match(cfg, /disabled_plugins = \[[^\]]*"io.containerd.grpc.v1.cri"/);
      assert.ok(cfg.includes(`root = "${cd.dir}/root"`));

      // Native baseline: an image built with the library, run by runc.
      const native = await buildImage({
        name: "native-hello",
        repo: "test.local/e2e",
        outPath: `${work}/native.tar`,
        config: { os: "linux", architecture: "amd64", entrypoint: ["/native_hello"] },
        layers: [{
          files: [{ path: "/native_hello", hostPath: `${FIXTURES}/native_hello`, mode: 0o755 }],
        }],
      });
      await cd.importImage(native.path);
      const run = ok(
        await cd.ctr([
          "run",
          "--rm",
          "--runtime",
          "io.containerd.runc.v2",
          native.reference,
          "native-1",
        ]),
        "ctr run native",
      );
      assert.equal(run.stdout, "hello from native\n");

      // A wasm image from the CLI: imports (and unpacks: ctr 1.6 unpacks a top-level
      // manifest whatever its platform) and is listed with its platform.
      assert.equal(
        await cli([
          "-n",
          "probe",
          "-r",
          "test.local/e2e",
          "-m",
          `${FIXTURES}/probe.wasm`,
          "-o",
          work,
        ]),
        0,
      );
      await cd.importImage(`${work}/probe.tar`);
      const images = ok(await cd.ctr(["image", "ls"]), "ctr image ls");
      assert.match(images.stdout, /^test\.local\/e2e\/probe:latest\s.*wasip1\/wasm/m);
      assert.match(images.stdout, /^test\.local\/e2e\/native-hello:latest\s.*linux\/amd64/m);
      ok(await cd.ctr(["image", "check"]), "ctr image check");

      // A wasm artifact: ctr 1.6 imports it only with --no-unpack (its config has no
      // rootfs, so unpacking fails with "mismatched image rootfs and manifest layers").
      assert.equal(
        await cli([
          "-n",
          "probe-art",
          "-r",
          "test.local/e2e",
          "-a",
          "-m",
          `${FIXTURES}/probe.wasm`,
          "-o",
          work,
        ]),
        0,
      );
      if (major === 1 && minor < 7) {
        // 1.6 cannot unpack an image without tar layers; 1.7.7+ skips the Wasm layers.
        await assert.rejects(
          cd.importImage(`${work}/probe-art.tar`),
          /mismatched image rootfs and manifest layers/,
        );
      }
      await cd.importImage(`${work}/probe-art.tar`, { noUnpack: true });
      const art = ok(
        await cd.ctr(["image", "ls", "name==test.local/e2e/probe-art:latest"]),
        "ctr image ls",
      );
      assert.ok(art.stdout.includes("test.local/e2e/probe-art:latest"), art.stdout);
      const content = ok(await cd.ctr(["content", "ls"]), "ctr content ls");
      assert.ok(
        content.stdout.includes(MediaType.wasmConfig) || content.stdout.includes("sha256:"),
      );

      // Raw wasm layers in a regular image (runwasi's --components form; its diff_ids
      // list no layer): 1.6 unpacks every manifest layer, so only a --no-unpack import
      // works there; 1.7.7+ unpacks the tar layers (none) and skips the Wasm ones.
      await Deno.mkdir(`${work}/components`);
      await Deno.copyFile(`${FIXTURES}/greet.wasm`, `${work}/components/greet.wasm`);
      assert.equal(await cli(["-n", "comps", "-c", `${work}/components`, "-o", work]), 0);
      if (major === 1 && minor < 7) {
        await assert.rejects(
          cd.importImage(`${work}/comps.tar`),
          /mismatched image rootfs and manifest layers/,
        );
        await cd.importImage(`${work}/comps.tar`, { noUnpack: true });
      } else {
        await cd.importImage(`${work}/comps.tar`);
      }

      // ctr run got --fifo-dir and --runc-root inside the temp dir: nothing in /run/containerd.
      assert.deepEqual(await cd.leftovers(), NONE);
      assert.match(await cd.logs(), /containerd successfully booted/);

      // A task left running is removed by stop(), and its shim exits cleanly.
      const sleeper = await buildImage({
        name: "native-sleep",
        repo: "test.local/e2e",
        outPath: `${work}/sleep.tar`,
        config: { os: "linux", architecture: "amd64", entrypoint: ["/native_sleep"] },
        layers: [{
          files: [{ path: "/native_sleep", hostPath: `${FIXTURES}/native_sleep`, mode: 0o755 }],
        }],
      });
      await cd.importImage(sleeper.path);
      ok(await cd.ctr(["run", "-d", sleeper.reference, "sleeper-1"]), "ctr run -d");
      const during = await cd.leftovers();
      assert.equal(during.processes.length, 1, JSON.stringify(during));
      assert.match(during.processes[0].cmdline[0], /containerd-shim-runc-v2$/);
      assert.ok(
        during.mounts.length >= 1,
        "the running task's rootfs is mounted under the temp dir",
      );
      assert.equal(
        during.sockets.length,
        await runcShimSockets(),
        `the runc shim's socket: ${JSON.stringify(during.sockets)}`,
      );
      for (const s of during.sockets) assert.match(s, /^\/run\/containerd\/s\/[0-9a-f]{64}$/);
      assert.ok(
        during.cgroups.some((c) => c.endsWith("/sleeper-1")),
        JSON.stringify(during.cgroups),
      );

      const dir = cd.dir;
      const pid = cd.pid;
      assert.deepEqual(await cd.stop(), NONE);
      assert.deepEqual(await cd.stop(), NONE, "a second stop is a no-op");
      assert.ok(!(await exists(dir)), "temp dir removed");
      assert.ok(
        !(await exists(`/proc/${pid}`)) ||
          !(await Deno.readTextFile(`/proc/${pid}/cmdline`)).includes(dir),
      );
      const mounts = await Deno.readTextFile("/proc/self/mountinfo");
      assert.ok(!mounts.includes(dir), "no mounts left under the temp dir");
      assert.deepEqual(await cd.leftovers(), NONE);
      for (const p of SYSTEM_PATHS) {
        if (!preexisting.get(p)) assert.ok(!(await exists(p)), `${p} was created`);
      }
    } finally {
      await cd?.stop();
      await Deno.remove(work, { recursive: true });
    }
  },
});

/** Pids whose argv[0] is `arg0`. */
/**
 * Sockets of one running runc shim: containerd 2.x's also serves a debug socket when
 * it runs with `-debug` (the harness's default log level passes it).
 */
async function runcShimSockets(): Promise<number> {
  return (await containerdVersion()).major >= 2 ? 2 : 1;
}

async function pidsOf(arg0: string): Promise<number[]> {
  const out: number[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    if (cmd.split("\0")[0] === arg0) out.push(Number(e.name));
  }
  return out;
}

Deno.test({
  name: "harness: stop force-cleans after containerd died with a task running",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const work = await Deno.makeTempDir({ prefix: "harness-test-" });
    const cd = await startContainerd();
    try {
      const sleeper = await buildImage({
        name: "native-sleep",
        outPath: `${work}/sleep.tar`,
        config: { os: "linux", architecture: "amd64", entrypoint: ["/native_sleep"] },
        layers: [{
          files: [{ path: "/native_sleep", hostPath: `${FIXTURES}/native_sleep`, mode: 0o755 }],
        }],
      });
      await cd.importImage(sleeper.path);
      ok(await cd.ctr(["run", "-d", sleeper.reference, "orphan-1"]), "ctr run -d");
      assert.equal((await pidsOf("/native_sleep")).length, 1);
      Deno.kill(cd.pid, "SIGKILL");
      await new Promise((r) => setTimeout(r, 200));
      const before = await cd.stop();
      assert.equal(before.processes.length, 1, "the orphaned runc shim is reported");
      assert.equal(before.sockets.length, await runcShimSockets(), "with its socket");
      assert.ok(before.mounts.length >= 1, "and the task's rootfs mount");
      assert.ok(!(await exists(cd.dir)));
      assert.deepEqual(await pidsOf("/native_sleep"), [], "the container process was killed");
      for (const s of before.sockets) assert.ok(!(await exists(s)), `${s} removed`);
      assert.ok(!(await Deno.readTextFile("/proc/self/mountinfo")).includes(cd.dir));
    } finally {
      await cd.stop();
      await Deno.remove(work, { recursive: true });
    }
  },
});

Deno.test({
  name: "harness: ctr stdin and timeouts; opts.cri keeps the CRI plugin; native snapshotter",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const cd = await startContainerd({ cri: true, snapshotter: "native" });
    try {
      assert.equal(cd.snapshotter, "native");
      const plugins = ok(await cd.ctr(["plugins", "ls"]), "ctr plugins ls");
      assert.match(plugins.stdout, /io\.containerd\.grpc\.v1\s+cri\s+\S+\s+ok/);
      // `ctr image import -` reads the archive from stdin.
      const img = await buildImage({
        name: "stdin-import",
        outPath: `${cd.dir}/img.tar`,
        config: { os: "linux", architecture: "amd64" },
        layers: [{ files: [{ path: "/f", data: "f" }] }],
      });
      const r = await cd.ctr(["image", "import", "--platform", "linux/amd64", "-"], {
        stdin: await Deno.readFile(img.path),
      });
      ok(r, "ctr image import -");
      assert.match(ok(await cd.ctr(["image", "ls", "-q"]), "ls").stdout, /^stdin-import:latest$/m);
      // ctr picks the harness's snapshotter (CONTAINERD_SNAPSHOTTER) for unpack and run.
      const native = await buildImage({
        name: "native-hello",
        outPath: `${cd.dir}/native.tar`,
        config: { os: "linux", architecture: "amd64", entrypoint: ["/native_hello"] },
        layers: [{ files: [{ path: "/native_hello", hostPath: `${FIXTURES}/native_hello` }] }],
      });
      await cd.importImage(native.path);
      const run = ok(await cd.ctr(["run", "--rm", native.reference, "native-2"]), "ctr run");
      assert.equal(run.stdout, "hello from native\n");
      const snaps = ok(await cd.ctr(["snapshot", "--snapshotter", "native", "ls"]), "ls");
      assert.ok(snaps.stdout.split("\n").length > 2, snaps.stdout);
      const slow = await cd.ctr(["events"], { timeoutMs: 300 });
      assert.equal(slow.code, 137);
      assert.match(slow.stderr, /killed after 300 ms/);
    } finally {
      assert.deepEqual(await cd.stop(), NONE);
    }
  },
});

Deno.test({
  name: "harness: startContainerd reports a containerd that cannot start",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await assert.rejects(
      startContainerd({ extraConfig: "this is = = not toml", startTimeoutMs: 10_000 }),
      /containerd exited with code \d+ before answering; log tail:/,
    );
  },
});
