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
 * A reset that way makes every page the next user writes fault again (~2.5 µs each
 * here: ~290 µs for the 116 pages a componentize-js guest writes per request). So a
 * reset instead finds the private copies (the pages written since the image was
 * mapped) in the page table and copies the image back over them: they stay resident,
 * and the next writes do not fault ("keep resident", as wasmtime's pooling allocator
 * can). The page table is asked with the `PAGEMAP_SCAN` ioctl (Linux 6.7+), which
 * answers with runs of private pages only and skips what was never touched: ~5–10 µs
 * for 1 to 64 MiB. Where the kernel lacks it, `/proc/self/pagemap` is read, 8 bytes a
 * page: that costs in proportion to the memory's size (~5 ns per 4 KiB page, ~90 µs
 * for 64 MiB with the loop over it), so then which way is cheaper is decided from the
 * number of private copies the last page-table reset found ({@linkcode residentWins}).
 *
 * What this relies on in V8 (checked on every call where it can be): a non-shared
 * wasm memory's buffer is one page-aligned mapping V8 reserved for it alone; V8 never
 * copies or moves the pages of a memory that has not grown; it frees the whole
 * reservation with `munmap` (which unmaps ours too). A memory that grew (in place, in
 * its reservation: callers check its address did not change) has anonymous pages
 * after the image's mapping: a reset zeroes those it finds written, the same way.
 *
 * @module
 */

import {
  close,
  ftruncate,
  ioctlStruct,
  madviseDontNeed,
  madviseHugePage,
  memfdCreate,
  mmapPrivateFixed,
  mmapSharedReadOnly,
  munmap,
  open,
  OpenFlag,
  pread,
  pwriteAll,
} from "./libc.ts";

const OS_PAGE = 4096;

/** The process's page table, one 64-bit entry per page (see proc(5)). */
const PAGEMAP = "/proc/self/pagemap";
/** Bits of a pagemap entry's high 32-bit word (entry bits 63, 62 and 61). */
const PM_PRESENT = 0x8000_0000;
const PM_SWAPPED = 0x4000_0000;
const PM_FILE_OR_SHARED = 0x2000_0000;
/** Resets by madvise between two page-table resets, to learn the count again. */
const RELEARN_EVERY = 64;

/**
 * `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)` (linux/fs.h), on a pagemap fd.
 * The argument is twelve 64-bit words: size, flags, start, end, walk_end, vec, vec_len,
 * max_pages, category_inverted, category_mask, category_anyof_mask, return_mask; `vec`
 * receives `{ start, end, categories }` runs of pages that match.
 */
const PAGEMAP_SCAN = 0xc060_6610n;
const SCAN_ARG_WORDS = 12;
/** Page categories of `PAGEMAP_SCAN`. */
const PAGE_IS_FILE = 1n << 2n;
const PAGE_IS_PRESENT = 1n << 3n;
const PAGE_IS_SWAPPED = 1n << 4n;
const PAGE_IS_PFNZERO = 1n << 5n;
/** Runs asked for per ioctl (more: the scan goes on from where it stopped). */
const SCAN_RUNS = 256;

/**
 * The private pages of a range, from the `PAGEMAP_SCAN` ioctl: pages that are not the
 * file's and are present or swapped out (only private copies of a private file mapping
 * are either; a page never touched, or dropped by `madvise`, is neither). Pages that
 * map the kernel's zero page (past the image, only read since they were given back)
 * read as zeros already: writing zeros there would allocate a page for each.
 */
class PageScan {
  #fd: number;
  #arg = new BigUint64Array(SCAN_ARG_WORDS);
  #argBytes = new Uint8Array(this.#arg.buffer);
  /** Off the V8 heap (over 64 bytes), so its address stays put. */
  #runs = new BigUint64Array(SCAN_RUNS * 3);
  #runsAt = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#runs)));

  constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Calls `each(from, to)` (byte offsets from `base`) for every run of private pages in
   * `[base, base + length)`.
   *
   * @throws {SyscallError} if the kernel refuses the scan (EINVAL, ENOTTY: it has none)
   */
  runs(base: bigint, length: number, each: (from: number, to: number) => void): void {
    const arg = this.#arg;
    const end = base + BigInt(length);
    let start = base;
    while (start < end) {
      arg.fill(0n);
      arg[0] = BigInt(SCAN_ARG_WORDS * 8);
      arg[2] = start;
      arg[3] = end;
      arg[5] = this.#runsAt;
      arg[6] = BigInt(SCAN_RUNS);
      // Not a file page nor the zero page (inverted), and present or swapped.
      arg[8] = PAGE_IS_FILE | PAGE_IS_PFNZERO;
      arg[9] = PAGE_IS_FILE | PAGE_IS_PFNZERO;
      arg[10] = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
      arg[11] = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
      const n = ioctlStruct(this.#fd, PAGEMAP_SCAN, this.#argBytes, "PAGEMAP_SCAN");
      const runs = this.#runs;
      for (let i = 0; i < n; i++) each(Number(runs[i * 3] - base), Number(runs[i * 3 + 1] - base));
      const walkEnd = arg[4];
      if (walkEnd <= start) {
        throw new Error(`PAGEMAP_SCAN made no progress at 0x${start.toString(16)}`);
      }
      start = walkEnd;
    }
  }
}

/**
 * Whether copying private pages back (after reading `pages` page-table entries)
 * costs less than `madvise` and then a fault per page written again, for `dirty`
 * private pages. Measured per reset on a 2-core VM: reading the page table ~5 µs +
 * ~5.5 ns per 4 KiB page, copying a page back ~0.3 µs; `madvise` ~20 µs, a fault
 * ~2.5 µs. So: 5 + 0.0055·pages + 0.3·dirty < 20 + 2.5·dirty.
 */
export function residentWins(pages: number, dirty: number): boolean {
  return 0.0055 * pages < 15 + 2.2 * dirty;
}

/** The pagemap's fd (opened once), or null where it cannot be read. */
let pagemapFd: number | null | undefined;
function pagemap(): number | null {
  if (pagemapFd === undefined) {
    try {
      pagemapFd = open(PAGEMAP, OpenFlag.O_RDONLY | OpenFlag.O_CLOEXEC);
    } catch {
      pagemapFd = null;
    }
  }
  return pagemapFd;
}

/** The `PAGEMAP_SCAN` scanner, or null where the kernel has none (found on first use). */
let pageScan: PageScan | null | undefined;
function scanner(): PageScan | null {
  if (pageScan === undefined) {
    const fd = pagemap();
    pageScan = fd === null ? null : new PageScan(fd);
  }
  return pageScan;
}

/** Whether a `PAGEMAP_SCAN` has succeeded in this thread (then failures are not "none"). */
let scanWorked = false;

/** Whether resets find written pages with `PAGEMAP_SCAN` (for tests and benchmarks). */
export function pageScanInUse(): boolean {
  return scanner() !== null;
}

/**
 * Whether resets may use `PAGEMAP_SCAN` (default: where the kernel has it); false makes
 * them read `/proc/self/pagemap` (tests and benchmarks compare the two).
 */
export function allowPageScan(allowed: boolean): void {
  pageScan = allowed ? undefined : null;
}

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
  /** The image, mapped read-only (what private pages are copied back from), once needed. */
  #pristine: Uint8Array | null = null;
  #pristineAt: Deno.PointerObject | null = null;
  /** A buffer for the memory's page-table entries (two 32-bit words each). */
  #entries: Uint32Array<ArrayBuffer> | null = null;
  /** Private pages the last page-table reset copied back (NaN before the first). */
  #dirty = NaN;
  /** madvise resets since the last page-table reset. */
  #sinceLearned = 0;
  /** Pages past the image's end the current reset zeroed. */
  #past = 0;

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
   * Resets a buffer the image was mapped onto: its first {@linkcode byteLength} bytes
   * read as the image again, and any past them (the memory grew since: V8 grows a
   * memory in place, into anonymous pages after the image's mapping) as zeros.
   *
   * @param keepResident whether pages written may stay resident (the image, or zeros,
   *   copied back over them) where that is cheaper; false gives them back to the OS
   *   (`madvise`), for a memory that may wait long before it is used again
   * @param zeroAllPast whether to zero every byte past the image's end at once rather
   *   than find the pages written there (for a memory whose pages there are all resident
   *   anyway: the scan would find them all); with `keepResident` only
   * @returns how many pages past the image's end it found resident and zeroed (written
   *   since they were last given back; 0 when it gave the pages back instead)
   * @throws {NotMappable} if the buffer is smaller than the image
   */
  reset(buffer: ArrayBufferLike, keepResident = true, zeroAllPast = false): number {
    const length = buffer.byteLength;
    if (length < this.#byteLength) {
      throw new NotMappable(`the memory has ${length} bytes, the image ${this.#byteLength}`);
    }
    const base = addressOf(buffer);
    this.#past = 0;
    if (
      keepResident && zeroAllPast && length > this.#byteLength &&
      this.#copyBackScanned(buffer as ArrayBuffer, base, this.#byteLength)
    ) {
      new Uint8Array(buffer, this.#byteLength).fill(0);
      return (length - this.#byteLength) / OS_PAGE;
    }
    this.#past = 0;
    if (keepResident && this.#copyBackScanned(buffer as ArrayBuffer, base, length)) {
      return this.#past;
    }
    const pages = length / OS_PAGE;
    const learn = Number.isNaN(this.#dirty) || ++this.#sinceLearned >= RELEARN_EVERY;
    this.#past = 0;
    if (
      keepResident && (learn || residentWins(pages, this.#dirty)) &&
      this.#copyBack(buffer as ArrayBuffer, base)
    ) {
      this.#sinceLearned = 0;
      return this.#past;
    }
    madviseDontNeed(base, length);
    return 0;
  }

  /** Sets `[from, to)` of `bytes` back: the image below its end, zeros past it. */
  #restore(bytes: Uint8Array, pristine: Uint8Array, from: number, to: number): void {
    const split = Math.min(Math.max(from, this.#byteLength), to);
    if (from < split) bytes.set(pristine.subarray(from, split), from);
    if (split < to) {
      bytes.fill(0, split, to);
      this.#past += (to - split) / OS_PAGE;
    }
  }

  /** The image mapped read-only (mapped on first use), or null if it cannot be. */
  #pristineBytes(): Uint8Array | null {
    if (this.#pristine === null && this.#fd >= 0) {
      try {
        this.#pristineAt = mmapSharedReadOnly(this.#byteLength, this.#fd);
        this.#pristine = new Uint8Array(
          Deno.UnsafePointerView.getArrayBuffer(this.#pristineAt, this.#byteLength),
        );
      } catch {
        return null;
      }
    }
    return this.#pristine;
  }

  /**
   * Copies the image back over the runs of private pages `PAGEMAP_SCAN` finds in the
   * first `length` bytes of `buffer`: false, with nothing changed, if the kernel has no such scan (from then
   * on the page table is read instead) or the image cannot be mapped.
   */
  #copyBackScanned(buffer: ArrayBuffer, base: Deno.PointerObject, length: number): boolean {
    const scan = scanner();
    if (scan === null) return false;
    const pristine = this.#pristineBytes();
    if (pristine === null) return false;
    const bytes = new Uint8Array(buffer);
    let dirty = 0;
    try {
      scan.runs(BigInt(Deno.UnsafePointer.value(base)), length, (from, to) => {
        this.#restore(bytes, pristine, from, to);
        dirty += (to - from) / OS_PAGE;
      });
    } catch {
      // A kernel without the scan refuses the first one (EINVAL or ENOTTY): read the
      // page table from then on. Any failure leaves the reset to the caller's way, which
      // sets every page (copied back here or not) back to the image.
      if (!scanWorked) pageScan = null;
      return false;
    }
    scanWorked = true;
    this.#dirty = dirty;
    return true;
  }

  /**
   * Copies the image back over the pages of `buffer` that are private copies (written
   * since it was mapped, or swapped out), reading `/proc/self/pagemap`: false, with
   * nothing changed, if the page table cannot be read.
   */
  #copyBack(buffer: ArrayBuffer, base: Deno.PointerObject): boolean {
    const fd = pagemap();
    if (fd === null || this.#fd < 0) return false;
    const pages = buffer.byteLength / OS_PAGE;
    if (this.#entries === null || this.#entries.length < pages * 2) {
      this.#entries = new Uint32Array(pages * 2);
    }
    const entries = this.#entries.subarray(0, pages * 2);
    const at = Number(BigInt(Deno.UnsafePointer.value(base)) / BigInt(OS_PAGE)) * 8;
    try {
      const into = new Uint8Array(entries.buffer, 0, entries.byteLength);
      if (pread(fd, into, at) !== entries.byteLength) return false;
    } catch {
      return false;
    }
    const pristine = this.#pristineBytes();
    if (pristine === null) return false;
    const bytes = new Uint8Array(buffer);
    let dirty = 0;
    for (let page = 0; page < pages; page++) {
      const high = entries[page * 2 + 1];
      // A private copy: present and not the file's page, or swapped out (only
      // private pages of this mapping can be).
      if (
        ((high & PM_PRESENT) !== 0 && (high & PM_FILE_OR_SHARED) === 0) || (high & PM_SWAPPED) !== 0
      ) {
        const offset = page * OS_PAGE;
        this.#restore(bytes, pristine, offset, offset + OS_PAGE);
        dirty++;
      }
    }
    this.#dirty = dirty;
    return true;
  }

  /** Closes the memfd (mappings over memories stay valid; resets then use madvise). */
  close(): void {
    if (this.#fd < 0) return;
    close(this.#fd);
    this.#fd = -1;
    if (this.#pristineAt !== null) munmap(this.#pristineAt, this.#byteLength);
    this.#pristine = this.#pristineAt = null;
  }
}

/**
 * Asks for transparent huge pages for `[from, byteLength)` of a memory that grew (the
 * anonymous pages V8 grew it into), and drops the pages there now (they read as zeros).
 *
 * Why: a guest that grows its memory by 32 MiB and writes it faults 8,192 times with
 * 4 KiB pages (~20–30 ms here), 16 times with 2 MiB ones (~5 ms, the kernel zeroing
 * them); writing resident huge pages is also about twice as fast (fewer TLB misses).
 * The pages are dropped so that the next writes fault in huge ones (ones already
 * resident would stay small).
 *
 * @throws {NotMappable} if the buffer is shared or empty
 */
export function hugePagesPast(buffer: ArrayBufferLike, from: number): void {
  const base = addressOf(buffer);
  const length = buffer.byteLength - from;
  if (length <= 0) return;
  const at = Deno.UnsafePointer.create(BigInt(Deno.UnsafePointer.value(base)) + BigInt(from))!;
  madviseHugePage(at, length);
  madviseDontNeed(at, length);
}

/**
 * Gives a buffer's pages (from byte `from`, a multiple of the OS page) back to the OS
 * now rather than when the garbage collector frees it (a dropped memory, or the pages
 * a kept one grew into: they read as zeros again). Shared or empty buffers are left as
 * they are.
 */
export function discardPages(buffer: ArrayBufferLike, from = 0): void {
  let base: Deno.PointerObject;
  try {
    base = addressOf(buffer);
  } catch {
    return;
  }
  if (from >= buffer.byteLength) return;
  const at = from === 0
    ? base
    : Deno.UnsafePointer.create(BigInt(Deno.UnsafePointer.value(base)) + BigInt(from))!;
  madviseDontNeed(at, buffer.byteLength - from);
}
