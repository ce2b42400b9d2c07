import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import {
  ANNOTATION_IMAGE_NAME,
  ANNOTATION_REF_NAME,
  buildImage,
  buildImageArchive,
  type BuildImageOptions,
  filesFromDirectory,
  imageReference,
  isWasm,
  isWasmComponent,
  MediaType,
  sha256Digest,
  writeFileAtomic,
} from "./image.ts";
import { readTar, writeTar } from "./tar.ts";

const dec = new TextDecoder();
const enc = new TextEncoder();

/** The smallest valid core module: magic + version 1. */
const MODULE = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
/** A component header (layer 1, version 0x0d). */
const COMPONENT = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]);

// deno-lint-ignore no-explicit-any
type Json = any;

/** Opens an image archive: the tar entries and helpers to read blobs as JSON. */
function open(tar: Uint8Array) {
  const files = new Map(readTar(tar).filter((e) => e.type === "file").map((e) => [e.path, e]));
  const blob = (digest: string) => {
    const e = files.get(`blobs/sha256/${digest.slice("sha256:".length)}`);
    assert.ok(e, `blob ${digest} is in the archive`);
    return e.data;
  };
  const json = (b: Uint8Array): Json => JSON.parse(dec.decode(b));
  const index = json(files.get("index.json")!.data);
  const manifest = json(blob(index.manifests[0].digest));
  const config = json(blob(manifest.config.digest));
  return { files, blob, json, index, manifest, config };
}

function wasmImage(extra: Partial<BuildImageOptions> = {}): BuildImageOptions {
  return {
    name: "probe",
    repo: "example.com/e2e",
    tag: "v1",
    config: { entrypoint: ["/probe.wasm"] },
    layers: [{ files: [{ path: "/probe.wasm", data: MODULE, mode: 0o755 }] }],
    ...extra,
  };
}

Deno.test("buildImageArchive: OCI layout with index, manifest, config and a tar layer", async () => {
  const img = await buildImageArchive(wasmImage());
  const { files, blob, index, manifest, config } = open(img.tar);
  assert.deepEqual([...files.keys()].filter((p) => !p.startsWith("blobs/")), [
    "index.json",
    "manifest.json",
    "oci-layout",
  ]);
  assert.deepEqual(JSON.parse(dec.decode(files.get("oci-layout")!.data)), {
    imageLayoutVersion: "1.0.0",
  });
  assert.equal(img.reference, "example.com/e2e/probe:v1");
  assert.equal(index.schemaVersion, 2);
  assert.equal(index.mediaType, MediaType.index);
  assert.deepEqual(index.manifests[0].annotations, {
    [ANNOTATION_IMAGE_NAME]: "example.com/e2e/probe:v1",
    [ANNOTATION_REF_NAME]: "v1",
  });
  assert.equal(index.manifests[0].digest, img.manifest.digest);
  assert.equal(manifest.mediaType, MediaType.manifest);
  assert.equal(manifest.config.mediaType, MediaType.config);
  assert.equal(manifest.layers.length, 1);
  assert.equal(manifest.layers[0].mediaType, MediaType.layerTar);
  assert.equal(config.os, "wasip1");
  assert.equal(config.architecture, "wasm");
  assert.deepEqual(config.config.Entrypoint, ["/probe.wasm"]);
  assert.equal(config.created, undefined, "no timestamp by default");
  // Every descriptor's digest and size match its blob.
  for (const d of [index.manifests[0], manifest.config, ...manifest.layers]) {
    const b = blob(d.digest);
    assert.equal(await sha256Digest(b), d.digest);
    assert.equal(b.length, d.size);
  }
  // The layer is a tar holding the module; diff_id is its digest (uncompressed).
  const layer = blob(manifest.layers[0].digest);
  assert.deepEqual(config.rootfs, { type: "layers", diff_ids: [manifest.layers[0].digest] });
  const entry = readTar(layer).find((e) => e.path === "probe.wasm")!;
  assert.deepEqual(entry.data, MODULE);
  assert.equal(entry.mode, 0o755);
  // Docker-style manifest.json points at the same blobs.
  const docker = JSON.parse(dec.decode(files.get("manifest.json")!.data));
  assert.deepEqual(docker, [{
    Config: `blobs/sha256/${manifest.config.digest.slice(7)}`,
    RepoTags: ["example.com/e2e/probe:v1"],
    Layers: [`blobs/sha256/${manifest.layers[0].digest.slice(7)}`],
  }]);
});

Deno.test("buildImageArchive: reproducible, independent of file order", async () => {
  const files = [
    { path: "/b.txt", data: "b" },
    { path: "/dir/a.txt", data: "a" },
    { path: "/app.wasm", data: MODULE },
  ];
  const a = await buildImageArchive(wasmImage({ layers: [{ files }] }));
  const b = await buildImageArchive(wasmImage({ layers: [{ files: [...files].reverse() }] }));
  assert.deepEqual(a.tar, b.tar);
  assert.equal(a.manifest.digest, b.manifest.digest);
  const c = await buildImageArchive(wasmImage({ layers: [{ files, gzip: true }] }));
  const d = await buildImageArchive(wasmImage({ layers: [{ files, gzip: true }] }));
  assert.deepEqual(c.tar, d.tar, "gzip layers are reproducible too");
  // Every header of the outer archive and of the layer has mtime 0 and uid/gid 0.
  const { blob, manifest } = open(a.tar);
  for (const e of [...readTar(a.tar), ...readTar(blob(manifest.layers[0].digest))]) {
    assert.deepEqual([e.mtime, e.uid, e.gid], [0, 0, 0], e.path);
  }
  // Parent directories are in the layer.
  assert.ok(readTar(blob(manifest.layers[0].digest)).some((e) => e.path === "dir"));
});

Deno.test("buildImageArchive: pinned digest for a minimal module (format stability)", async () => {
  // Pure JS output (no gzip): the same on every machine and Deno version. If a change to
  // the builder moves these, images rebuilt from the same inputs get new digests:
  // update them knowingly.
  const img = await buildImageArchive(wasmImage());
  assert.equal(
    img.manifest.digest,
    "sha256:eedd90c8780e5b63eb050d9f2a85e0ae96cd7044e1c6b8a95464e06254d5d95a",
  );
  assert.equal(
    await sha256Digest(img.tar),
    "sha256:3e0530b730d1081a32ad6d63b0dc36b13a61c587f5dd24cf9713cc5357f4982b",
  );
  assert.equal(img.size, 9728);
});

Deno.test("buildImageArchive: gzip layer has the gunzipped tar's digest as diff_id", async () => {
  const img = await buildImageArchive(
    wasmImage({ layers: [{ gzip: true, files: [{ path: "/x", data: "x" }] }] }),
  );
  const { blob, manifest, config } = open(img.tar);
  assert.equal(manifest.layers[0].mediaType, MediaType.layerTarGzip);
  const gz = blob(manifest.layers[0].digest);
  assert.deepEqual([...gz.subarray(0, 2)], [0x1f, 0x8b]);
  assert.deepEqual([...gz.subarray(4, 8)], [0, 0, 0, 0], "gzip mtime is 0");
  const tar = new Uint8Array(gunzipSync(gz));
  assert.equal(config.rootfs.diff_ids[0], await sha256Digest(tar));
  assert.equal(dec.decode(readTar(tar).find((e) => e.path === "x")!.data), "x");
});

Deno.test("buildImageArchive: native linux/amd64 image with env, cwd, cmd and labels", async () => {
  const img = await buildImageArchive({
    name: "native-hello",
    config: {
      os: "linux",
      architecture: "amd64",
      entrypoint: ["/native_hello"],
      cmd: ["--flag"],
      env: ["PATH=/usr/bin:/bin"],
      cwd: "/work",
      user: "0:0",
      labels: { z: "1", a: "2" },
      created: "2020-01-01T00:00:00Z",
    },
    layers: [{ files: [{ path: "/native_hello", data: "\x7fELF", mode: 0o755 }] }],
  });
  assert.equal(img.reference, "native-hello:latest");
  const { config } = open(img.tar);
  assert.equal(config.os, "linux");
  assert.equal(config.architecture, "amd64");
  assert.equal(config.created, "2020-01-01T00:00:00Z");
  assert.deepEqual(config.config, {
    User: "0:0",
    Env: ["PATH=/usr/bin:/bin"],
    Entrypoint: ["/native_hello"],
    Cmd: ["--flag"],
    WorkingDir: "/work",
    Labels: { a: "2", z: "1" },
  });
});

Deno.test("buildImageArchive: wasm artifact layout", async () => {
  const img = await buildImageArchive({
    name: "probe",
    repo: "ghcr.io/acme",
    asArtifact: true,
    layers: [{ mediaType: MediaType.wasm, data: MODULE }],
  });
  const { manifest, config, blob } = open(img.tar);
  assert.equal(manifest.config.mediaType, MediaType.wasmConfig);
  assert.equal(manifest.layers[0].mediaType, MediaType.wasm);
  assert.deepEqual(blob(manifest.layers[0].digest), MODULE, "the layer is the raw module");
  assert.deepEqual(config, {
    architecture: "wasm",
    os: "wasip1",
    layerDigests: [manifest.layers[0].digest],
    component: null,
  });
});

Deno.test("buildImageArchive: artifacts take only raw wasm layers", async () => {
  await assert.rejects(
    buildImageArchive({
      name: "a",
      asArtifact: true,
      layers: [{ files: [{ path: "/x", data: "" }] }],
    }),
    /raw wasm blobs, not file trees/,
  );
  await assert.rejects(
    buildImageArchive({
      name: "a",
      asArtifact: true,
      layers: [{ mediaType: MediaType.layerTar, data: writeTar([{ path: "x" }]) }],
    }),
    /a wasm artifact takes/,
  );
});

Deno.test("buildImageArchive: raw layers are checked against their media type", async () => {
  const tar = writeTar([{ path: "x", data: enc.encode("x") }]);
  // A wasm layer in a regular image: not a filesystem layer, so not in diff_ids.
  const img = await buildImageArchive(
    wasmImage({
      layers: [{ mediaType: MediaType.wasmComponentLayer, data: COMPONENT }, {
        files: [{ path: "/f", data: "f" }],
      }],
    }),
  );
  const config = open(img.tar).config;
  assert.equal(config.rootfs.diff_ids.length, 1, "only the tar layer");
  assert.notEqual(config.rootfs.diff_ids[0], await sha256Digest(COMPONENT));
  // An existing tar, plain and gzip.
  const plain = await buildImageArchive(
    wasmImage({ layers: [{ mediaType: MediaType.layerTar, data: tar }] }),
  );
  assert.equal(open(plain.tar).config.rootfs.diff_ids[0], await sha256Digest(tar));
  await assert.rejects(
    buildImageArchive(wasmImage({ layers: [{ mediaType: MediaType.wasm, data: tar }] })),
    /does not start with the wasm magic/,
  );
  await assert.rejects(
    buildImageArchive(wasmImage({ layers: [{ mediaType: MediaType.layerTarGzip, data: tar }] })),
    /is not gzip data/,
  );
  const { gzipSync } = await import("node:zlib");
  await assert.rejects(
    buildImageArchive(
      wasmImage({
        layers: [{ mediaType: MediaType.layerTar, data: new Uint8Array(gzipSync(tar)) }],
      }),
    ),
    /is gzip-compressed: use the media type .*\+gzip/,
  );
  await assert.rejects(
    buildImageArchive(
      wasmImage({
        layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", data: tar }],
      }),
    ),
    /zstd layers are not supported/,
  );
  await assert.rejects(
    buildImageArchive(wasmImage({ layers: [{ mediaType: "nonsense", data: tar }] })),
    /type\/subtype/,
  );
  await assert.rejects(
    buildImageArchive(
      wasmImage({ layers: [{ mediaType: MediaType.wasm, hostPath: "/nonexistent.wasm" }] }),
    ),
    /cannot read layer 1 \(application\/wasm\) \/nonexistent.wasm/,
  );
  await assert.rejects(buildImageArchive(wasmImage({ layers: [] })), /at least one layer/);
  await assert.rejects(
    buildImageArchive(wasmImage({ layers: [{ files: [{ path: "relative", data: "" }] }] })),
    /must be absolute/,
  );
});

Deno.test("buildImageArchive: the same layer twice is stored once", async () => {
  const layer = { mediaType: MediaType.wasmComponentLayer, data: COMPONENT };
  const img = await buildImageArchive(wasmImage({ layers: [layer, layer] }));
  const { manifest, files } = open(img.tar);
  assert.equal(manifest.layers.length, 2);
  assert.equal([...files.keys()].filter((p) => p.startsWith("blobs/")).length, 3);
});

Deno.test("imageReference: distribution reference grammar", () => {
  assert.equal(imageReference("app", undefined), "app:latest");
  assert.equal(
    imageReference("app", "ghcr.io/containerd/runwasi", "v1.0"),
    "ghcr.io/containerd/runwasi/app:v1.0",
  );
  assert.equal(
    imageReference("a.b_c__d-e--f", "localhost:5000/"),
    "localhost:5000/a.b_c__d-e--f:latest",
  );
  assert.equal(
    imageReference("team/app", "Registry.Example.com:443"),
    "Registry.Example.com:443/team/app:latest",
  );
  for (const bad of ["App", "app_", "-app", "app..x", "a//b", "", "app:tag", "app@x"]) {
    assert.throws(() => imageReference(bad, undefined), /invalid image name/, bad);
  }
  for (const bad of ["example.com/Team", "host:port:x", "a b", "example.com//x"]) {
    assert.throws(() => imageReference("app", bad), /invalid repository/, bad);
  }
  for (const bad of ["-x", ".x", "a:b", "x".repeat(129), ""]) {
    assert.throws(() => imageReference("app", undefined, bad), /invalid tag/, bad);
  }
  assert.throws(() => imageReference("a".repeat(256), undefined), /over the limit/);
});

Deno.test("isWasm / isWasmComponent", () => {
  assert.ok(isWasm(MODULE));
  assert.ok(!isWasmComponent(MODULE));
  assert.ok(isWasmComponent(COMPONENT));
  assert.ok(!isWasm(enc.encode("\x7fELF....")));
  assert.ok(!isWasm(MODULE.subarray(0, 4)));
});

Deno.test("buildImage: writes atomically and leaves nothing behind on failure", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await buildImage({ ...wasmImage(), outPath: `${dir}/img.tar` });
    assert.equal(r.path, `${dir}/img.tar`);
    assert.deepEqual(
      await Deno.readFile(`${dir}/img.tar`),
      (await buildImageArchive(wasmImage())).tar,
    );
    // Rename onto a directory fails: no temp file may remain.
    await Deno.mkdir(`${dir}/taken.tar`);
    await assert.rejects(
      buildImage({ ...wasmImage(), outPath: `${dir}/taken.tar` }),
      /cannot write/,
    );
    const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
    assert.deepEqual(names, ["img.tar", "taken.tar"]);
    await assert.rejects(writeFileAtomic(`${dir}/missing/x.tar`, MODULE), /cannot write/);
    await assert.rejects(writeFileAtomic(`${dir}/`, MODULE), /names a directory/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("filesFromDirectory + host files keep their modes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/bin`);
    await Deno.writeFile(`${dir}/bin/tool`, enc.encode("t"), { mode: 0o755 });
    await Deno.chmod(`${dir}/bin/tool`, 0o755);
    await Deno.writeTextFile(`${dir}/readme`, "r");
    await Deno.chmod(`${dir}/readme`, 0o600);
    await Deno.symlink("bin/tool", `${dir}/link`);
    const files = await filesFromDirectory(dir, "/opt/app");
    const img = await buildImageArchive(wasmImage({ layers: [{ files }] }));
    const { blob, manifest } = open(img.tar);
    const layer = new Map(readTar(blob(manifest.layers[0].digest)).map((e) => [e.path, e]));
    assert.deepEqual([...layer.keys()].sort(), [
      "opt",
      "opt/app",
      "opt/app/bin",
      "opt/app/bin/tool",
      "opt/app/link",
      "opt/app/readme",
    ]);
    assert.equal(layer.get("opt/app/bin/tool")!.mode, 0o755);
    assert.equal(layer.get("opt/app/readme")!.mode, 0o600);
    assert.equal(layer.get("opt/app/link")!.linkname, "bin/tool");
    await assert.rejects(filesFromDirectory(`${dir}/nope`), /cannot list layer directory/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
