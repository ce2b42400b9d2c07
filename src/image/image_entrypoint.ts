/**
 * The entrypoint of a container whose Wasm is not in its rootfs: a Wasm OCI artifact
 * (see `artifact.ts`), whose layers the shim reads from containerd's content
 * store into its blob cache.
 *
 * {@linkcode resolveGuestEntrypoint} looks in the rootfs first (`entrypoint.ts`); only
 * when nothing there matches `process.args[0]` does it ask containerd, so images with
 * tar layers pay nothing. The containerd client (grpc-js, protobufjs) is imported on
 * that path only.
 *
 * @module
 */

import { Kind, ShimError } from "../errdefs/errors.ts";
import type { ContainerdAddress } from "./containerd/client.ts";
import { type Entrypoint, resolveEntrypoint } from "../wasm/entrypoint.ts";
import type { GuestConfig } from "../wasm/guest_init.ts";
import type { FileHold } from "../sys/cache_files.ts";

/** What {@linkcode resolveGuestEntrypoint} needs beyond the guest's config. */
export interface ImageEntrypointOptions {
  /** containerd's gRPC socket and namespace (the server's `-address`, `-namespace`). */
  containerd?: ContainerdAddress;
  /** Receives one line per resolution from an image (for the shim's log). */
  log?: (line: string) => void;
  /**
   * Receives the hold on a Wasm layer's cache entry (see `blob_cache.ts`): the caller
   * releases it once the guest's runner has read the layer. Without it the hold is
   * released at once, and eviction may take the file before anyone reads it.
   */
  keep?: (hold: FileHold) => void;
}

/**
 * Resolves the entrypoint in the rootfs, or else from the container's image: the
 * Wasm layer `process.args[0]`, the image's Entrypoint/Cmd, or the image's only Wasm
 * layer designates, stored in `<cacheDir>/blobs/` (the returned `hostPath`, with
 * `layer` set to its digest).
 *
 * @throws {ShimError} the rootfs lookup's error (NOT_FOUND naming the places searched)
 *   when the container has no image or its image has no Wasm layers; the image's
 *   own problem (a missing or corrupt layer, …) when it has some
 */
export async function resolveGuestEntrypoint(
  cfg: GuestConfig,
  options: ImageEntrypointOptions = {},
): Promise<Entrypoint> {
  try {
    return resolveEntrypoint(cfg);
  } catch (err) {
    if (!(err instanceof ShimError) || err.kind !== Kind.NOT_FOUND || !options.containerd) {
      throw err;
    }
    const found = await resolveImageEntrypoint(
      cfg,
      options.containerd,
      options.log,
      options.keep,
    );
    if ("none" in found) {
      options.log?.(`guest ${cfg.id}: no Wasm layers to run instead: ${found.none}`);
      throw err;
    }
    return found;
  }
}

/**
 * Resolves the entrypoint from the container's image only (see
 * {@linkcode resolveGuestEntrypoint}).
 *
 * @param keep receives the hold on the layer's cache entry (see
 *   {@linkcode ImageEntrypointOptions.keep})
 * @returns the entrypoint, or why the container has none in its image
 */
export async function resolveImageEntrypoint(
  cfg: GuestConfig,
  containerd: ContainerdAddress,
  log: (line: string) => void = () => {},
  keep: (hold: FileHold) => void = (hold) => hold.release(),
): Promise<Entrypoint | { none: string }> {
  const started = performance.now();
  const [{ resolveArtifact, layerLabel, MAX_LAYER_BYTES }, { BlobCache }, { ContainerdClient }, {
    ContainerdImageSource,
  }] = await Promise.all([
    import("./artifact.ts"),
    import("./blob_cache.ts"),
    import("./containerd/client.ts"),
    import("./containerd/content.ts"),
  ]);
  if (!cfg.cacheDir) {
    throw new ShimError(
      Kind.FAILED_PRECONDITION,
      `guest ${cfg.id}: the shim has no cache directory to keep Wasm layers in`,
    );
  }
  const client = await ContainerdClient.connect(containerd);
  const loadedMs = performance.now() - started;
  try {
    const source = new ContainerdImageSource(
      client,
      new BlobCache(cfg.cacheDir, (line) => log(`guest ${cfg.id}: ${line}`)),
      (line) => log(`guest ${cfg.id}: ${line}`),
    );
    let image: string;
    try {
      image = await source.containerImage(cfg.id);
    } catch (err) {
      return { none: `containerd cannot say which image it has: ${(err as Error).message}` };
    }
    if (image === "") return { none: "the container has no image" };
    const resolved = await resolveArtifact(source, image, cfg.args);
    if ("none" in resolved) return resolved;
    const { choice } = resolved;
    const label = layerLabel(choice.layer);
    const { digest } = choice.layer.descriptor;
    const title = choice.layer.title ? ` (${choice.layer.title})` : "";
    const held = await source.file(
      choice.layer.descriptor,
      MAX_LAYER_BYTES,
      `image "${image}" Wasm layer ${digest}${title}`,
    );
    keep(held);
    const hostPath = held.path;
    const { cached, read, bytesRead } = source.stats;
    log(
      `guest ${cfg.id}: image "${image}": running ${label} (${choice.why}); blobs: ${cached} ` +
        `from the shim's cache, ${read} read from containerd (${bytesRead} bytes); ` +
        `${(performance.now() - started).toFixed(0)} ms (client load ${loadedMs.toFixed(0)} ms)`,
    );
    return {
      hostPath,
      guestPath: `${image} ${label}`,
      func: choice.func,
      layer: digest,
    };
  } finally {
    client.close();
  }
}
