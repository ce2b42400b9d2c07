/**
 * `oci-tar-builder`: packages WebAssembly modules and components as an OCI image-layout
 * tar for `ctr image import --all-platforms`, with the flags of runwasi's tool.
 *
 * ```sh
 * deno task oci-tar-builder -n probe -r example.com/e2e -m probe.wasm -o out/
 * ```
 *
 * Exit codes: 0 on success (or `--help`), 2 on any error, after printing
 * `oci-tar-builder: <what and why>` on stderr. Nothing is written on error: the
 * archive goes to a temp file in the output directory and is renamed at the end.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  ANNOTATION_TITLE,
  type BlobLayer,
  buildImage,
  filesFromDirectory,
  type ImageConfig,
  imageReference,
  isWasm,
  isWasmComponent,
  isWasmMediaType,
  type LayerSpec,
  MediaType,
  WASM_LAYER_TYPES,
} from "./image.ts";

/** The command's name, used in messages. */
export const COMMAND = "oci-tar-builder";

/** Usage text printed by `--help`. */
export const USAGE = `Usage: ${COMMAND} --name NAME [options]

Packages WebAssembly into an OCI image-layout tar (oci-layout, index.json,
blobs/sha256/*, manifest.json) for 'ctr image import --all-platforms'.

Options:
  -n, --name NAME          image name (required), e.g. wasi-demo-app
  -r, --repo REPO          repository prefix, e.g. ghcr.io/containerd/runwasi
  -t, --tag TAG            image tag (default: latest)
  -m, --module PATH        wasm module or component: stored at /<basename> in the
                           image and made the entrypoint (a raw application/wasm
                           layer with --as-artifact)
  -l, --layer TYPE=PATH    add a layer (repeatable). PATH is a file stored as is
                           with media type TYPE (e.g. application/wasm=./x.wasm, or
                           application/vnd.oci.image.layer.v1.tar=./rootfs.tar), or
                           a directory packed as a tar layer of TYPE
                           (application/vnd.oci.image.layer.v1.tar[+gzip])
  -c, --components DIR     add every *.wasm in DIR as a raw wasm layer
                           (${MediaType.wasmComponentLayer},
                           or application/wasm with --as-artifact)
  -a, --as-artifact        build a Wasm OCI artifact (config
                           ${MediaType.wasmConfig}, raw wasm layers)
  -w, --wasm-layer-type T  media type of the raw wasm layers that --module (with
                           --as-artifact) and --components make: one of
                           ${WASM_LAYER_TYPES.join(",\n                           ")}
  -o, --out-path PATH      output file, or an existing directory to write
                           <name>.tar into (default: ./<name>.tar)
  -h, --help               show this help

Image config: os wasip1 (wasip2 for an artifact made only of components),
architecture wasm, entrypoint /<module basename>. Raw wasm layers carry their
file name as ${ANNOTATION_TITLE}.
The image is named <repo>/<name>:<tag> (io.containerd.image.name).`;

/** A usage or input error: reported as `oci-tar-builder: <message>`, exit 2. */
export class UsageError extends Error {
  override name = "UsageError";
}

function basename(path: string): string {
  return path.replace(/\/+$/, "").split("/").pop() ?? path;
}

function dirname(path: string): string {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new UsageError(`cannot access ${path}: ${(e as Error).message}`);
  }
}

async function readWasm(path: string, what: string): Promise<Uint8Array> {
  const st = await statOrNull(path);
  if (!st) throw new UsageError(`${what} ${path} does not exist`);
  if (!st.isFile) throw new UsageError(`${what} ${path} is not a regular file`);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
  if (!isWasm(bytes)) {
    throw new UsageError(
      `${what} ${path} is not WebAssembly: it does not start with the magic bytes \\0asm`,
    );
  }
  return bytes;
}

const TAR_LAYER_TYPES = new Set<string>([
  MediaType.layerTar,
  MediaType.layerTarGzip,
  MediaType.dockerLayerTar,
  MediaType.dockerLayerTarGzip,
]);

/** Parses `TYPE=PATH` of `--layer` into a layer spec. */
async function layerFromFlag(value: string, asArtifact: boolean): Promise<LayerSpec> {
  const eq = value.indexOf("=");
  if (eq <= 0 || eq === value.length - 1) {
    throw new UsageError(
      `--layer ${JSON.stringify(value)}: expected TYPE=PATH, e.g. application/wasm=./app.wasm`,
    );
  }
  const mediaType = value.slice(0, eq);
  const path = value.slice(eq + 1);
  if (!/^[\w.+-]+\/[\w.+-]+$/.test(mediaType)) {
    throw new UsageError(
      `--layer ${value}: media type ${mediaType} is not of the form type/subtype`,
    );
  }
  const st = await statOrNull(path);
  if (!st) throw new UsageError(`--layer ${value}: ${path} does not exist`);
  if (asArtifact && !isWasmMediaType(mediaType)) {
    throw new UsageError(
      `--layer ${value}: a wasm artifact takes only wasm layers (${MediaType.wasm}), not ${mediaType}`,
    );
  }
  if (st.isDirectory) {
    if (!TAR_LAYER_TYPES.has(mediaType)) {
      throw new UsageError(
        `--layer ${value}: a directory becomes a tar layer, so its type must be ` +
          `${MediaType.layerTar} or ${MediaType.layerTarGzip}`,
      );
    }
    return { files: await filesFromDirectory(path), gzip: mediaType.endsWith("gzip") };
  }
  if (!st.isFile) throw new UsageError(`--layer ${value}: ${path} is not a file or directory`);
  if (isWasmMediaType(mediaType)) {
    return {
      mediaType,
      data: await readWasm(path, `--layer ${mediaType}`),
      annotations: { [ANNOTATION_TITLE]: basename(path) },
    };
  }
  return { mediaType, hostPath: path };
}

/** Runs the command; returns the exit code. Never throws, never exits the process. */
export async function main(args: string[]): Promise<number> {
  try {
    return await run(args);
  } catch (e) {
    console.error(`${COMMAND}: ${e instanceof Error ? e.message : String(e)}`);
    return 2;
  }
}

async function run(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        name: { type: "string", short: "n" },
        repo: { type: "string", short: "r" },
        tag: { type: "string", short: "t", default: "latest" },
        module: { type: "string", short: "m" },
        layer: { type: "string", short: "l", multiple: true },
        components: { type: "string", short: "c" },
        "as-artifact": { type: "boolean", short: "a", default: false },
        "wasm-layer-type": { type: "string", short: "w" },
        "out-path": { type: "string", short: "o" },
        help: { type: "boolean", short: "h", default: false },
      },
    }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message} (see --help)`);
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (!values.name) throw new UsageError("--name is required (see --help)");
  const asArtifact = values["as-artifact"]!;
  const tag = values.tag!;
  let reference: string;
  try {
    reference = imageReference(values.name, values.repo, tag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const wasmLayerType = values["wasm-layer-type"];
  if (wasmLayerType !== undefined && !WASM_LAYER_TYPES.includes(wasmLayerType)) {
    throw new UsageError(
      `--wasm-layer-type ${wasmLayerType}: expected one of ${WASM_LAYER_TYPES.join(", ")}`,
    );
  }
  if (!values.module && !values.layer?.length && !values.components) {
    throw new UsageError("nothing to package: give --module, --layer or --components");
  }

  // Where to write: a file path, or an existing directory (then <name>.tar inside it).
  let outPath = values["out-path"] ?? `${basename(values.name)}.tar`;
  const outStat = await statOrNull(outPath);
  if (outStat?.isDirectory || outPath.endsWith("/")) {
    if (!outStat) throw new UsageError(`output directory ${outPath} does not exist`);
    outPath = `${outPath.replace(/\/+$/, "")}/${basename(values.name)}.tar`;
  } else if (outStat && !outStat.isFile) {
    throw new UsageError(`output path ${outPath} exists and is not a regular file`);
  }
  const outDir = dirname(outPath);
  const dirStat = await statOrNull(outDir);
  if (!dirStat?.isDirectory) throw new UsageError(`output directory ${outDir} does not exist`);

  const layers: LayerSpec[] = [];
  const config: ImageConfig = { os: "wasip1", architecture: "wasm" };
  const wasmBlobs: Uint8Array[] = [];

  if (values.module) {
    const bytes = await readWasm(values.module, "module");
    const name = basename(values.module);
    if (asArtifact) {
      layers.push({
        mediaType: wasmLayerType ?? MediaType.wasm,
        data: bytes,
        annotations: { [ANNOTATION_TITLE]: name },
      });
      wasmBlobs.push(bytes);
    } else {
      layers.push({ files: [{ path: `/${name}`, data: bytes, mode: 0o755 }] });
      config.entrypoint = [`/${name}`];
    }
  }

  for (const value of values.layer ?? []) {
    const layer = await layerFromFlag(value, asArtifact);
    if ("mediaType" in layer && isWasmMediaType(layer.mediaType)) {
      wasmBlobs.push((layer as BlobLayer).data!);
    }
    layers.push(layer);
  }

  if (values.components) {
    const dir = values.components;
    const st = await statOrNull(dir);
    if (!st?.isDirectory) throw new UsageError(`--components ${dir} is not a directory`);
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) {
      if (e.name.endsWith(".wasm")) names.push(e.name);
    }
    if (names.length === 0) throw new UsageError(`--components ${dir} holds no .wasm files`);
    for (const name of names.sort()) {
      const bytes = await readWasm(`${dir}/${name}`, "component");
      layers.push({
        mediaType: wasmLayerType ?? (asArtifact ? MediaType.wasm : MediaType.wasmComponentLayer),
        data: bytes,
        annotations: { [ANNOTATION_TITLE]: name },
      });
      wasmBlobs.push(bytes);
    }
  }

  if (asArtifact && wasmBlobs.length > 0 && wasmBlobs.every(isWasmComponent)) {
    config.os = "wasip2";
  }

  const built = await buildImage({
    name: values.name,
    repo: values.repo,
    tag,
    config,
    layers,
    asArtifact,
    outPath,
  });
  console.log(`wrote ${built.path}: ${reference} (manifest ${built.manifest.digest})`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
