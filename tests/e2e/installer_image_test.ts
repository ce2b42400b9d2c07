/**
 * The installer image (scripts/installer_image.ts) as Kubernetes runs it: built twice
 * (the same bytes), imported into a private containerd and run there as a native,
 * privileged container (runc) with the node's paths of a temp "node root" mounted as
 * deploy/daemonset.yaml mounts them, its env, and a fake `nsenter` that logs what it
 * is asked (the node's systemctl is not touched). Checked: the shim is installed into
 * the node root, containerd's config there gets the runtime, containerd is restarted
 * once, SIGTERM ends the pod with 0, a second pod changes nothing; and the installed
 * shim then runs a wasm container under a second private containerd.
 */

import assert from "node:assert/strict";
import { buildImage } from "../../src/oci/image.ts";
import { buildInstallerImage, type InstallerImage } from "../../scripts/installer_image.ts";
import { buildRelease } from "../../scripts/release.ts";
import { CONTAINERD_BIN, startContainerd } from "./harness.ts";
import { fixture } from "./shim_install.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const tmp = await Deno.makeTempDir({ prefix: "shim-installer-image-" });
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(tmp, { recursive: true });
  } catch { /* already gone */ }
});

let images: Promise<[InstallerImage, InstallerImage]> | undefined;
/** The image, built twice from one release (the release's own reproducibility is release_test's). */
function built(): Promise<[InstallerImage, InstallerImage]> {
  images ??= (async () => {
    const release = await buildRelease({ outDir: `${tmp}/dist`, form: "launcher", log: () => {} });
    const debs = Deno.env.get("INSTALLER_DEBS"); // else apt-get download
    const one = (n: number) =>
      buildInstallerImage({
        release: release.tarball,
        debs,
        out: `${tmp}/image${n}.tar`,
        log: () => {},
      });
    return [await one(1), await one(2)];
  })();
  return images;
}

Deno.test("the installer image is the same bytes when built twice", opts, async () => {
  const [a, b] = await built();
  assert.equal(a.digest, b.digest);
  assert.deepEqual(await Deno.readFile(a.path), await Deno.readFile(b.path));
  console.log(`installer image ${a.reference}: ${a.size} bytes, manifest ${a.digest}`);
});

/** The DaemonSet's env (deploy/daemonset.yaml), for this node root. */
function daemonSetEnv(prefix: string): string[] {
  return [
    `PREFIX=${prefix}`,
    "WASMTIME_SHIM_PRESET=auto",
    "CONTAINERD=nsenter -t 1 -m -- containerd",
    "SYSTEMCTL=nsenter -t 1 -m -u -i -n -p -- systemctl",
    "NODE_NAME=node-1",
    // The fake nsenter first on PATH (the image's PATH is /bin).
    "PATH=/fake:/bin",
  ];
}

Deno.test(
  "the installer image installs, configures and restarts once, as a DaemonSet pod; the shim then runs wasm",
  opts,
  async () => {
    const [image] = await built();
    const node = `${tmp}/node`;
    // The node: its prefix, its containerd config dir, a log of what reached its host.
    // The prefix is mounted at its own path, as the DaemonSet does (the launcher names
    // absolute paths): here the node's /usr/local is <node>/usr/local.
    const prefix = `${node}/usr/local`;
    const etc = `${node}/etc/containerd`;
    for (const d of [prefix, etc, `${node}/fake`, `${node}/log`]) {
      await Deno.mkdir(d, {
        recursive: true,
      });
    }
    await Deno.writeTextFile(`${etc}/config.toml`, "version = 2\n");
    // `nsenter -t 1 …`: logged; containerd (Debian's, with the image's glibc) checks the
    // config in the container's mount namespace, whose /etc/containerd is the node's;
    // systemctl knows the unit containerd and restarts nothing.
    await Deno.writeTextFile(
      `${node}/fake/nsenter`,
      `#!/bin/sh
echo "$*" >> /log/nsenter.log
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift
case "$1" in
  containerd) shift; exec /fake/containerd "$@" ;;
  systemctl) [ "$2" = cat ] && [ "$3" != containerd.service ] && exit 1; exit 0 ;;
  *) echo "fake nsenter: unexpected $*" >&2; exit 1 ;;
esac
`,
    );
    await Deno.chmod(`${node}/fake/nsenter`, 0o755);
    await Deno.copyFile(CONTAINERD_BIN, `${node}/fake/containerd`);

    const cd = await startContainerd();
    try {
      await cd.importImage(image.path);
      const runPod = async (id: string) => {
        const log = `${node}/log/${id}.log`;
        const pod = cd.ctr([
          "run",
          "--rm",
          "--privileged",
          "--runtime",
          "io.containerd.runc.v2",
          "--log-uri",
          `file://${log}`,
          "--mount",
          `type=bind,src=${prefix},dst=${prefix},options=rbind:rw`,
          "--mount",
          `type=bind,src=${etc},dst=/etc/containerd,options=rbind:rw`,
          "--mount",
          `type=bind,src=${node}/fake,dst=/fake,options=rbind:ro`,
          "--mount",
          `type=bind,src=${node}/log,dst=/log,options=rbind:rw`,
          ...daemonSetEnv(prefix).flatMap((e) => ["--env", e]),
          image.reference,
          id,
        ], { timeoutMs: 300_000 });
        let ended = false;
        pod.finally(() => ended = true);
        const read = () => Deno.readTextFile(log).catch(() => "");
        const deadline = Date.now() + 240_000;
        while (!ended && !(await read()).includes("installer: done; sleeping")) {
          assert.ok(Date.now() < deadline, `the pod did not finish installing:\n${await read()}`);
          await new Promise((r) => setTimeout(r, 200));
        }
        if (!ended) await cd.ctr(["task", "kill", "-s", "SIGTERM", id]);
        const r = await pod;
        const output = await read();
        assert.equal(r.code, 0, `pod ${id} exited ${r.code}: ${r.stderr}\n${output}`);
        return output;
      };

      const first = await runPod("installer-1");
      assert.match(first, /node preset: containerd/);
      assert.match(first, /added the runtime wasmtime/);
      assert.match(first, /restarting containerd/);
      const config = await Deno.readTextFile(`${etc}/config.toml`);
      assert.match(
        config,
        /\[plugins\."io\.containerd\.grpc\.v1\.cri"\.containerd\.runtimes\.wasmtime\]/,
      );
      const restarts = async () =>
        (await Deno.readTextFile(`${node}/log/nsenter.log`)).split("\n")
          .filter((l) => / -- systemctl restart containerd$/.test(l)).length;
      assert.equal(await restarts(), 1);
      await Deno.stat(`${prefix}/bin/containerd-shim-wasmtime-v1`);

      const second = await runPod("installer-2");
      assert.match(second, /unchanged: containerd not restarted/);
      assert.equal(await restarts(), 1);
      assert.equal(await Deno.readTextFile(`${etc}/config.toml`), config);
    } finally {
      await cd.stop();
    }

    // The installed shim, on a node containerd's PATH, runs a wasm container.
    const node2 = await startContainerd({ shimBinDir: `${prefix}/bin` });
    try {
      const probe = await buildImage({
        name: "installer-probe",
        tag: "e2e",
        outPath: `${node2.dir}/probe.tar`,
        config: { entrypoint: ["/probe.wasm"] },
        layers: [{ files: [{ path: "/probe.wasm", hostPath: fixture("probe.wasm") }] }],
      });
      await node2.importImage(probe.path);
      const r = await node2.ctr([
        "run",
        "--rm",
        "--runtime",
        "io.containerd.wasmtime.v1",
        probe.reference,
        "probe-1",
        "/probe.wasm",
        "hello",
      ], { timeoutMs: 60_000 });
      assert.equal(r.code, 0, `${r.stderr}\n${(await node2.logs()).slice(-3000)}`);
      assert.match(r.stdout, /hello/);
    } finally {
      await node2.stop();
    }
  },
);
