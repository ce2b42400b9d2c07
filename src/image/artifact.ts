/**
 * Wasm OCI artifacts: images whose config says `architecture: wasm` and whose layers
 * are raw WebAssembly binaries instead of file-system tars. containerd cannot unpack
 * them into a rootfs (1.6 refuses; 1.6.25+/1.7.7+ skip such layers), so the shim
 * reads them itself from containerd's content store, the way runwasi does:
 *
 * 1. `Containers/Get` → the container's `image` name ("" → not an artifact);
 * 2. `Images/Get` → its target descriptor;
 * 3. the manifest (an index is resolved to its `wasm` platform manifest, see
 *    {@linkcode selectPlatformManifest}), then the image config: not `architecture:
 *    wasm` → not an artifact;
 * 4. the Wasm layers ({@linkcode WASM_LAYER_MEDIA_TYPES}) and the one to run
 *    ({@linkcode chooseLayer}): the one `process.args[0]` names, else the one the
 *    image's `Entrypoint`/`Cmd` names, else the only one;
 * 5. its bytes through `Content/Read`, verified against the digest and kept in the
 *    shim's blob cache (`blob_cache.ts`), so a second start reads nothing.
 *
 * The pure parts (parsing, platform and layer choice) are exported for tests; the
 * outside world is behind {@linkcode ImageSource}.
 *
 * @module
 */

import { Kind, notFound, ShimError } from "../errdefs/errors.ts";
import { splitArg0 } from "../wasm/entrypoint.ts";

/** Media types of raw Wasm layers that the shim runs. */
export const WasmLayerMediaType = {
  /** runwasi's `oci-tar-builder` (components and modules alike). */
  componentLayer: "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
  /** The CNCF TAG Runtime Wasm OCI artifact layout (wasm-to-oci, ORAS). */
  wasm: "application/wasm",
  /** Spin / SpinKube application content. */
  contentLayer: "application/vnd.wasm.content.layer.v1+wasm",
} as const;

/** Every media type of {@linkcode WasmLayerMediaType}. */
export const WASM_LAYER_MEDIA_TYPES: ReadonlySet<string> = new Set(
  Object.values(WasmLayerMediaType),
);

/** Media types of manifests and indexes. */
export const ManifestMediaType = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  dockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
} as const;

/** The image config `architecture` (and platform architecture) of Wasm images. */
export const WASM_ARCHITECTURE = "wasm";
/**
 * Platform `os` values accepted with architecture `wasm` when resolving an index, in
 * no order of preference (the first match in the index wins).
 */
export const WASM_PLATFORM_OSES: ReadonlySet<string> = new Set([
  "wasip1",
  "wasip2",
  "wasi",
  "linux",
]);
/** Annotation naming the file a layer holds (set by ORAS and `oci-tar-builder`). */
export const TITLE_ANNOTATION = "org.opencontainers.image.title";
/** Indexes nested deeper than this are refused (a loop or a broken image). */
export const MAX_INDEX_DEPTH = 4;
/** Largest manifest, index or config read from the store. */
export const MAX_METADATA_BYTES = 4 << 20;
/** Largest Wasm layer read from the store. */
export const MAX_LAYER_BYTES = 512 << 20;

/** An OCI content descriptor (the JSON form, camelCase). */
export interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: { architecture?: string; os?: string; variant?: string };
}

/** A manifest's config and layers. */
export interface OciManifest {
  config: OciDescriptor;
  layers: OciDescriptor[];
}

/** What the shim uses of an image config. */
export interface ImageProcessConfig {
  architecture: string;
  os: string;
  /** `config.Entrypoint` ([] when absent, as in Wasm artifact configs). */
  entrypoint: string[];
  /** `config.Cmd` ([] when absent). */
  cmd: string[];
}

/** A Wasm layer of a manifest. */
export interface WasmLayer {
  descriptor: OciDescriptor;
  /** Its {@linkcode TITLE_ANNOTATION}, if any. */
  title?: string;
}

/** The layer that runs, and why. */
export interface LayerChoice {
  layer: WasmLayer;
  /** Exported function to call (from `args[0]`'s `#func`, default `_start`). */
  func: string;
  /** Says which rule picked the layer (for the shim's log). */
  why: string;
}

const DIGEST_RE = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;

function malformed(what: string, why: string): ShimError {
  return new ShimError(Kind.INVALID_ARGUMENT, `${what} is malformed: ${why}`);
}

function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (err) {
    throw malformed(what, `not UTF-8 JSON (${(err as Error).message})`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw malformed(what, "not a JSON object");
  }
  return value as Record<string, unknown>;
}

function stringMap(value: unknown): Record<string, string> | undefined {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) if (typeof v === "string") out[k] = v;
  return out;
}

/** Validates one descriptor of a manifest or index. */
export function parseDescriptor(value: unknown, what: string): OciDescriptor {
  if (typeof value !== "object" || value === null) throw malformed(what, "not an object");
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== "string" || d.mediaType === "") {
    throw malformed(what, "no mediaType");
  }
  if (typeof d.digest !== "string" || !DIGEST_RE.test(d.digest)) {
    throw malformed(what, `digest ${JSON.stringify(d.digest)} is not sha256:<64 hex> or sha512`);
  }
  if (typeof d.size !== "number" || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw malformed(what, `size ${JSON.stringify(d.size)} is not a non-negative integer`);
  }
  const out: OciDescriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  const annotations = stringMap(d.annotations);
  if (annotations) out.annotations = annotations;
  if (typeof d.platform === "object" && d.platform !== null) {
    const p = d.platform as Record<string, unknown>;
    out.platform = {
      architecture: typeof p.architecture === "string" ? p.architecture : undefined,
      os: typeof p.os === "string" ? p.os : undefined,
      variant: typeof p.variant === "string" ? p.variant : undefined,
    };
  }
  return out;
}

/** Whether a blob of this media type (or, when unknown, this JSON) is an index. */
export function isIndex(mediaType: string, json?: Record<string, unknown>): boolean {
  if (mediaType === ManifestMediaType.ociIndex) return true;
  if (mediaType === ManifestMediaType.dockerManifestList) return true;
  if (mediaType === ManifestMediaType.ociManifest) return false;
  if (mediaType === ManifestMediaType.dockerManifest) return false;
  return json !== undefined && Array.isArray(json.manifests) && !("layers" in json);
}

/** The `manifests` of an index. */
export function parseIndex(bytes: Uint8Array, what: string): OciDescriptor[] {
  const json = parseJson(bytes, what);
  if (!Array.isArray(json.manifests)) throw malformed(what, "no manifests array");
  return json.manifests.map((m, i) => parseDescriptor(m, `${what} manifests[${i}]`));
}

/** The config and layers of a manifest. */
export function parseManifest(bytes: Uint8Array, what: string): OciManifest {
  const json = parseJson(bytes, what);
  if (!Array.isArray(json.layers)) throw malformed(what, "no layers array");
  return {
    config: parseDescriptor(json.config, `${what} config`),
    layers: json.layers.map((l, i) => parseDescriptor(l, `${what} layers[${i}]`)),
  };
}

function stringList(value: unknown): string[] {
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];
}

/**
 * Reads an image config: an OCI/Docker image config (`config.Entrypoint`/`Cmd`) or a
 * Wasm artifact config (`application/vnd.wasm.config.v0+json`: architecture and os
 * only).
 */
export function parseImageConfig(bytes: Uint8Array, what: string): ImageProcessConfig {
  const json = parseJson(bytes, what);
  const process = (typeof json.config === "object" && json.config !== null)
    ? json.config as Record<string, unknown>
    : {};
  return {
    architecture: typeof json.architecture === "string" ? json.architecture : "",
    os: typeof json.os === "string" ? json.os : "",
    entrypoint: stringList(process.Entrypoint),
    cmd: stringList(process.Cmd),
  };
}

/** Whether an index entry is for a Wasm platform. */
export function isWasmPlatform(d: OciDescriptor): boolean {
  return d.platform?.architecture === WASM_ARCHITECTURE &&
    WASM_PLATFORM_OSES.has(d.platform.os ?? "");
}

/**
 * Picks the manifest to run from an index: the first entry for a Wasm platform
 * (architecture `wasm`, os one of {@linkcode WASM_PLATFORM_OSES}); or, when no entry
 * says its platform, the only entry. Undefined when there is none.
 */
export function selectPlatformManifest(
  manifests: readonly OciDescriptor[],
): OciDescriptor | undefined {
  const wasm = manifests.find(isWasmPlatform);
  if (wasm) return wasm;
  if (manifests.length === 1 && manifests[0].platform === undefined) return manifests[0];
  return undefined;
}

/** Whether a layer media type is one of {@linkcode WASM_LAYER_MEDIA_TYPES}. */
export function isWasmLayerMediaType(mediaType: string): boolean {
  return WASM_LAYER_MEDIA_TYPES.has(mediaType);
}

/** The Wasm layers of a manifest, in order. */
export function wasmLayers(layers: readonly OciDescriptor[]): WasmLayer[] {
  return layers.filter((l) => isWasmLayerMediaType(l.mediaType)).map((descriptor) => {
    const title = descriptor.annotations?.[TITLE_ANNOTATION];
    return title ? { descriptor, title } : { descriptor };
  });
}

/** `a/b.wasm`, `/a/b.wasm` and `./a/b.wasm` all become `a/b.wasm`. */
function normalizeName(name: string): string {
  return name.split("/").filter((c) => c !== "" && c !== ".").join("/");
}

function basename(name: string): string {
  return normalizeName(name).split("/").pop() ?? "";
}

/**
 * The layer `name` designates: by digest, by title (leading `/` and `./` ignored), or
 * by the title's base name when exactly one layer has it.
 */
export function findLayer(layers: readonly WasmLayer[], name: string): WasmLayer | undefined {
  if (name === "") return undefined;
  const byDigest = layers.find((l) => l.descriptor.digest === name);
  if (byDigest) return byDigest;
  const wanted = normalizeName(name);
  const exact = layers.filter((l) => l.title !== undefined && normalizeName(l.title) === wanted);
  if (exact.length > 0) return exact[0];
  const base = basename(name);
  const byBase = layers.filter((l) => l.title !== undefined && basename(l.title) === base);
  return byBase.length === 1 ? byBase[0] : undefined;
}

/** A short name for a layer in messages: `probe.wasm (sha256:0123456789ab…)`. */
export function layerLabel(layer: WasmLayer): string {
  const digest = `${layer.descriptor.digest.slice(0, 19)}…`;
  return layer.title ? `${layer.title} (layer ${digest})` : `layer ${digest}`;
}

/**
 * Chooses the layer to run: the one `args[0]` (before any `#func`) names; else the
 * one the image config's `Entrypoint[0]` (or, without one, `Cmd[0]`) names; else the
 * only Wasm layer.
 *
 * @param image the image name, for messages
 * @throws {ShimError} NOT_FOUND when there are several layers and nothing names one
 */
export function chooseLayer(
  layers: readonly WasmLayer[],
  args: readonly string[],
  config: Pick<ImageProcessConfig, "entrypoint" | "cmd">,
  image: string,
): LayerChoice {
  const { path, func } = splitArg0(args[0] ?? "");
  const fromArgs = findLayer(layers, path);
  if (fromArgs) return { layer: fromArgs, func, why: `process.args[0] "${path}" names it` };
  const configName = config.entrypoint[0] ?? config.cmd[0] ?? "";
  const fromConfig = findLayer(layers, configName);
  if (fromConfig) {
    const field = config.entrypoint.length > 0 ? "Entrypoint" : "Cmd";
    return { layer: fromConfig, func, why: `the image's ${field} "${configName}" names it` };
  }
  if (layers.length === 1) return { layer: layers[0], func, why: "it is the only Wasm layer" };
  const names = layers.map(layerLabel).join(", ");
  throw notFound(
    `image "${image}" has ${layers.length} Wasm layers (${names}) and neither process.args[0] ` +
      `"${path}" nor the image's Entrypoint/Cmd${configName ? ` "${configName}"` : ""} ` +
      `names one of them by title or digest`,
  );
}

/** What {@linkcode resolveArtifact} needs from containerd. */
export interface ImageSource {
  /** The target descriptor of image `name`. */
  imageTarget(name: string): Promise<OciDescriptor>;
  /** The verified bytes of a blob (at most `maxBytes`). */
  read(descriptor: OciDescriptor, maxBytes: number, what: string): Promise<Uint8Array>;
}

/** A container's image resolved to the Wasm layer it runs. */
export interface ResolvedArtifact {
  /** Image name. */
  image: string;
  /** The platform manifest used. */
  manifest: OciDescriptor;
  /** The chosen layer, and why. */
  choice: LayerChoice;
}

/** Why a container is not a Wasm artifact (the caller keeps its own error then). */
export interface NotAnArtifact {
  none: string;
}

/**
 * Resolves image `image` to the Wasm layer a container with `args` runs (without
 * reading the layer). Images that are not Wasm artifacts give
 * {@linkcode NotAnArtifact}.
 *
 * @throws {ShimError} for a broken image (malformed or missing manifest or config,
 *   several layers and none named), with containerd's code for failed calls
 */
export async function resolveArtifact(
  source: ImageSource,
  image: string,
  args: readonly string[],
): Promise<ResolvedArtifact | NotAnArtifact> {
  let target = await source.imageTarget(image);
  for (let depth = 0; isIndexDescriptor(target); depth++) {
    const what = `image "${image}" index ${target.digest}`;
    if (depth >= MAX_INDEX_DEPTH) {
      throw malformed(what, `indexes nested more than ${MAX_INDEX_DEPTH} deep`);
    }
    const manifests = parseIndex(await source.read(target, MAX_METADATA_BYTES, what), what);
    const chosen = selectPlatformManifest(manifests);
    if (chosen === undefined) {
      const platforms = manifests.map((m) =>
        m.platform ? `${m.platform.os ?? "?"}/${m.platform.architecture ?? "?"}` : "unspecified"
      );
      return {
        none: `image "${image}" has no wasm platform manifest (platforms: ${
          platforms.join(", ") || "none"
        })`,
      };
    }
    target = chosen;
  }
  const what = `image "${image}" manifest ${target.digest}`;
  const manifest = parseManifest(await source.read(target, MAX_METADATA_BYTES, what), what);
  const configWhat = `image "${image}" config ${manifest.config.digest}`;
  const config = parseImageConfig(
    await source.read(manifest.config, MAX_METADATA_BYTES, configWhat),
    configWhat,
  );
  if (config.architecture !== WASM_ARCHITECTURE) {
    return {
      none: `image "${image}" is for architecture "${config.architecture}", not "wasm"`,
    };
  }
  const layers = wasmLayers(manifest.layers);
  if (layers.length === 0) {
    const types = [...new Set(manifest.layers.map((l) => l.mediaType))].join(", ") || "none";
    return { none: `image "${image}" has no Wasm layers (layer media types: ${types})` };
  }
  return { image, manifest: target, choice: chooseLayer(layers, args, config, image) };
}

function isIndexDescriptor(d: OciDescriptor): boolean {
  return isIndex(d.mediaType);
}
