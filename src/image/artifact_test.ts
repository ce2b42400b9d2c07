import assert from "node:assert/strict";
import { Kind, ShimError } from "../errdefs/errors.ts";
import {
  chooseLayer,
  findLayer,
  type ImageSource,
  isIndex,
  isWasmLayerMediaType,
  layerLabel,
  ManifestMediaType,
  MAX_INDEX_DEPTH,
  type OciDescriptor,
  parseDescriptor,
  parseImageConfig,
  parseIndex,
  parseManifest,
  resolveArtifact,
  selectPlatformManifest,
  TITLE_ANNOTATION,
  WASM_LAYER_MEDIA_TYPES,
  WasmLayerMediaType,
  wasmLayers,
} from "./artifact.ts";
import { sha256Digest } from "../oci/image.ts";

const enc = new TextEncoder();
const json = (v: unknown) => enc.encode(JSON.stringify(v));
const digest = (c: string) => `sha256:${c.repeat(64)}`;

function desc(mediaType: string, c: string, extra: Partial<OciDescriptor> = {}): OciDescriptor {
  return { mediaType, digest: digest(c), size: 10, ...extra };
}

function layer(mediaType: string, c: string, title?: string): OciDescriptor {
  return desc(mediaType, c, title ? { annotations: { [TITLE_ANNOTATION]: title } } : {});
}

Deno.test("media types: the three raw wasm layer types, nothing else", () => {
  assert.deepEqual([...WASM_LAYER_MEDIA_TYPES].sort(), [
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/wasm",
  ]);
  for (const t of WASM_LAYER_MEDIA_TYPES) assert.ok(isWasmLayerMediaType(t), t);
  for (const t of ["application/vnd.oci.image.layer.v1.tar", "application/wasm+gzip", ""]) {
    assert.ok(!isWasmLayerMediaType(t), t);
  }
});

Deno.test("parseDescriptor: checks digest, size and media type", () => {
  assert.deepEqual(
    parseDescriptor({
      mediaType: "a/b",
      digest: digest("a"),
      size: 3,
      annotations: { k: "v", n: 1 },
      platform: { os: "wasip1", architecture: "wasm" },
    }, "x"),
    {
      mediaType: "a/b",
      digest: digest("a"),
      size: 3,
      annotations: { k: "v" },
      platform: { os: "wasip1", architecture: "wasm", variant: undefined },
    },
  );
  assert.throws(() => parseDescriptor({ digest: digest("a"), size: 1 }, "m"), /m is malformed: no/);
  assert.throws(
    () => parseDescriptor({ mediaType: "a/b", digest: "md5:00", size: 1 }, "m"),
    /digest "md5:00" is not sha256/,
  );
  assert.throws(
    () => parseDescriptor({ mediaType: "a/b", digest: digest("a"), size: -1 }, "m"),
    /size -1 is not a non-negative integer/,
  );
});

Deno.test("isIndex: by media type, else by shape", () => {
  assert.ok(isIndex(ManifestMediaType.ociIndex));
  assert.ok(isIndex(ManifestMediaType.dockerManifestList));
  assert.ok(!isIndex(ManifestMediaType.ociManifest));
  assert.ok(!isIndex(ManifestMediaType.dockerManifest));
  assert.ok(isIndex("", { manifests: [] }));
  assert.ok(!isIndex("", { manifests: [], layers: [] }));
});

Deno.test("parseIndex / parseManifest / parseImageConfig", () => {
  const m = desc(ManifestMediaType.ociManifest, "1");
  assert.deepEqual(parseIndex(json({ manifests: [m] }), "i"), [m]);
  assert.throws(() => parseIndex(json({}), "idx"), /idx is malformed: no manifests array/);
  assert.throws(() => parseIndex(enc.encode("{"), "idx"), /idx is malformed: not UTF-8 JSON/);
  assert.throws(() => parseIndex(json([1]), "idx"), /not a JSON object/);

  const cfg = desc("application/vnd.wasm.config.v0+json", "2");
  const l = layer(WasmLayerMediaType.wasm, "3", "app.wasm");
  assert.deepEqual(parseManifest(json({ config: cfg, layers: [l] }), "m"), {
    config: cfg,
    layers: [l],
  });
  assert.throws(() => parseManifest(json({ config: cfg }), "m"), /no layers array/);
  assert.throws(() => parseManifest(json({ layers: [] }), "m"), /m config is malformed/);

  assert.deepEqual(
    parseImageConfig(
      json({ architecture: "wasm", os: "wasip1", config: { Entrypoint: ["/a.wasm"], Cmd: ["x"] } }),
      "c",
    ),
    { architecture: "wasm", os: "wasip1", entrypoint: ["/a.wasm"], cmd: ["x"] },
  );
  // A Wasm artifact config (application/vnd.wasm.config.v0+json): no process config.
  assert.deepEqual(
    parseImageConfig(json({ architecture: "wasm", os: "wasip2", layerDigests: [] }), "c"),
    { architecture: "wasm", os: "wasip2", entrypoint: [], cmd: [] },
  );
});

Deno.test("selectPlatformManifest: the first wasm platform; an unlabelled single entry", () => {
  const amd64 = desc(ManifestMediaType.ociManifest, "1", {
    platform: { os: "linux", architecture: "amd64" },
  });
  const p1 = desc(ManifestMediaType.ociManifest, "2", {
    platform: { os: "wasip1", architecture: "wasm" },
  });
  const p2 = desc(ManifestMediaType.ociManifest, "3", {
    platform: { os: "wasip2", architecture: "wasm" },
  });
  const linuxWasm = desc(ManifestMediaType.ociManifest, "4", {
    platform: { os: "linux", architecture: "wasm" },
  });
  const bare = desc(ManifestMediaType.ociManifest, "5");
  assert.equal(selectPlatformManifest([amd64, p1, p2]), p1);
  assert.equal(selectPlatformManifest([amd64, p2, p1]), p2);
  assert.equal(selectPlatformManifest([amd64, linuxWasm]), linuxWasm);
  assert.equal(selectPlatformManifest([bare]), bare);
  assert.equal(selectPlatformManifest([amd64]), undefined);
  assert.equal(selectPlatformManifest([bare, amd64]), undefined);
  assert.equal(selectPlatformManifest([]), undefined);
  const windows = desc(ManifestMediaType.ociManifest, "6", {
    platform: { os: "windows", architecture: "wasm" },
  });
  assert.equal(selectPlatformManifest([windows]), undefined);
});

Deno.test("wasmLayers: only raw wasm layers, with their titles", () => {
  const layers = wasmLayers([
    layer("application/vnd.oci.image.layer.v1.tar", "1"),
    layer(WasmLayerMediaType.componentLayer, "2", "a.wasm"),
    layer(WasmLayerMediaType.wasm, "3"),
    layer(WasmLayerMediaType.contentLayer, "4", "c.wasm"),
  ]);
  assert.deepEqual(layers.map((l) => [l.descriptor.digest, l.title]), [
    [digest("2"), "a.wasm"],
    [digest("3"), undefined],
    [digest("4"), "c.wasm"],
  ]);
});

Deno.test("findLayer: by digest, by title (leading / and ./ ignored), by unique base name", () => {
  const layers = wasmLayers([
    layer(WasmLayerMediaType.wasm, "1", "app.wasm"),
    layer(WasmLayerMediaType.wasm, "2", "bin/tool.wasm"),
    layer(WasmLayerMediaType.wasm, "3", "x/dup.wasm"),
    layer(WasmLayerMediaType.wasm, "4", "y/dup.wasm"),
    layer(WasmLayerMediaType.wasm, "5"),
  ]);
  const found = (name: string) => findLayer(layers, name)?.descriptor.digest;
  assert.equal(found("/app.wasm"), digest("1"));
  assert.equal(found("./app.wasm"), digest("1"));
  assert.equal(found("app.wasm"), digest("1"));
  assert.equal(found("/bin/tool.wasm"), digest("2"));
  assert.equal(found("tool.wasm"), digest("2"));
  assert.equal(found("/usr/bin/tool.wasm"), digest("2"), "unique base name");
  assert.equal(found("dup.wasm"), undefined, "two layers have that base name");
  assert.equal(found("/x/dup.wasm"), digest("3"));
  assert.equal(found(digest("5")), digest("5"));
  assert.equal(found(""), undefined);
  assert.equal(found("nope.wasm"), undefined);
});

Deno.test("chooseLayer: args[0], then Entrypoint/Cmd, then the only layer", () => {
  const two = wasmLayers([
    layer(WasmLayerMediaType.wasm, "1", "a.wasm"),
    layer(WasmLayerMediaType.wasm, "2", "b.wasm"),
  ]);
  const none = { entrypoint: [], cmd: [] };
  let c = chooseLayer(two, ["/b.wasm#run", "x"], { entrypoint: ["/a.wasm"], cmd: [] }, "img");
  assert.equal(c.layer.title, "b.wasm");
  assert.equal(c.func, "run");
  assert.match(c.why, /process.args\[0\] "\/b.wasm" names it/);

  c = chooseLayer(two, ["serve"], { entrypoint: ["/a.wasm"], cmd: ["/b.wasm"] }, "img");
  assert.equal(c.layer.title, "a.wasm");
  assert.equal(c.func, "_start");
  assert.match(c.why, /Entrypoint "\/a.wasm"/);

  c = chooseLayer(two, ["serve"], { entrypoint: [], cmd: ["b.wasm"] }, "img");
  assert.equal(c.layer.title, "b.wasm");
  assert.match(c.why, /Cmd "b.wasm"/);

  const one = wasmLayers([layer(WasmLayerMediaType.wasm, "3")]);
  c = chooseLayer(one, ["/anything#greet"], none, "img");
  assert.equal(c.layer.descriptor.digest, digest("3"));
  assert.equal(c.func, "greet");
  assert.match(c.why, /only Wasm layer/);

  assert.throws(
    () => chooseLayer(two, ["/c.wasm"], { entrypoint: ["/d.wasm"], cmd: [] }, "img:1"),
    (err: ShimError) => {
      assert.equal(err.kind, Kind.NOT_FOUND);
      assert.match(err.message, /image "img:1" has 2 Wasm layers \(a.wasm \(layer sha256:1/);
      assert.match(err.message, /neither process.args\[0\] "\/c.wasm" nor .* "\/d.wasm" names/);
      return true;
    },
  );
});

Deno.test("layerLabel: title and short digest", () => {
  const [titled, bare] = wasmLayers([
    layer(WasmLayerMediaType.wasm, "a", "app.wasm"),
    layer(WasmLayerMediaType.wasm, "b"),
  ]);
  assert.equal(layerLabel(titled), `app.wasm (layer sha256:${"a".repeat(12)}…)`);
  assert.equal(layerLabel(bare), `layer sha256:${"b".repeat(12)}…`);
});

/** An in-memory image store. */
class FakeSource implements ImageSource {
  blobs = new Map<string, Uint8Array>();
  targets = new Map<string, OciDescriptor>();
  reads: string[] = [];

  async add(mediaType: string, value: unknown, extra: Partial<OciDescriptor> = {}) {
    const bytes = json(value);
    const d = { mediaType, digest: await sha256Digest(bytes), size: bytes.length, ...extra };
    this.blobs.set(d.digest, bytes);
    return d;
  }

  imageTarget(name: string): Promise<OciDescriptor> {
    const t = this.targets.get(name);
    if (!t) return Promise.reject(new ShimError(Kind.NOT_FOUND, `image "${name}": not found`));
    return Promise.resolve(t);
  }

  read(d: OciDescriptor, maxBytes: number, what: string): Promise<Uint8Array> {
    this.reads.push(d.digest);
    const b = this.blobs.get(d.digest);
    if (!b) return Promise.reject(new ShimError(Kind.NOT_FOUND, `${what}: not found`));
    assert.ok(b.length <= maxBytes);
    return Promise.resolve(b);
  }
}

async function wasmManifest(src: FakeSource, arch = "wasm", layers?: OciDescriptor[]) {
  const config = await src.add("application/vnd.oci.image.config.v1+json", {
    architecture: arch,
    os: "wasip1",
    config: { Entrypoint: ["/app.wasm"] },
  });
  return await src.add(ManifestMediaType.ociManifest, {
    schemaVersion: 2,
    config,
    layers: layers ?? [
      layer(WasmLayerMediaType.wasm, "a", "lib.wasm"),
      layer(WasmLayerMediaType.wasm, "b", "app.wasm"),
    ],
  });
}

Deno.test("resolveArtifact: a manifest's config names the layer", async () => {
  const src = new FakeSource();
  src.targets.set("img", await wasmManifest(src));
  const r = await resolveArtifact(src, "img", ["run"]);
  assert.ok(!("none" in r));
  assert.equal(r.image, "img");
  assert.equal(r.choice.layer.title, "app.wasm");
  assert.equal(src.reads.length, 2, "manifest and config; the layer is not read here");
});

Deno.test("resolveArtifact: an index (nested too) resolves to its wasm platform", async () => {
  const src = new FakeSource();
  const native = await wasmManifest(src, "amd64");
  const wasm = await wasmManifest(src);
  const inner = await src.add(ManifestMediaType.ociIndex, {
    manifests: [
      { ...native, platform: { os: "linux", architecture: "amd64" } },
      { ...wasm, platform: { os: "wasip1", architecture: "wasm" } },
    ],
  });
  const outer = await src.add(ManifestMediaType.dockerManifestList, {
    manifests: [{ ...inner, platform: { os: "wasip1", architecture: "wasm" } }],
  });
  src.targets.set("img", outer);
  const r = await resolveArtifact(src, "img", ["/app.wasm"]);
  assert.ok(!("none" in r));
  assert.equal(r.manifest.digest, wasm.digest);
});

Deno.test("resolveArtifact: indexes nested too deep are refused", async () => {
  const src = new FakeSource();
  let target = await wasmManifest(src);
  for (let i = 0; i <= MAX_INDEX_DEPTH; i++) {
    target = await src.add(ManifestMediaType.ociIndex, {
      manifests: [{ ...target, platform: { os: "wasip1", architecture: "wasm" } }],
    });
  }
  src.targets.set("img", target);
  await assert.rejects(resolveArtifact(src, "img", []), /indexes nested more than 4 deep/);
});

Deno.test("resolveArtifact: not an artifact (other arch, no wasm layers, no wasm platform)", async () => {
  const src = new FakeSource();
  src.targets.set("amd64", await wasmManifest(src, "amd64"));
  src.targets.set(
    "tars",
    await wasmManifest(src, "wasm", [layer("application/vnd.oci.image.layer.v1.tar", "c")]),
  );
  src.targets.set(
    "linux-only",
    await src.add(ManifestMediaType.ociIndex, {
      manifests: [{
        ...(await wasmManifest(src, "amd64")),
        platform: { os: "linux", architecture: "amd64" },
      }],
    }),
  );
  assert.deepEqual(await resolveArtifact(src, "amd64", []), {
    none: `image "amd64" is for architecture "amd64", not "wasm"`,
  });
  assert.deepEqual(await resolveArtifact(src, "tars", []), {
    none: `image "tars" has no Wasm layers (layer media types: ` +
      `application/vnd.oci.image.layer.v1.tar)`,
  });
  assert.deepEqual(await resolveArtifact(src, "linux-only", []), {
    none: `image "linux-only" has no wasm platform manifest (platforms: linux/amd64)`,
  });
});

Deno.test("resolveArtifact: a missing manifest or image is an error, not 'none'", async () => {
  const src = new FakeSource();
  await assert.rejects(resolveArtifact(src, "nope", []), /image "nope": not found/);
  src.targets.set("img", desc(ManifestMediaType.ociManifest, "f"));
  await assert.rejects(
    resolveArtifact(src, "img", []),
    /image "img" manifest sha256:f+: not found/,
  );
});
