/**
 * End to end: Wasm OCI artifacts (raw Wasm layers, config `architecture: wasm`) under
 * a real, private containerd (1.6.20 by default; see harness.ts for 1.7 and 2.x).
 *
 * containerd 1.6.20 cannot unpack such images, and `ctr run` insists on unpacking, so
 * (on every version alike) each image is imported with `--no-unpack`, its containers
 * are created through containerd's gRPC API (`Containers/Create`, with the image name,
 * the runtime and an OCI spec, and no snapshot), and run with `ctr task start` (which
 * attaches stdio and exits with the task's status). The shim reads the layer from containerd's content
 * store over gRPC and caches it. One test imports them unpacking and runs them with
 * `ctr run`, as far as the containerd allows (1.7.7+: an image, not an artifact).
 */

import assert from "node:assert/strict";
import {
  ANNOTATION_IMAGE_NAME,
  ANNOTATION_REF_NAME,
  type BlobLayer,
  buildImage,
  buildImageArchive,
  type Descriptor,
  type ImageConfig,
  type LayerSpec,
  MediaType,
  sha256Digest,
} from "../../src/oci/image.ts";
import { readTar, type TarEntry, writeTar } from "../../src/oci/tar.ts";
import { ContainerdClient, SPEC_TYPE_URL } from "../../src/image/containerd/client.ts";
import { Kind, ShimError } from "../../src/errdefs/errors.ts";
import { type Containerd, containerdVersion, startContainerd } from "./harness.ts";
import { fixture, installShim } from "./shim_install.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const TITLE = "org.opencontainers.image.title";
const COMPONENT = new URL("../../src/wasm/component/testdata/command.wasm", import.meta.url)
  .pathname;
const opts = { sanitizeOps: false, sanitizeResources: false };

interface Env {
  cd: Containerd;
  client: ContainerdClient;
  tmp: string;
  cacheDir: string;
}

let env: Promise<Env> | undefined;

function setup(): Promise<Env> {
  env ??= (async () => {
    const { binDir } = await installShim();
    const tmp = await Deno.makeTempDir({ prefix: "shim-e2e-art-" });
    const cacheDir = `${tmp}/cache`;
    const cd = await startContainerd({
      shimBinDir: binDir,
      env: { WASMTIME_SHIM_CACHE_DIR: cacheDir },
    });
    const client = await ContainerdClient.connect({ address: cd.address, namespace: cd.namespace });
    return { cd, client, tmp, cacheDir };
  })();
  return env;
}

/** A layer of raw wasm from a file, titled with its base name. */
async function wasmLayer(path: string, mediaType: string, title?: string): Promise<BlobLayer> {
  return {
    mediaType,
    data: await Deno.readFile(path),
    annotations: { [TITLE]: title ?? path.split("/").pop()! },
  };
}

/** `bytes` with a custom section appended: the same program, a digest never seen before. */
function unique(bytes: Uint8Array): Uint8Array {
  const name = new TextEncoder().encode(crypto.randomUUID().slice(0, 8));
  const out = new Uint8Array(bytes.length + 3 + name.length);
  out.set(bytes);
  out.set([0x00, name.length + 1, name.length, ...name], bytes.length);
  return out;
}

let seq = 0;

/** Builds an image, imports it without unpacking, returns its name and layer digests. */
async function importImage(
  layers: LayerSpec[],
  o: { asArtifact?: boolean; config?: ImageConfig } = {},
): Promise<{ ref: string; layers: string[] }> {
  const { cd, tmp } = await setup();
  const name = `art${++seq}`;
  const built = await buildImage({
    name,
    repo: "example.com/e2e",
    tag: "v1",
    outPath: `${tmp}/${name}.tar`,
    asArtifact: o.asArtifact ?? true,
    config: o.config,
    layers,
  });
  await cd.importImage(built.path, { noUnpack: true });
  return { ref: built.reference, layers: built.layers.map((l) => l.digest) };
}

/** An OCI runtime spec for a wasm container with no rootfs of its own. */
function ociSpec(args: string[]): Record<string, unknown> {
  return {
    ociVersion: "1.0.2-dev",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args,
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      cwd: "/",
    },
    root: { path: "rootfs" },
    linux: { namespaces: [] },
  };
}

/**
 * Creates a container through containerd's API, runs it with `ctr task start`, and
 * removes it. Its rootfs is no snapshot at all (the task gets no rootfs mounts), or
 * with `emptySnapshot` an empty one made with `Snapshots/Prepare` (no parent).
 */
async function run(image: string, args: string[], o: { emptySnapshot?: boolean } = {}) {
  const { cd, client } = await setup();
  const id = `art-${++seq}`;
  const snapshotKey = o.emptySnapshot ? `${id}-rootfs` : "";
  try {
    await client.createContainer({
      id,
      image,
      runtime: { name: RUNTIME },
      spec: {
        type_url: SPEC_TYPE_URL,
        value: new TextEncoder().encode(JSON.stringify(ociSpec(args))),
      },
      snapshotter: cd.snapshotter,
      snapshot_key: snapshotKey,
    });
    // The container first, then its snapshot: a snapshot nothing references yet (no
    // container, no lease) may be taken by containerd's garbage collector at once.
    if (snapshotKey) await client.prepareSnapshot(cd.snapshotter, snapshotKey);
    try {
      return await cd.ctr(["task", "start", id], { stdin: "", timeoutMs: 60_000 });
    } finally {
      await cd.ctr(["task", "delete", "-f", id], { timeoutMs: 20_000 });
      await client.deleteContainer(id);
    }
  } finally {
    // containerd's garbage collector may have taken the snapshot already: once the
    // container is deleted nothing references it.
    if (snapshotKey) {
      await client.removeSnapshot(cd.snapshotter, snapshotKey).catch((err) => {
        if (!(err instanceof ShimError && err.kind === Kind.NOT_FOUND)) throw err;
      });
    }
  }
}

/** The shim's log lines about containers of `image` (from containerd's log). */
async function resolutionLines(image: string): Promise<string[]> {
  const { cd } = await setup();
  return (await cd.logs()).split("\n").filter((l) => l.includes(`image \\"${image}\\": running`));
}

Deno.test({
  name: "application/wasm module: the layer runs, stdio attached; a re-run reads nothing",
  ...opts,
  async fn() {
    const { cd, cacheDir } = await setup();
    const img = await importImage([await wasmLayer(fixture("probe.wasm"), MediaType.wasm)]);
    const r = await run(img.ref, ["/probe.wasm", "hello"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from wasm\n");
    assert.match(r.stderr, /hello on stderr/);
    const cached = `${cacheDir}/blobs/sha256/${img.layers[0].slice("sha256:".length)}`;
    // The same file stays (a hit renews its mtime, the cache's recency, not its inode).
    const before = (await Deno.stat(cached)).ino;
    assert.deepEqual(await Deno.readFile(cached), await Deno.readFile(fixture("probe.wasm")));

    // The re-run reads nothing from containerd's content store: even with the layer
    // gone from it, the container runs from the shim's cache.
    const rm = await cd.ctr(["content", "rm", img.layers[0]]);
    assert.equal(rm.code, 0, rm.stderr);
    const again = await run(img.ref, ["probe.wasm", "exit", "7"]);
    assert.equal(again.code, 7, again.stderr);
    assert.equal((await Deno.stat(cached)).ino, before, "the cached layer was kept");
    const [first] = await resolutionLines(img.ref);
    assert.match(first, /0 from the shim's cache, 3 read from containerd \(\d+ bytes\)/);
  },
});

Deno.test({
  name: "component layer media type: a wasi:cli command component runs",
  ...opts,
  async fn() {
    const img = await importImage([await wasmLayer(COMPONENT, MediaType.wasmComponentLayer)]);
    const r = await run(img.ref, ["/command.wasm"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "hello from a wasi:cli command\n");
    const code = await run(img.ref, ["/command.wasm", "9"]);
    assert.equal(code.code, 9, code.stderr);
  },
});

Deno.test({
  name: "wasm content layer media type: the only layer runs, #func picks an export",
  ...opts,
  async fn() {
    const img = await importImage([
      await wasmLayer(fixture("greet.wasm"), MediaType.wasmContentLayer, "app.wasm"),
    ]);
    // args[0] names no layer: the image's only Wasm layer runs, with the spec's argv.
    const r = await run(img.ref, ["/bin/whatever"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /start called/);
    const f = await run(img.ref, ["app.wasm#greet"]);
    assert.equal(f.code, 0, f.stderr);
    assert.match(f.stdout, /greet called/);
  },
});

Deno.test({
  name: "several layers: the image config's Entrypoint or args[0] chooses (empty snapshot too)",
  ...opts,
  async fn() {
    const img = await importImage([
      await wasmLayer(fixture("probe.wasm"), MediaType.wasm),
      await wasmLayer(fixture("greet.wasm"), MediaType.wasm),
    ], { asArtifact: false, config: { entrypoint: ["/greet.wasm"] } });
    const byConfig = await run(img.ref, ["run"]);
    assert.equal(byConfig.code, 0, byConfig.stderr);
    assert.match(byConfig.stdout, /start called/);
    const byArgs = await run(img.ref, ["/probe.wasm", "hello"], { emptySnapshot: true });
    assert.equal(byArgs.code, 0, byArgs.stderr);
    assert.equal(byArgs.stdout, "hello from wasm\n");
  },
});

/**
 * Builds and imports an image whose target is an index of two platform manifests,
 * linux/amd64 (a tar layer) and wasip1/wasm (an artifact), as a registry would serve
 * a multi-platform image.
 */
async function importIndexImage(wasm: BlobLayer): Promise<string> {
  const { cd, tmp } = await setup();
  const name = `art${++seq}`;
  const ref = `example.com/e2e/${name}:v1`;
  const native = await buildImageArchive({
    name,
    config: { os: "linux", architecture: "amd64", entrypoint: ["/hello"] },
    layers: [{ files: [{ path: "/hello", hostPath: fixture("native_hello") }] }],
  });
  const art = await buildImageArchive({ name, asArtifact: true, layers: [wasm] });
  const blobs = new Map<string, TarEntry>();
  for (const { tar } of [native, art]) {
    for (const e of readTar(tar)) {
      if (e.type === "file" && e.path.startsWith("blobs/")) {
        blobs.set(e.path, { path: e.path, data: e.data });
      }
    }
  }
  const platform = (d: Descriptor, os: string, architecture: string) => ({
    mediaType: d.mediaType,
    digest: d.digest,
    size: d.size,
    platform: { os, architecture },
  });
  const index = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.index,
    manifests: [
      platform(native.manifest, "linux", "amd64"),
      platform(art.manifest, "wasip1", "wasm"),
    ],
  }));
  const indexDigest = await sha256Digest(index);
  const path = `blobs/sha256/${indexDigest.slice("sha256:".length)}`;
  blobs.set(path, { path, data: index });
  const layout = new TextEncoder().encode(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.index,
    manifests: [{
      mediaType: MediaType.index,
      digest: indexDigest,
      size: index.length,
      annotations: { [ANNOTATION_IMAGE_NAME]: ref, [ANNOTATION_REF_NAME]: "v1" },
    }],
  }));
  const tarPath = `${tmp}/${name}.tar`;
  await Deno.writeFile(
    tarPath,
    writeTar([
      { path: "oci-layout", data: new TextEncoder().encode('{"imageLayoutVersion":"1.0.0"}') },
      { path: "index.json", data: layout },
      ...blobs.values(),
    ], { addParents: true }),
  );
  await cd.importImage(tarPath, { noUnpack: true });
  return ref;
}

Deno.test({
  name: "a multi-platform index: its wasm platform manifest runs",
  ...opts,
  async fn() {
    const ref = await importIndexImage(await wasmLayer(fixture("greet.wasm"), MediaType.wasm));
    const r = await run(ref, ["/greet.wasm"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /start called/);
  },
});

Deno.test({
  name: "a layer missing from the content store fails Create, naming it",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const img = await importImage([{
      mediaType: MediaType.wasm,
      data: unique(await Deno.readFile(fixture("probe.wasm"))),
      annotations: { [TITLE]: "probe.wasm" },
    }]);
    const rm = await cd.ctr(["content", "rm", img.layers[0]]);
    assert.equal(rm.code, 0, rm.stderr);
    const r = await run(img.ref, ["/probe.wasm", "hello"]);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      new RegExp(
        `Wasm layer ${img.layers[0]} \\(probe.wasm\\) is missing from containerd's content`,
      ),
    );
  },
});

Deno.test({
  name: "a corrupt layer fails Create with the digest it has",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const bytes = unique(await Deno.readFile(fixture("probe.wasm")));
    const img = await importImage([{
      mediaType: MediaType.wasm,
      data: bytes,
      annotations: { [TITLE]: "probe.wasm" },
    }]);
    const hex = img.layers[0].slice("sha256:".length);
    const blob = `${cd.dir}/root/io.containerd.content.v1.content/blobs/sha256/${hex}`;
    bytes[bytes.length - 1] ^= 1; // same size, still wasm, another digest
    await Deno.chmod(blob, 0o644);
    await Deno.writeFile(blob, bytes);
    const r = await run(img.ref, ["/probe.wasm", "hello"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`has digest sha256:[0-9a-f]{64}, not ${img.layers[0]}`));
  },
});

Deno.test({
  name: "no image, or an image without Wasm layers: the entrypoint-not-found error stays",
  ...opts,
  async fn() {
    const img = await importImage([{
      files: [{ path: "/other.wasm", hostPath: fixture("greet.wasm") }],
    }], { asArtifact: false });
    const r = await run(img.ref, ["/probe.wasm", "hello"]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /entrypoint "\/probe.wasm" in the container's root .* not found/);
    const none = await run("", ["/probe.wasm", "hello"]);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /entrypoint "\/probe.wasm" in the container's root .* not found/);
  },
});

Deno.test({
  name: "ctr image import (unpacking) and ctr run: as far as this containerd allows",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    const { major, minor } = await containerdVersion();
    const layer = await wasmLayer(fixture("probe.wasm"), MediaType.wasm);
    // An artifact (Wasm config media type), and an OCI image whose only layer is Wasm
    // (its config's rootfs lists no diff_ids: src/oci's builder lists tar layers only).
    const shapes = { artifact: true, image: false };
    for (const [shape, asArtifact] of Object.entries(shapes)) {
      const name = `unpack-${shape}`;
      const built = await buildImage({
        name,
        repo: "example.com/e2e",
        tag: "v1",
        outPath: `${tmp}/${name}.tar`,
        asArtifact,
        config: asArtifact ? undefined : { entrypoint: ["/probe.wasm"] },
        layers: [layer],
      });
      const imported = await cd.ctr(["image", "import", "--all-platforms", built.path]);
      if (major === 1 && minor < 7) {
        // containerd 1.6.20's unpacker counts every manifest layer against diff_ids.
        assert.notEqual(imported.code, 0, `${shape}: import unpacks`);
        assert.match(imported.stderr, /mismatched image rootfs and manifest layers/);
        continue;
      }
      // 1.7.7+ and 2.x unpack the tar layers (none here: an empty rootfs) and skip the rest.
      assert.equal(imported.code, 0, `${shape}: ${imported.stderr}`);
      const r = await cd.ctr([
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        built.reference,
        `unpack-${shape}-1`,
        "/probe.wasm",
        "hello",
      ], { timeoutMs: 60_000 });
      if (asArtifact) {
        // ctr builds the spec from the image config (oci.WithImageConfig), which takes
        // OCI and Docker image configs only: an artifact cannot go through ctr run.
        assert.notEqual(r.code, 0);
        assert.match(
          r.stderr,
          /unknown image config media type application\/vnd\.wasm\.config\.v0\+json/,
        );
      } else {
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout, "hello from wasm\n");
        assert.match(r.stderr, /hello on stderr/);
      }
    }
  },
});

Deno.test({
  name: "nothing is left behind",
  ...opts,
  async fn() {
    const { cd, client, tmp } = await setup();
    client.close();
    const containers = await cd.ctr(["container", "ls", "-q"]);
    assert.equal(containers.stdout.trim(), "", "containers left: " + containers.stdout);
    // The namespace's shared server exits after its idle period (1 s in the harness).
    // A failed Create keeps it up for a while longer (its hold, HOLD_TTL_MS = 30 s).
    for (let i = 0; i < 450 && (await cd.leftovers()).processes.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const left = await cd.stop();
    await Deno.remove(tmp, { recursive: true });
    assert.deepEqual(left, { mounts: [], sockets: [], processes: [], cgroups: [], slots: [] });
  },
});
