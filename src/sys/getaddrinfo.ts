/**
 * Name resolution as libc does it: getaddrinfo(3) through Deno's FFI, on a thread of
 * Deno's blocking pool (a nonblocking FFI call), so the event loop never waits for DNS.
 *
 * Why libc rather than `Deno.resolveDns`: a pod's program resolves names with glibc's
 * getaddrinfo, which follows `/etc/nsswitch.conf`, reads `/etc/hosts`, and applies
 * `/etc/resolv.conf`'s `search`, `ndots` and `options` and `/etc/gai.conf`'s address
 * order. `Deno.resolveDns` is a DNS client (it reads `/etc/hosts` and `resolv.conf`, but
 * knows nothing of nsswitch or gai.conf, and takes one record type per call). The guest
 * runner sees the pod's `/etc/hosts` and `/etc/resolv.conf` (its mount namespace binds
 * them over its own), so this answers as the pod would.
 *
 * @module
 */

import { libc } from "./libc.ts";

/** `AF_INET`, `AF_INET6` (Linux). */
const AF_INET = 2;
const AF_INET6 = 10;
/** `SOCK_STREAM`: one answer per address (not one per socket type). */
const SOCK_STREAM = 1;

/** getaddrinfo's `EAI_*` codes (glibc). */
export const EaiCode = {
  AGAIN: -3,
  FAIL: -4,
  NONAME: -2,
  NODATA: -5,
  FAMILY: -6,
  MEMORY: -10,
  SYSTEM: -11,
  ADDRFAMILY: -9,
} as const;

/**
 * `struct addrinfo` on 64-bit Linux (x86-64, arm64): `ai_flags`, `ai_family`,
 * `ai_socktype`, `ai_protocol` (4 × i32), `ai_addrlen` (u32, then 4 bytes of padding),
 * `ai_addr`, `ai_canonname`, `ai_next` (pointers).
 */
const AI_SIZE = 48;
const AI_FAMILY = 4;
const AI_SOCKTYPE = 8;
const AI_ADDR = 24;
const AI_NEXT = 40;

/** An address getaddrinfo found. */
export type ResolvedAddress =
  | { family: "ipv4"; bytes: Ipv4Bytes }
  | { family: "ipv6"; words: Ipv6Words };

/** An IPv4 address's four bytes. */
export type Ipv4Bytes = [number, number, number, number];
/** An IPv6 address's eight 16-bit words. */
export type Ipv6Words = [number, number, number, number, number, number, number, number];

/** A getaddrinfo failure: `code` is its `EAI_*` value. */
export class ResolveError extends Error {
  /** The `EAI_*` code. */
  readonly code: number;

  /** `name` could not be resolved: getaddrinfo returned `code`. */
  constructor(name: string, code: number) {
    const text = Deno.UnsafePointerView.getCString(libc().gai_strerror(code)!);
    super(`resolving ${name}: ${text} (getaddrinfo ${code})`);
    this.name = "ResolveError";
    this.code = code;
  }
}

/**
 * The IPv4 and IPv6 addresses of `name`, in the order getaddrinfo gives them, without
 * duplicates.
 *
 * @throws {ResolveError} when getaddrinfo fails (no such name, resolver failure)
 */
export async function getaddrinfo(name: string): Promise<ResolvedAddress[]> {
  const node = new TextEncoder().encode(name + "\0");
  const hints = new Uint8Array(AI_SIZE);
  new DataView(hints.buffer).setInt32(AI_SOCKTYPE, SOCK_STREAM, true);
  const out = new BigUint64Array(1);
  const code = await libc().getaddrinfo(node, null, hints, out);
  if (code !== 0) throw new ResolveError(name, code);
  const head = Deno.UnsafePointer.create(out[0]);
  const found: ResolvedAddress[] = [];
  const seen = new Set<string>();
  try {
    for (let ai = head; ai !== null;) {
      const view = new Deno.UnsafePointerView(ai);
      const family = view.getInt32(AI_FAMILY);
      const addr = view.getPointer(AI_ADDR);
      if (addr !== null) {
        const sa = new Deno.UnsafePointerView(addr);
        let entry: ResolvedAddress | undefined;
        if (family === AF_INET) {
          // sockaddr_in: family (2), port (2), address (4).
          entry = {
            family: "ipv4",
            bytes: [sa.getUint8(4), sa.getUint8(5), sa.getUint8(6), sa.getUint8(7)],
          };
        } else if (family === AF_INET6) {
          // sockaddr_in6: family (2), port (2), flowinfo (4), address (16, big-endian words).
          const words: number[] = [];
          for (let i = 0; i < 8; i++) {
            words.push(sa.getUint8(8 + 2 * i) << 8 | sa.getUint8(9 + 2 * i));
          }
          entry = { family: "ipv6", words: words as Ipv6Words };
        }
        if (entry !== undefined) {
          const key = JSON.stringify(entry);
          if (!seen.has(key)) {
            seen.add(key);
            found.push(entry);
          }
        }
      }
      ai = view.getPointer(AI_NEXT);
    }
  } finally {
    libc().freeaddrinfo(head);
  }
  return found;
}
