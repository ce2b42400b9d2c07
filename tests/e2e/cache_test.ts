/**
 * End to end: the bounded cache (`WASMTIME_SHIM_CACHE_MAX_BYTES`) under a real,
 * private containerd. Several Wasm OCI artifacts of distinct components (each a
 * blob in the shim's blob cache plus a transpiled entry) fill the cache past a small
 * cap while their containers start concurrently: every container runs (no entry was
 * taken from under a Create), the cap holds once they are done, and an image removed
 * from containerd (`ctr images rm --sync`: its content is collected) loses its
 * entries at the next sweep.
 *
 * Containers are created through containerd's gRPC API (containerd 1.6 cannot unpack
 * artifacts, see artifact_test.ts) and run with `ctr task start`.
 */

import assert from "node:assert/strict";
import { buildImage, MediaType } from "../../src/oci/image.ts";
import { ContainerdClient, SPEC_TYPE_URL } from "../../src/image/containerd/client.ts";
import { listFiles } from "../../src/sys/cache_files.ts";
import { CacheJanitor } from "../../src/image/cache_janitor.ts";
import { startContainerd } from "./harness.ts";
import { installShim } from "./shim_install.ts";
import { assertNothingLeft, waitFor } from "./ctr_util.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const COMPONENT = new URL("../../src/wasm/component/testdata/command.wasm", import.meta.url)
  .pathname;
/**
 * The cap: an image here costs ~10 KB (a 4.3 KB layer, its 4.4 KB transpiled entry,
 * its manifest and config), so the cap holds two and the four started at once exceed it.
 */
const CAP = 24 << 10;
const opts = { sanitizeOps: false, sanitizeResources: false };

/** The component with a custom section appended: the same program under a new digest. */
function distinct(bytes: Uint8Array, tag: string): Uint8Array {
  const name = new TextEncoder().encode(tag);
  const out = new Uint8Array(bytes.length + 3 + name.length);
  out.set(bytes);
  out.set([0x00, name.length + 1, name.length, ...name], bytes.length);
  return out;
}

Deno.test({
  name:
    "cache: past a small cap, concurrent containers all run, the cap holds, a removed image's entries go",
  ...opts,
  async fn() {
    const { binDir } = await installShim();
    const tmp = await Deno.makeTempDir({ prefix: "shim-e2e-cache-" });
    const cacheDir = `${tmp}/cache`;
    const cd = await startContainerd({
      shimBinDir: binDir,
      env: {
        WASMTIME_SHIM_CACHE_DIR: cacheDir,
        WASMTIME_SHIM_CACHE_MAX_BYTES: String(CAP),
        // A sweep after every Create, so that the removal below is seen at once.
        WASMTIME_SHIM_CACHE_SWEEP_INTERVAL_MS: "0",
      },
    });
    const client = await ContainerdClient.connect({ address: cd.address, namespace: cd.namespace });
    const bytes = await Deno.readFile(COMPONENT);
    let seq = 0;

    const importImage = async () => {
      const name = `cache${++seq}`;
      const built = await buildImage({
        name,
        repo: "example.com/e2e",
        tag: "v1",
        outPath: `${tmp}/${name}.tar`,
        asArtifact: true,
        layers: [{
          mediaType: MediaType.wasmComponentLayer,
          data: distinct(bytes, name),
          annotations: { "org.opencontainers.image.title": "command.wasm" },
        }],
      });
      const r = await cd.importImage(built.path, { noUnpack: true });
      assert.equal(r.code, 0, r.stderr);
      return { ref: built.reference, hex: built.layers[0].digest.slice("sha256:".length) };
    };

    const run = async (image: string) => {
      const id = `cache-${++seq}`;
      await client.createContainer({
        id,
        image,
        runtime: { name: RUNTIME },
        spec: {
          type_url: SPEC_TYPE_URL,
          value: new TextEncoder().encode(JSON.stringify({
            ociVersion: "1.0.2-dev",
            process: {
              terminal: false,
              user: { uid: 0, gid: 0 },
              args: ["/command.wasm"],
              cwd: "/",
            },
            root: { path: "rootfs" },
            linux: { namespaces: [] },
          })),
        },
        snapshotter: cd.snapshotter,
        snapshot_key: "",
      });
      try {
        return await cd.ctr(["task", "start", id], { stdin: "", timeoutMs: 60_000 });
      } finally {
        await cd.ctr(["task", "delete", "-f", id], { timeoutMs: 20_000 });
        await client.deleteContainer(id);
      }
    };

    /** The files of the cache (entries only), and their total size. */
    const cached = async () => {
      const files = [
        ...await listFiles(`${cacheDir}/components`),
        ...await listFiles(`${cacheDir}/blobs`),
      ];
      return { names: files.map((f) => f.path), bytes: files.reduce((n, f) => n + f.size, 0) };
    };
    const entriesOf = async (hex: string) => (await cached()).names.filter((n) => n.includes(hex));

    try {
      const images = await Promise.all([1, 2, 3, 4].map(() => importImage()));
      // Four containers of four images at once: more than the cap holds.
      const runs = await Promise.all(images.map((img) => run(img.ref)));
      for (const r of runs) {
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "hello from a wasi:cli command\n");
      }
      // Eviction runs after each Create, in the background: the cap holds once it is done.
      await waitFor(`the cap of ${CAP} to hold`, async () => (await cached()).bytes <= CAP);
      // Each image had its layer and its component entry: some of them were evicted.
      let whole = 0;
      for (const img of images) if ((await entriesOf(img.hex)).length === 2) whole++;
      assert.ok(whole < images.length, "nothing was evicted");
      // An evicted image runs again (read again from containerd, transpiled again).
      const again = await run(images[0].ref);
      assert.equal(again.code, 0, again.stderr);

      // Removing an image from containerd removes its entries at the next sweep (after
      // the next Create). The image used last is certainly cached.
      const removed = images[0];
      assert.ok((await entriesOf(removed.hex)).length >= 2, "its layer and its component");
      const rm = await cd.ctr(["images", "rm", "--sync", removed.ref]);
      assert.equal(rm.code, 0, rm.stderr);
      const content = await cd.ctr(["content", "ls", "-q"]);
      assert.ok(!content.stdout.includes(removed.hex), "containerd kept the removed layer");
      const other = await run(images[3].ref);
      assert.equal(other.code, 0, other.stderr);
      await waitFor(
        "the removed image's entries to go",
        async () => (await entriesOf(removed.hex)).length === 0,
      );
      assert.ok((await cached()).bytes <= CAP);
      // A sweep now keeps everything else: containerd has all the other images.
      const left = await new CacheJanitor({
        cacheDir,
        maxBytes: CAP,
        containerd: { address: cd.address, namespace: cd.namespace },
      }).sweep();
      assert.ok(left && left.checked > 0);
      assert.deepEqual(left.removed, []);
    } finally {
      client.close();
      await assertNothingLeft(cd, tmp);
    }
  },
});
