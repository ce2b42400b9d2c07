/**
 * Reading images from containerd's content store over its gRPC API, through the
 * shim's blob cache: {@linkcode readBlob} streams one blob with `Content/Read` and
 * verifies it; {@linkcode ContainerdImageSource} is the {@linkcode ImageSource} that
 * `artifact.ts` resolves images with, answering from the cache when it can.
 *
 * @module
 */

import { Kind, ShimError } from "../../errdefs/errors.ts";
import type { ImageSource, OciDescriptor } from "../artifact.ts";
import type { BlobCache } from "../blob_cache.ts";
import type { FileHold } from "../../sys/cache_files.ts";
import { checkBlob } from "../../oci/digest.ts";
import type { ContainerdClient } from "./client.ts";

/** The blob-reading part of {@linkcode ContainerdClient}. */
export type ContentReader = Pick<ContainerdClient, "readContent" | "namespace">;

/**
 * Reads a whole blob from the content store and checks its size and digest.
 *
 * @param what names the blob for messages (e.g. `image "x" layer sha256:…`)
 * @throws {ShimError} NOT_FOUND when the store lacks it, RESOURCE_EXHAUSTED when the
 *   descriptor is over `maxBytes`, DATA_LOSS when the bytes are not what the
 *   descriptor says (size, digest, or chunks out of order)
 */
export async function readBlob(
  client: ContentReader,
  descriptor: Pick<OciDescriptor, "digest" | "size">,
  maxBytes: number,
  what: string,
): Promise<Uint8Array> {
  if (descriptor.size > maxBytes) {
    throw new ShimError(
      Kind.RESOURCE_EXHAUSTED,
      `${what} is ${descriptor.size} bytes, over the shim's limit of ${maxBytes}`,
    );
  }
  const out = new Uint8Array(descriptor.size);
  let filled = 0;
  try {
    for await (const chunk of client.readContent(descriptor.digest)) {
      if (chunk.offset !== filled) {
        throw new ShimError(
          Kind.DATA_LOSS,
          `${what}: containerd sent bytes at offset ${chunk.offset}, expected ${filled}`,
        );
      }
      if (filled + chunk.data.length > descriptor.size) {
        throw new ShimError(
          Kind.DATA_LOSS,
          `${what} in containerd's content store is longer than the ${descriptor.size} bytes ` +
            `its descriptor says: the content is corrupt`,
        );
      }
      out.set(chunk.data, filled);
      filled += chunk.data.length;
    }
  } catch (err) {
    if (err instanceof ShimError && err.kind === Kind.NOT_FOUND) {
      throw new ShimError(
        Kind.NOT_FOUND,
        `${what} is missing from containerd's content store (namespace ` +
          `"${client.namespace}"): ${err.message}`,
      );
    }
    throw err;
  }
  if (filled !== descriptor.size) {
    throw new ShimError(
      Kind.DATA_LOSS,
      `${what} in containerd's content store is ${filled} bytes, but its descriptor says ` +
        `${descriptor.size}: the content is truncated or corrupt`,
    );
  }
  await checkBlob(out, descriptor, `${what} in containerd's content store`);
  return out;
}

/** How often {@linkcode ContainerdImageSource.file} stores a blob that eviction takes. */
const MAX_HOLD_ATTEMPTS = 3;

/** Where the blobs of one resolution came from. */
export interface ReadStats {
  /** Blobs answered by the cache. */
  cached: number;
  /** Blobs read with `Content/Read`. */
  read: number;
  /** Bytes read with `Content/Read`. */
  bytesRead: number;
}

/** The client calls {@linkcode ContainerdImageSource} makes. */
export type ImageClient = Pick<
  ContainerdClient,
  "getContainer" | "getImage" | "readContent" | "namespace"
>;

/**
 * An {@linkcode ImageSource} over containerd's API that keeps every blob it reads in
 * a {@linkcode BlobCache} and answers from it first.
 */
export class ContainerdImageSource implements ImageSource {
  /** Counts of cache hits and reads, for the shim's log and tests. */
  readonly stats: ReadStats = { cached: 0, read: 0, bytesRead: 0 };
  #client: ImageClient;
  #cache: BlobCache;
  #log: (line: string) => void;

  /** A source reading through `client`, caching in `cache`. */
  constructor(client: ImageClient, cache: BlobCache, log: (line: string) => void = () => {}) {
    this.#client = client;
    this.#cache = cache;
    this.#log = log;
  }

  /** The image name of container `id` ("" for none). */
  async containerImage(id: string): Promise<string> {
    return (await this.#client.getContainer(id)).image;
  }

  /** The target descriptor of image `name`. */
  async imageTarget(name: string): Promise<OciDescriptor> {
    const image = await this.#client.getImage(name);
    const t = image.target;
    if (!t || t.digest === "") {
      throw new ShimError(Kind.FAILED_PRECONDITION, `image "${name}" has no target descriptor`);
    }
    return { mediaType: t.media_type, digest: t.digest, size: t.size, annotations: t.annotations };
  }

  /** A blob's verified bytes, from the cache or else from containerd (then cached). */
  async read(descriptor: OciDescriptor, maxBytes: number, what: string): Promise<Uint8Array> {
    return (await this.#fetch(descriptor, maxBytes, what)).bytes;
  }

  /**
   * Makes sure a blob is in the cache and holds its file against eviction, for a
   * guest runner to read; release the hold once the runner has read it.
   *
   * @throws {ShimError} as {@linkcode readBlob}, FAILED_PRECONDITION when the cache
   *   directory cannot hold it, UNAVAILABLE when it is evicted as fast as it is stored
   */
  async file(descriptor: OciDescriptor, maxBytes: number, what: string): Promise<FileHold> {
    // Between storing and holding, another process's eviction may take the entry
    // (a cap smaller than what runs at once): fetch it again, a few times.
    for (let attempt = 1; attempt <= MAX_HOLD_ATTEMPTS; attempt++) {
      await this.#fetch(descriptor, maxBytes, what, true);
      const hold = await this.#cache.hold(descriptor.digest);
      if (hold !== null) return hold;
    }
    throw new ShimError(
      Kind.UNAVAILABLE,
      `${what}: evicted from the shim's cache ${MAX_HOLD_ATTEMPTS} times before it could be ` +
        `used (raise WASMTIME_SHIM_CACHE_MAX_BYTES)`,
    );
  }

  async #fetch(
    descriptor: OciDescriptor,
    maxBytes: number,
    what: string,
    mustStore = false,
  ): Promise<{ bytes: Uint8Array; stored?: string }> {
    const hit = await this.#cache.get(descriptor);
    if (hit !== null) {
      this.stats.cached++;
      return { bytes: hit, stored: this.#cache.path(descriptor.digest) };
    }
    const bytes = await readBlob(this.#client, descriptor, maxBytes, what);
    this.stats.read++;
    this.stats.bytesRead += bytes.length;
    try {
      return { bytes, stored: await this.#cache.put(descriptor, bytes) };
    } catch (err) {
      if (mustStore) {
        throw new ShimError(
          Kind.FAILED_PRECONDITION,
          `${what}: ${(err as Error).message} (a Wasm layer must be stored there for its ` +
            `runner to read; set WASMTIME_SHIM_CACHE_DIR to a writable directory)`,
        );
      }
      this.#log(`${what}: not cached: ${(err as Error).message}`);
      return { bytes };
    }
  }
}
