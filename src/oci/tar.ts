/**
 * A minimal, reproducible tar writer (POSIX ustar, with pax extended headers for names
 * that do not fit) and a small reader, enough to build OCI image layouts and layers.
 *
 * Every header is normalised: mtime 0, uid/gid 0, empty user/group names, so the same
 * entries always give byte-identical archives. Entries are sorted by path unless the
 * caller asks to keep their order.
 *
 * @module
 */

import { concatBytes as concat } from "../sys/bytes.ts";

/** Size of a tar block. */
export const BLOCK_SIZE = 512;

/** Kinds of entries the writer produces. */
export type TarEntryType = "file" | "directory" | "symlink";

/** One entry to write. */
export interface TarEntry {
  /** Path inside the archive, `/`-separated; a leading `/` or `./` is dropped. */
  path: string;
  /** Entry kind; `"file"` unless given. */
  type?: TarEntryType;
  /** File content (files only). */
  data?: Uint8Array;
  /** Permission bits; 0o644 for files, 0o755 for directories, 0o777 for symlinks. */
  mode?: number;
  /** Symlink target (symlinks only). */
  linkname?: string;
}

/** Options for {@linkcode writeTar}. */
export interface WriteTarOptions {
  /** Sort entries by path (byte order), so parents precede children. Default true. */
  sort?: boolean;
  /** Add directory entries for every missing parent of an entry. Default false. */
  addParents?: boolean;
}

/** One entry read back by {@linkcode readTar}. */
export interface TarReadEntry {
  /** Path as stored (directories without their trailing `/`). */
  path: string;
  /** Entry kind; anything else (devices, fifos, hard links) is `"other"`. */
  type: TarEntryType | "other";
  /** The raw type flag character. */
  typeflag: string;
  /** Permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time, seconds since the epoch. */
  mtime: number;
  /** Content size in bytes. */
  size: number;
  /** Symlink / hard link target. */
  linkname: string;
  /** Content (empty for non-files). */
  data: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Normalises an archive path: drops leading `/` and `./`, collapses `//` and `.`,
 * and rejects `..` segments and empty paths.
 */
export function normalizeTarPath(path: string): string {
  const parts: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      throw new Error(
        `tar path ${JSON.stringify(path)} contains "..": entries must stay inside the archive`,
      );
    }
    parts.push(seg);
  }
  if (parts.length === 0) {
    throw new Error(`tar path ${JSON.stringify(path)} is empty: every entry needs a name`);
  }
  return parts.join("/");
}

function compareBytes(a: string, b: string): number {
  // Byte order of the UTF-8 encodings, as `sort` with LC_ALL=C would give.
  const ea = encoder.encode(a);
  const eb = encoder.encode(b);
  const n = Math.min(ea.length, eb.length);
  for (let i = 0; i < n; i++) {
    if (ea[i] !== eb[i]) return ea[i] - eb[i];
  }
  return ea.length - eb.length;
}

/** Writes `value` as a NUL-terminated octal field of `width` bytes. */
function octal(header: Uint8Array, offset: number, width: number, value: number, what: string) {
  const digits = value.toString(8);
  if (!Number.isSafeInteger(value) || value < 0 || digits.length > width - 1) {
    throw new Error(`tar ${what} ${value} does not fit a ${width}-byte octal field`);
  }
  header.set(encoder.encode(digits.padStart(width - 1, "0")), offset);
  header[offset + width - 1] = 0;
}

function putString(header: Uint8Array, offset: number, width: number, bytes: Uint8Array) {
  if (bytes.length > width) throw new Error(`internal: field of ${width} bytes overflowed`);
  header.set(bytes, offset);
}

/** Splits a name into ustar `prefix` and `name`, or returns undefined if it cannot. */
function splitUstarName(name: Uint8Array): { prefix: Uint8Array; name: Uint8Array } | undefined {
  if (name.length <= 100) return { prefix: new Uint8Array(0), name };
  // Split at a `/` such that prefix <= 155 bytes and the rest <= 100 bytes.
  for (let i = Math.min(name.length - 1, 155); i > 0; i--) {
    if (name[i] !== 0x2f) continue;
    const rest = name.length - i - 1;
    if (rest === 0) continue;
    if (rest > 100) return undefined;
    return { prefix: name.subarray(0, i), name: name.subarray(i + 1) };
  }
  return undefined;
}

interface RawHeader {
  name: Uint8Array;
  prefix: Uint8Array;
  mode: number;
  size: number;
  typeflag: string;
  linkname: Uint8Array;
}

function header(h: RawHeader): Uint8Array {
  const b = new Uint8Array(BLOCK_SIZE);
  putString(b, 0, 100, h.name);
  octal(b, 100, 8, h.mode, "mode");
  octal(b, 108, 8, 0, "uid");
  octal(b, 116, 8, 0, "gid");
  octal(b, 124, 12, h.size, "size");
  octal(b, 136, 12, 0, "mtime");
  b.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  b[156] = h.typeflag.charCodeAt(0);
  putString(b, 157, 100, h.linkname);
  putString(b, 257, 6, encoder.encode("ustar\0"));
  putString(b, 263, 2, encoder.encode("00"));
  octal(b, 329, 8, 0, "devmajor");
  octal(b, 337, 8, 0, "devminor");
  putString(b, 345, 155, h.prefix);
  let sum = 0;
  for (const byte of b) sum += byte;
  octal(b, 148, 7, sum, "checksum");
  b[155] = 0x20;
  return b;
}

/** One pax record: `"<len> <key>=<value>\n"`, where len counts the whole record. */
function paxRecord(key: string, value: Uint8Array): Uint8Array {
  const body = encoder.encode(` ${key}=`);
  const fixed = body.length + value.length + 1;
  const digits = String(fixed).length;
  let len = fixed + digits;
  if (String(len).length > digits) len++; // e.g. 98 + 2 = 100 needs a third digit
  const out = new Uint8Array(len);
  const lenBytes = encoder.encode(String(len));
  out.set(lenBytes, 0);
  out.set(body, lenBytes.length);
  out.set(value, lenBytes.length + body.length);
  out[len - 1] = 0x0a;
  return out;
}

function padded(data: Uint8Array): Uint8Array[] {
  const rem = data.length % BLOCK_SIZE;
  return rem === 0 ? [data] : [data, new Uint8Array(BLOCK_SIZE - rem)];
}

function entryBlocks(entry: TarEntry, path: string): Uint8Array[] {
  const type = entry.type ?? "file";
  const data = type === "file" ? entry.data ?? new Uint8Array(0) : new Uint8Array(0);
  if (type !== "file" && entry.data && entry.data.length > 0) {
    throw new Error(`tar entry ${path} is a ${type} but has data: only files carry content`);
  }
  if (type === "symlink" && !entry.linkname) {
    throw new Error(`tar entry ${path} is a symlink without a target: give linkname`);
  }
  const mode = entry.mode ?? (type === "directory" ? 0o755 : type === "symlink" ? 0o777 : 0o644);
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o7777) {
    throw new Error(`tar entry ${path} has mode ${mode}: permission bits must be within 0o7777`);
  }
  const nameBytes = encoder.encode(type === "directory" ? `${path}/` : path);
  const linkBytes = encoder.encode(entry.linkname ?? "");
  const records: Uint8Array[] = [];
  let split = splitUstarName(nameBytes);
  if (!split) {
    records.push(paxRecord("path", nameBytes));
    // Keep a readable, truncated fallback name for readers without pax support.
    split = { prefix: new Uint8Array(0), name: nameBytes.subarray(0, 100) };
  }
  let link = linkBytes;
  if (linkBytes.length > 100) {
    records.push(paxRecord("linkpath", linkBytes));
    link = linkBytes.subarray(0, 100);
  }
  const out: Uint8Array[] = [];
  if (records.length > 0) {
    const pax = concat(records);
    const paxName = encoder.encode(`PaxHeaders.0/${path.split("/").pop()!}`).subarray(0, 100);
    out.push(
      header({
        name: paxName,
        prefix: new Uint8Array(0),
        mode: 0o644,
        size: pax.length,
        typeflag: "x",
        linkname: new Uint8Array(0),
      }),
      ...padded(pax),
    );
  }
  const typeflag = type === "directory" ? "5" : type === "symlink" ? "2" : "0";
  out.push(header({ ...split, mode, size: data.length, typeflag, linkname: link }));
  if (data.length > 0) out.push(...padded(data));
  return out;
}

/**
 * Builds a tar archive in memory. The result is deterministic: the same entries give
 * the same bytes. Throws if two entries share a path or a path escapes the archive.
 */
export function writeTar(entries: Iterable<TarEntry>, options: WriteTarOptions = {}): Uint8Array {
  const byPath = new Map<string, TarEntry>();
  for (const entry of entries) {
    const path = normalizeTarPath(entry.path);
    const prev = byPath.get(path);
    if (prev) {
      const bothDirs = (prev.type ?? "file") === "directory" && entry.type === "directory";
      if (!bothDirs) throw new Error(`tar entry ${path} appears twice: each path must be unique`);
      continue;
    }
    byPath.set(path, entry);
  }
  if (options.addParents) {
    for (const path of [...byPath.keys()]) {
      const segs = path.split("/");
      for (let i = 1; i < segs.length; i++) {
        const parent = segs.slice(0, i).join("/");
        const existing = byPath.get(parent);
        if (!existing) byPath.set(parent, { path: parent, type: "directory" });
        else if ((existing.type ?? "file") !== "directory") {
          throw new Error(`tar entry ${path} is under ${parent}, which is not a directory`);
        }
      }
    }
  }
  let paths = [...byPath.keys()];
  if (options.sort ?? true) paths = paths.sort(compareBytes);
  const chunks: Uint8Array[] = [];
  for (const path of paths) chunks.push(...entryBlocks(byPath.get(path)!, path));
  chunks.push(new Uint8Array(BLOCK_SIZE * 2));
  return concat(chunks);
}

function cString(b: Uint8Array): string {
  const end = b.indexOf(0);
  return decoder.decode(end < 0 ? b : b.subarray(0, end));
}

function parseOctal(b: Uint8Array, what: string): number {
  const s = cString(b).trim();
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) {
    throw new Error(`tar header has a bad ${what} field ${JSON.stringify(s)}`);
  }
  return parseInt(s, 8);
}

function parsePax(data: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < data.length) {
    const space = data.indexOf(0x20, off);
    if (space < 0) throw new Error("tar pax header is malformed: record without a length");
    const len = parseInt(decoder.decode(data.subarray(off, space)), 10);
    if (
      !Number.isInteger(len) || len <= space - off + 1 || off + len > data.length ||
      data[off + len - 1] !== 0x0a
    ) {
      throw new Error("tar pax header is malformed: bad record length");
    }
    const record = decoder.decode(data.subarray(space + 1, off + len - 1));
    const eq = record.indexOf("=");
    if (eq < 0) throw new Error("tar pax header is malformed: record without '='");
    out.set(record.slice(0, eq), record.slice(eq + 1));
    off += len;
  }
  return out;
}

/**
 * Reads a whole (uncompressed) tar archive: ustar, pax (`x` headers for path,
 * linkpath and size) and GNU long names (`L`/`K`). Checks header checksums.
 */
export function readTar(bytes: Uint8Array): TarReadEntry[] {
  const out: TarReadEntry[] = [];
  let off = 0;
  let pax = new Map<string, string>();
  let longName: string | undefined;
  let longLink: string | undefined;
  while (off + BLOCK_SIZE <= bytes.length) {
    const h = bytes.subarray(off, off + BLOCK_SIZE);
    if (h.every((b) => b === 0)) break;
    const stored = parseOctal(h.subarray(148, 156), "checksum");
    let sum = 0;
    for (let i = 0; i < BLOCK_SIZE; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i];
    if (sum !== stored) {
      throw new Error(`tar header at offset ${off} has checksum ${stored}, computed ${sum}`);
    }
    const typeflag = String.fromCharCode(h[156] || 0x30);
    let size = parseOctal(h.subarray(124, 136), "size");
    if (pax.has("size")) size = Number(pax.get("size"));
    const dataStart = off + BLOCK_SIZE;
    if (dataStart + size > bytes.length) {
      throw new Error(`tar entry at offset ${off} claims ${size} bytes but the archive ends first`);
    }
    const data = bytes.slice(dataStart, dataStart + size);
    off = dataStart + Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE;
    if (typeflag === "x") {
      pax = parsePax(data);
      continue;
    }
    if (typeflag === "g") continue;
    if (typeflag === "L") {
      longName = cString(data);
      continue;
    }
    if (typeflag === "K") {
      longLink = cString(data);
      continue;
    }
    const magic = cString(h.subarray(257, 263));
    const prefix = magic === "ustar" ? cString(h.subarray(345, 500)) : "";
    let path = pax.get("path") ?? longName ??
      (prefix ? `${prefix}/${cString(h.subarray(0, 100))}` : cString(h.subarray(0, 100)));
    if (path.endsWith("/") && path.length > 1) path = path.replace(/\/+$/, "");
    const linkname = pax.get("linkpath") ?? longLink ?? cString(h.subarray(157, 257));
    const type: TarReadEntry["type"] = typeflag === "0" || typeflag === "7"
      ? "file"
      : typeflag === "5"
      ? "directory"
      : typeflag === "2"
      ? "symlink"
      : "other";
    out.push({
      path,
      type,
      typeflag,
      mode: parseOctal(h.subarray(100, 108), "mode"),
      uid: parseOctal(h.subarray(108, 116), "uid"),
      gid: parseOctal(h.subarray(116, 124), "gid"),
      mtime: parseOctal(h.subarray(136, 148), "mtime"),
      size,
      linkname,
      data: type === "file" ? data : new Uint8Array(0),
    });
    pax = new Map();
    longName = undefined;
    longLink = undefined;
  }
  return out;
}
