/**
 * Content digests (`sha256:<hex>`, `sha512:<hex>`) and the check that a blob is what
 * its descriptor says.
 *
 * @module
 */

import { Kind, ShimError } from "../errdefs/errors.ts";

/** Digest algorithms the shim can verify, with their Web Crypto names and hex lengths. */
export const DIGEST_ALGORITHMS: Readonly<Record<string, { name: string; hexLength: number }>> = {
  sha256: { name: "SHA-256", hexLength: 64 },
  sha512: { name: "SHA-512", hexLength: 128 },
};

/** Splits `algorithm:hex`; throws for an algorithm or hex the shim cannot verify. */
export function parseDigest(digest: string): { algorithm: string; hex: string } {
  const colon = digest.indexOf(":");
  const algorithm = colon < 0 ? "" : digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  const known = DIGEST_ALGORITHMS[algorithm];
  if (!known) {
    throw new ShimError(
      Kind.INVALID_ARGUMENT,
      `digest "${digest}": unsupported algorithm (expected ${
        Object.keys(DIGEST_ALGORITHMS).join(" or ")
      })`,
    );
  }
  if (hex.length !== known.hexLength || !/^[0-9a-f]+$/.test(hex)) {
    throw new ShimError(
      Kind.INVALID_ARGUMENT,
      `digest "${digest}": expected ${known.hexLength} lowercase hex digits after "${algorithm}:"`,
    );
  }
  return { algorithm, hex };
}

/** The `algorithm:hex` digest of `bytes`. */
export async function digestOf(bytes: Uint8Array, algorithm = "sha256"): Promise<string> {
  const known = DIGEST_ALGORITHMS[algorithm];
  if (!known) throw new RangeError(`unsupported digest algorithm ${algorithm}`);
  const hash = await crypto.subtle.digest(known.name, bytes as Uint8Array<ArrayBuffer>);
  return `${algorithm}:${
    Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
}

/**
 * Checks that `bytes` has the descriptor's size and digest.
 *
 * @param what names the blob and where it came from, for the message
 * @throws {ShimError} DATA_LOSS saying which of the two differs
 */
export async function checkBlob(
  bytes: Uint8Array,
  descriptor: { digest: string; size: number },
  what: string,
): Promise<void> {
  const { algorithm } = parseDigest(descriptor.digest);
  if (bytes.length !== descriptor.size) {
    throw new ShimError(
      Kind.DATA_LOSS,
      `${what} is ${bytes.length} bytes, but its descriptor says ${descriptor.size}: ` +
        `the content is truncated or corrupt`,
    );
  }
  const actual = await digestOf(bytes, algorithm);
  if (actual !== descriptor.digest) {
    throw new ShimError(
      Kind.DATA_LOSS,
      `${what} has digest ${actual}, not ${descriptor.digest}: the content is corrupt`,
    );
  }
}
