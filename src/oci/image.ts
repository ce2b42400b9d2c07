/**
 * Builds OCI image-layout tar archives (`oci-layout`, `index.json`, `blobs/sha256/*`,
 * plus a Docker-style `manifest.json`) that `ctr image import --all-platforms` accepts:
 * WebAssembly images (`os: wasip1`, `architecture: wasm`), Wasm OCI artifacts
 * (config `application/vnd.wasm.config.v0+json`, raw `.wasm` layers) and native Linux
 * images (for runc baselines).
 *
 * Output is reproducible: no timestamps, sorted entries, uid/gid 0, and layers stored
 * as plain tar unless gzip is asked for (gzip output is deterministic for one zlib
 * build, with mtime 0 in its header, but may change across zlib versions).
 *
 * @example
 * ```ts
 * await buildImage({
 *   name: "probe", repo: "example.com/test", tag: "v1", outPath: "/tmp/probe.tar",
 *   config: { entrypoint: ["/probe.wasm"] },
 *   layers: [{ files: [{ path: "/probe.wasm", hostPath: "probe.wasm" }] }],
 * });
 * ```
 *
 * @module
 */

import { gunzipSync, gzipSync } from "node:zlib";
import { digestOf } from "./digest.ts";
import { type TarEntry, writeTar } from "./tar.ts";

/** Media types used by the builder. */
export const MediaType = {
  ociLayout: "application/vnd.oci.layout.header.v1+json",
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layerTar: "application/vnd.oci.image.layer.v1.tar",
  layerTarGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  dockerLayerTar: "application/vnd.docker.image.rootfs.diff.tar",
  dockerLayerTarGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  /** Config of a Wasm OCI artifact (CNCF TAG Runtime layout, used by runwasi). */
  wasmConfig: "application/vnd.wasm.config.v0+json",
  /** Raw `.wasm` layer of a Wasm OCI artifact. */
  wasm: "application/wasm",
  /** Raw `.wasm` layer as runwasi's `oci-tar-builder` labels components and modules. */
  wasmComponentLayer: "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
  /** Raw `.wasm` layer of a Spin application (SpinKube). */
  wasmContentLayer: "application/vnd.wasm.content.layer.v1+wasm",
} as const;

/** The media types a raw wasm layer of an artifact may have (all three run on the shim). */
export const WASM_LAYER_TYPES: readonly string[] = [
  MediaType.wasm,
  MediaType.wasmComponentLayer,
  MediaType.wasmContentLayer,
];

/** Annotation naming the file a layer holds (ORAS; the shim matches `args[0]` against it). */
export const ANNOTATION_TITLE = "org.opencontainers.image.title";

/** Annotation containerd's importer uses as the image name, verbatim. */
export const ANNOTATION_IMAGE_NAME = "io.containerd.image.name";
/** OCI annotation holding the tag. */
export const ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name";

/** The first 4 bytes of every WebAssembly binary. */
export const WASM_MAGIC: Uint8Array = new Uint8Array([0x00, 0x61, 0x73, 0x6d]);

/** Image configuration: platform and the process defaults of the image. */
export interface ImageConfig {
  /** Defaults to `"wasip1"`. Use `"linux"` for native images. */
  os?: string;
  /** Defaults to `"wasm"`. Use `"amd64"` (etc.) for native images. */
  architecture?: string;
  variant?: string;
  entrypoint?: string[];
  cmd?: string[];
  /** `KEY=value` entries. */
  env?: string[];
  /** Working directory (`WorkingDir`). */
  cwd?: string;
  user?: string;
  labels?: Record<string, string>;
  /** RFC 3339 creation time; omitted unless given (keeps builds reproducible). */
  created?: string;
}

/** One file, directory or symlink of a layer built from a file list. */
export interface LayerFile {
  /** Absolute path inside the image, e.g. `/app.wasm`. */
  path: string;
  /** Defaults to `"file"`. */
  type?: "file" | "directory" | "symlink";
  /** Content (a string is UTF-8 encoded). Exactly one of `data`/`hostPath` for files. */
  data?: Uint8Array | string;
  /** Host file to read the content from. */
  hostPath?: string;
  /** Permission bits; default: the host file's, else 0o644 (0o755 for directories). */
  mode?: number;
  /** Symlink target. */
  linkname?: string;
}

/** A layer built here as a tar of the given files (parent directories are added). */
export interface FilesLayer {
  files: LayerFile[];
  /** Store it gzip-compressed (`…tar+gzip`). Default false: plain `…tar`. */
  gzip?: boolean;
  annotations?: Record<string, string>;
}

/**
 * A layer stored as given: an existing layer tar (plain or gzip) or a raw `.wasm`.
 * Exactly one of `data`/`hostPath`.
 */
export interface BlobLayer {
  mediaType: string;
  data?: Uint8Array;
  hostPath?: string;
  annotations?: Record<string, string>;
}

/** A layer of the image. */
export type LayerSpec = FilesLayer | BlobLayer;

/** Options for {@linkcode buildImage} and {@linkcode buildImageArchive}. */
export interface BuildImageOptions {
  /** Image name (path components, e.g. `probe` or `team/probe`). */
  name: string;
  /** Optional repository prefix, e.g. `ghcr.io/acme`; the image is `<repo>/<name>:<tag>`. */
  repo?: string;
  /** Defaults to `latest`. */
  tag?: string;
  config?: ImageConfig;
  layers: LayerSpec[];
  /**
   * Build a Wasm OCI artifact: config media type `application/vnd.wasm.config.v0+json`
   * with `layerDigests`; every layer must be a {@linkcode BlobLayer} of raw wasm.
   */
  asArtifact?: boolean;
  /** Annotations for the manifest. */
  annotations?: Record<string, string>;
}

/** A content descriptor. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** What was built. */
export interface BuiltImage {
  /** Full reference, `<repo>/<name>:<tag>` (the `io.containerd.image.name`). */
  reference: string;
  tag: string;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  /** Size of the archive in bytes. */
  size: number;
}

/** Result of {@linkcode buildImageArchive}: the tar bytes and what they hold. */
export interface ImageArchive extends BuiltImage {
  tar: Uint8Array;
}

/** Result of {@linkcode buildImage}. */
export interface WrittenImage extends BuiltImage {
  /** Where the archive was written. */
  path: string;
}

const encoder = new TextEncoder();

// Grammar of github.com/distribution/reference (without IPv6 hosts).
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const DOMAIN = `${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*(?::[0-9]+)?`;
const NAME_RE = new RegExp(`^(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const PATH_RE = new RegExp(`^${PATH_COMPONENT}(?:/${PATH_COMPONENT})*$`);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const NAME_MAX = 255;

/** Throws unless `tag` is a valid image tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`). */
export function validateTag(tag: string): void {
  if (!TAG_RE.test(tag)) {
    throw new Error(
      `invalid tag ${
        JSON.stringify(tag)
      }: a tag is 1-128 of [A-Za-z0-9_.-] and cannot start with '.' or '-'`,
    );
  }
}

/**
 * Joins repo, name and tag into a full reference and validates it against the
 * distribution reference grammar. Throws with the reason if it is not valid.
 * The result is not normalised (no `docker.io/library/` is added): containerd's
 * importer stores `io.containerd.image.name` verbatim, so `ctr` finds the image by
 * exactly this name, while CRI looks names up normalised — give a repo for CRI use.
 */
export function imageReference(name: string, repo: string | undefined, tag = "latest"): string {
  if (!PATH_RE.test(name)) {
    throw new Error(
      `invalid image name ${JSON.stringify(name)}: use lowercase letters, digits and separators ` +
        `('.', '_', '__', '-') between them, with '/' between path components`,
    );
  }
  const full = repo ? `${repo.replace(/\/+$/, "")}/${name}` : name;
  if (!NAME_RE.test(full)) {
    throw new Error(
      `invalid repository ${JSON.stringify(repo)}: expected [host[:port]/]path, ` +
        `with a lowercase path (e.g. ghcr.io/acme/tools)`,
    );
  }
  if (full.length > NAME_MAX) {
    throw new Error(
      `image name ${full} is ${full.length} characters, over the limit of ${NAME_MAX}`,
    );
  }
  validateTag(tag);
  return `${full}:${tag}`;
}

/** Whether `bytes` starts with the WebAssembly magic `\0asm`. */
export function isWasm(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && WASM_MAGIC.every((b, i) => bytes[i] === b);
}

/** Whether `bytes` is a WebAssembly component (layer 1) rather than a core module. */
export function isWasmComponent(bytes: Uint8Array): boolean {
  return isWasm(bytes) && bytes[6] === 0x01 && bytes[7] === 0x00;
}

/** Whether a media type names a raw wasm layer. */
export function isWasmMediaType(mediaType: string): boolean {
  return mediaType === MediaType.wasm || mediaType === MediaType.wasmComponentLayer ||
    /^application\/vnd\.[a-z0-9.-]*wasm[a-z0-9.-]*\+wasm$/.test(mediaType);
}

type TarKind = "tar" | "gzip" | "zstd" | undefined;

/** The compression of a layer media type, or undefined if it is not a tar layer. */
function tarKind(mediaType: string): TarKind {
  if (mediaType.startsWith("application/vnd.oci.image.layer.")) {
    if (mediaType.endsWith("+gzip")) return "gzip";
    if (mediaType.endsWith("+zstd")) return "zstd";
    return "tar";
  }
  if (mediaType === MediaType.dockerLayerTar) return "tar";
  if (mediaType === MediaType.dockerLayerTarGzip) return "gzip";
  return undefined;
}

/** `sha256:<hex>` of some bytes. */
export function sha256Digest(bytes: Uint8Array): Promise<string> {
  return digestOf(bytes, "sha256");
}

function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** gzip with a fixed header (mtime 0), so equal input gives equal output. */
function gzip(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(gzipSync(bytes, { level: 9 }));
  out.fill(0, 4, 8); // mtime (already 0 with node:zlib; made explicit)
  return out;
}

async function readHost(path: string, what: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(path);
  } catch (e) {
    throw new Error(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

async function layerFileEntry(f: LayerFile): Promise<TarEntry> {
  const type = f.type ?? "file";
  if (!f.path.startsWith("/")) {
    throw new Error(`layer file path ${JSON.stringify(f.path)} must be absolute inside the image`);
  }
  if (type !== "file") {
    if (f.data !== undefined || f.hostPath !== undefined) {
      throw new Error(`layer entry ${f.path} is a ${type}: it cannot have data or hostPath`);
    }
    return { path: f.path, type, mode: f.mode, linkname: f.linkname };
  }
  if ((f.data === undefined) === (f.hostPath === undefined)) {
    throw new Error(`layer file ${f.path} needs exactly one of data or hostPath`);
  }
  let data: Uint8Array;
  let mode = f.mode;
  if (f.hostPath !== undefined) {
    data = await readHost(f.hostPath, `file for ${f.path}`);
    if (mode === undefined) mode = ((await Deno.stat(f.hostPath)).mode ?? 0o644) & 0o7777;
  } else {
    data = typeof f.data === "string" ? encoder.encode(f.data) : f.data!;
  }
  return { path: f.path, type: "file", data, mode };
}

/**
 * Lists a host directory as layer files under `into` (default `/`): regular files
 * with their modes, directories and symlinks. Other file types are an error.
 */
export async function filesFromDirectory(dir: string, into = "/"): Promise<LayerFile[]> {
  const out: LayerFile[] = [];
  const base = into.endsWith("/") ? into : `${into}/`;
  async function walk(host: string, rel: string) {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(host));
    } catch (e) {
      throw new Error(`cannot list layer directory ${host}: ${(e as Error).message}`);
    }
    for (const e of entries) {
      const hostPath = `${host}/${e.name}`;
      const path = `${base}${rel}${e.name}`;
      const st = await Deno.lstat(hostPath);
      const mode = (st.mode ?? 0) & 0o7777;
      if (st.isSymlink) {
        out.push({ path, type: "symlink", linkname: await Deno.readLink(hostPath) });
      } else if (st.isDirectory) {
        out.push({ path, type: "directory", mode });
        await walk(hostPath, `${rel}${e.name}/`);
      } else if (st.isFile) {
        out.push({ path, hostPath, mode });
      } else {
        throw new Error(`cannot put ${hostPath} in a layer: only files, directories and symlinks`);
      }
    }
  }
  await walk(dir.replace(/\/+$/, "") || "/", "");
  return out;
}

interface BuiltLayer {
  descriptor: Descriptor;
  diffId: string;
  blob: Uint8Array;
}

async function buildLayer(spec: LayerSpec, index: number): Promise<BuiltLayer> {
  if ("files" in spec) {
    const entries = await Promise.all(spec.files.map(layerFileEntry));
    const tar = writeTar(entries, { addParents: true });
    const blob = spec.gzip ? gzip(tar) : tar;
    return {
      blob,
      diffId: await sha256Digest(tar),
      descriptor: {
        mediaType: spec.gzip ? MediaType.layerTarGzip : MediaType.layerTar,
        digest: await sha256Digest(blob),
        size: blob.length,
        ...(spec.annotations ? { annotations: spec.annotations } : {}),
      },
    };
  }
  const what = `layer ${index + 1} (${spec.mediaType})`;
  if (!spec.mediaType || !/^[\w.+-]+\/[\w.+-]+$/.test(spec.mediaType)) {
    throw new Error(`${what}: media type must look like type/subtype`);
  }
  if ((spec.data === undefined) === (spec.hostPath === undefined)) {
    throw new Error(`${what}: give exactly one of data or hostPath`);
  }
  const blob = spec.data ?? await readHost(spec.hostPath!, what);
  const kind = tarKind(spec.mediaType);
  let diffId: string;
  if (kind === "gzip") {
    if (!isGzip(blob)) throw new Error(`${what} is not gzip data, but its media type says +gzip`);
    diffId = await sha256Digest(new Uint8Array(gunzipSync(blob)));
  } else if (kind === "tar") {
    if (isGzip(blob)) {
      throw new Error(`${what} is gzip-compressed: use the media type ${spec.mediaType}+gzip`);
    }
    diffId = await sha256Digest(blob);
  } else if (kind === "zstd") {
    throw new Error(`${what}: zstd layers are not supported (no diff id without a zstd decoder)`);
  } else {
    if (isWasmMediaType(spec.mediaType) && !isWasm(blob)) {
      throw new Error(`${what} does not start with the wasm magic \\0asm: not a wasm binary`);
    }
    diffId = await sha256Digest(blob);
  }
  return {
    blob,
    diffId,
    descriptor: {
      mediaType: spec.mediaType,
      digest: await sha256Digest(blob),
      size: blob.length,
      ...(spec.annotations ? { annotations: spec.annotations } : {}),
    },
  };
}

function json(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

function imageConfigJson(config: ImageConfig, diffIds: string[]): Record<string, unknown> {
  const process: Record<string, unknown> = {};
  if (config.user !== undefined) process.User = config.user;
  if (config.env !== undefined) process.Env = config.env;
  if (config.entrypoint !== undefined) process.Entrypoint = config.entrypoint;
  if (config.cmd !== undefined) process.Cmd = config.cmd;
  if (config.cwd !== undefined) process.WorkingDir = config.cwd;
  if (config.labels !== undefined) process.Labels = sortKeys(config.labels);
  return {
    ...(config.created ? { created: config.created } : {}),
    architecture: config.architecture ?? "wasm",
    os: config.os ?? "wasip1",
    ...(config.variant ? { variant: config.variant } : {}),
    config: process,
    rootfs: { type: "layers", diff_ids: diffIds },
  };
}

function sortKeys(obj: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

/**
 * Builds an OCI image-layout tar in memory. Throws (with what and why) on an invalid
 * reference, unreadable inputs, or layers whose content contradicts their media type.
 */
export async function buildImageArchive(opts: BuildImageOptions): Promise<ImageArchive> {
  const tag = opts.tag ?? "latest";
  const reference = imageReference(opts.name, opts.repo, tag);
  if (opts.layers.length === 0) throw new Error("an image needs at least one layer");
  const config = opts.config ?? {};
  const layers: BuiltLayer[] = [];
  for (const [i, spec] of opts.layers.entries()) {
    if (opts.asArtifact && "files" in spec) {
      throw new Error(`layer ${i + 1}: a wasm artifact holds raw wasm blobs, not file trees`);
    }
    const layer = await buildLayer(spec, i);
    if (opts.asArtifact && !isWasmMediaType(layer.descriptor.mediaType)) {
      throw new Error(
        `layer ${i + 1} has media type ${layer.descriptor.mediaType}: a wasm artifact takes ` +
          `raw wasm layers (${WASM_LAYER_TYPES.join(", ")})`,
      );
    }
    layers.push(layer);
  }

  const configBlob = opts.asArtifact
    ? json({
      ...(config.created ? { created: config.created } : {}),
      architecture: config.architecture ?? "wasm",
      os: config.os ?? "wasip1",
      layerDigests: layers.map((l) => l.descriptor.digest),
      component: null,
    })
    // rootfs.diff_ids lists the filesystem (tar) layers only: containerd 1.7+ unpacks an
    // image's tar layers and skips the others, and refuses an image whose diff_ids
    // count differs from that ("mismatched image rootfs and manifest layers"). The
    // Wasm layers are in the manifest, where the shim finds them.
    : json(imageConfigJson(
      config,
      layers.filter((l) => !isWasmMediaType(l.descriptor.mediaType)).map((l) => l.diffId),
    ));
  const configDesc: Descriptor = {
    mediaType: opts.asArtifact ? MediaType.wasmConfig : MediaType.config,
    digest: await sha256Digest(configBlob),
    size: configBlob.length,
  };
  const manifestBlob = json({
    schemaVersion: 2,
    mediaType: MediaType.manifest,
    config: configDesc,
    layers: layers.map((l) => l.descriptor),
    ...(opts.annotations ? { annotations: sortKeys(opts.annotations) } : {}),
  });
  const manifestDesc: Descriptor = {
    mediaType: MediaType.manifest,
    digest: await sha256Digest(manifestBlob),
    size: manifestBlob.length,
  };
  const index = json({
    schemaVersion: 2,
    mediaType: MediaType.index,
    manifests: [{
      ...manifestDesc,
      annotations: { [ANNOTATION_IMAGE_NAME]: reference, [ANNOTATION_REF_NAME]: tag },
    }],
  });
  const blobPath = (d: string) => `blobs/sha256/${d.slice("sha256:".length)}`;
  const dockerManifest = json([{
    Config: blobPath(configDesc.digest),
    RepoTags: [reference],
    Layers: layers.map((l) => blobPath(l.descriptor.digest)),
  }]);

  const entries = new Map<string, TarEntry>();
  const add = (path: string, data: Uint8Array) => entries.set(path, { path, data });
  add("oci-layout", json({ imageLayoutVersion: "1.0.0" }));
  add("index.json", index);
  add("manifest.json", dockerManifest);
  add(blobPath(configDesc.digest), configBlob);
  add(blobPath(manifestDesc.digest), manifestBlob);
  for (const l of layers) add(blobPath(l.descriptor.digest), l.blob); // same layer twice: one blob
  const tar = writeTar(entries.values(), { addParents: true });
  return {
    tar,
    reference,
    tag,
    manifest: manifestDesc,
    config: configDesc,
    layers: layers.map((l) => l.descriptor),
    size: tar.length,
  };
}

/**
 * Builds an OCI image-layout tar and writes it to `outPath` atomically: the archive is
 * written to a temporary file in the same directory and renamed into place, so a
 * failure leaves no partial output.
 */
export async function buildImage(
  opts: BuildImageOptions & { outPath: string },
): Promise<WrittenImage> {
  const { tar, ...built } = await buildImageArchive(opts);
  await writeFileAtomic(opts.outPath, tar);
  return { ...built, path: opts.outPath };
}

/** Writes `data` to `path` via a temporary file in the same directory and a rename. */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : path.slice(0, slash);
  const base = path.slice(slash + 1);
  if (base === "" || base === "." || base === "..") {
    throw new Error(`output path ${path} names a directory, not a file`);
  }
  const tmp = `${dir}/.${base}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeFile(tmp, data, { createNew: true, mode: 0o644 });
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`cannot write ${path}: ${(e as Error).message}`);
  }
}
