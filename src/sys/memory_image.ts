/**
 * Copy-on-write memory images: a memory's initial content kept once, in a memfd, and
 * mapped privately over the pages of `ArrayBuffer`s that own their own mapping (a
 * WebAssembly memory's buffer).
 *
 * Mapping the image over a buffer ({@linkcode MemoryImage.mapOnto}) is one
 * `mmap(MAP_PRIVATE|MAP_FIXED)` whatever the size: pages are read from the image on
 * first touch and copied on first write. Resetting a buffer mapped that way
 * ({@linkcode MemoryImage.reset}) is one `madvise(MADV_DONTNEED)`: private copies are
 * dropped and the image shows through again. So neither grows with the memory's size.
 *
 * What this relies on in V8 (checked on every call where it can be): a non-shared
 * wasm memory's buffer is one page-aligned mapping V8 reserved for it alone; V8 never
 * copies or moves the pages of a memory that has not grown; it frees the whole
 * reservation with `munmap` (which unmaps ours too).
 *
 * @module
 */

import {
  close,
  ftruncate,
  madviseDontNeed,
  memfdCreate,
  mmapPrivateFixed,
  pwriteAll,
} from "./libc.ts";

const OS_PAGE = 4096;

/** Why a buffer cannot be mapped over (the caller copies instead). */
export class NotMappable extends Error {
  override name = "NotMappable";
}

/** The address of `buffer`'s bytes, checked to be a private, page-aligned mapping. */
function addressOf(buffer: ArrayBufferLike): Deno.PointerObject {
  if (!(buffer instanceof ArrayBuffer)) {
    throw new NotMappable("the memory is shared (a SharedArrayBuffer): other threads may use it");
  }
  if (buffer.byteLength === 0) throw new NotMappable("the memory has no pages");
  const base = Deno.UnsafePointer.of(buffer);
  if (base === null) throw new NotMappable("the memory's address is unknown");
  const addr = BigInt(Deno.UnsafePointer.value(base));
  if (addr % BigInt(OS_PAGE) !== 0n) {
    throw new NotMappable(`the memory's bytes (0x${addr.toString(16)}) are not page-aligned`);
  }
  return base;
}

/**
 * The initial content of memories of exactly `byteLength` bytes, in a memfd.
 *
 * @throws {SyscallError} (or a permission error without FFI) if it cannot be made
 */
export class MemoryImage {
  #fd: number;
  #byteLength: number;

  /**
   * @param byteLength the memories' size (a multiple of the OS page)
   * @param runs initial bytes at their offsets (later runs overwrite earlier ones)
   */
  constructor(byteLength: number, runs: Iterable<{ offset: number; bytes: Uint8Array }>) {
    if (byteLength <= 0 || byteLength % OS_PAGE !== 0) {
      throw new RangeError(`a memory image must be whole pages, not ${byteLength} bytes`);
    }
    const fd = memfdCreate("wasm-memory-image");
    try {
      ftruncate(fd, byteLength);
      for (const { offset, bytes } of runs) {
        if (offset + bytes.length > byteLength) {
          throw new RangeError(`an image run ends at ${offset + bytes.length}, past ${byteLength}`);
        }
        pwriteAll(fd, bytes, offset);
      }
    } catch (err) {
      close(fd);
      throw err;
    }
    this.#fd = fd;
    this.#byteLength = byteLength;
  }

  /** Size of the memories this image maps over. */
  get byteLength(): number {
    return this.#byteLength;
  }

  /**
   * Maps the image over `buffer` (copy-on-write): it then reads as the image, whatever
   * it held before.
   *
   * @throws {NotMappable} if the buffer is shared, of another size or not page-aligned
   * @throws {SyscallError} if mmap fails (drop the memory: its content is unknown)
   */
  mapOnto(buffer: ArrayBufferLike): void {
    if (this.#fd < 0) throw new Error("the memory image is closed");
    if (buffer.byteLength !== this.#byteLength) {
      throw new NotMappable(
        `the memory has ${buffer.byteLength} bytes, the image ${this.#byteLength}`,
      );
    }
    mmapPrivateFixed(addressOf(buffer), this.#byteLength, this.#fd);
  }

  /**
   * Resets a buffer the image was mapped onto and that has not grown since: it reads
   * as the image again.
   *
   * @throws {NotMappable} if it grew (its size differs from the image's)
   */
  reset(buffer: ArrayBufferLike): void {
    if (buffer.byteLength !== this.#byteLength) {
      throw new NotMappable(`the memory grew to ${buffer.byteLength} bytes: it cannot be reset`);
    }
    madviseDontNeed(addressOf(buffer), this.#byteLength);
  }

  /** Closes the memfd (mappings already made stay valid). */
  close(): void {
    if (this.#fd < 0) return;
    close(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Gives a buffer's pages back to the OS now rather than when the garbage collector
 * frees it (a dropped, grown memory). Shared or empty buffers are left as they are.
 */
export function discardPages(buffer: ArrayBufferLike): void {
  let base: Deno.PointerObject;
  try {
    base = addressOf(buffer);
  } catch {
    return;
  }
  madviseDontNeed(base, buffer.byteLength);
}
