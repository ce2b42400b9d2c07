/**
 * `wasi:clocks@0.2.x` and `wasi:random@0.2.x`. They hold no state but the instance's
 * insecure seed, which is drawn per instance.
 *
 * @module
 */

import process from "node:process";
import { Pollable } from "./io.ts";

/** Longest delay one `setTimeout` takes (2^31-1 ms); longer waits are chained. */
const MAX_TIMER_MS = 0x7fff_ffff;
const NS_PER_MS = 1_000_000n;
/** Most bytes `crypto.getRandomValues` fills in one call. */
const MAX_RANDOM_CHUNK = 65_536;
/** Largest `get-random-bytes` request honoured (a guest asking for more traps). */
const MAX_RANDOM_BYTES = 64 * 1024 * 1024;

/** Monotonic time in nanoseconds. */
function monotonicNow(): bigint {
  return process.hrtime.bigint();
}

/** A pollable that becomes ready at monotonic instant `deadline` (ns). */
function deadlinePollable(deadline: bigint): Pollable {
  return new Pollable({
    ready: () => monotonicNow() >= deadline,
    wait: () => {
      const left = deadline - monotonicNow();
      if (left <= 0n) return Promise.resolve();
      const ms = Number((left + NS_PER_MS - 1n) / NS_PER_MS);
      return new Promise((resolve) => setTimeout(resolve, Math.min(ms, MAX_TIMER_MS)));
    },
  });
}

const monotonicClock = {
  now: monotonicNow,
  resolution: () => 1n,
  subscribeInstant: (when: bigint) => deadlinePollable(when),
  subscribeDuration: (duration: bigint) => deadlinePollable(monotonicNow() + duration),
};

const wallClock = {
  now(): { seconds: bigint; nanoseconds: number } {
    const ms = performance.timeOrigin + performance.now();
    const seconds = Math.floor(ms / 1000);
    const nanoseconds = Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6));
    return { seconds: BigInt(seconds), nanoseconds };
  },
  resolution: () => ({ seconds: 0n, nanoseconds: 1000 }),
};

function randomBytes(len: bigint): Uint8Array {
  if (len > BigInt(MAX_RANDOM_BYTES)) {
    throw new RangeError(`get-random-bytes of ${len} bytes exceeds ${MAX_RANDOM_BYTES}`);
  }
  const out = new Uint8Array(Number(len));
  for (let i = 0; i < out.length; i += MAX_RANDOM_CHUNK) {
    crypto.getRandomValues(out.subarray(i, i + MAX_RANDOM_CHUNK));
  }
  return out;
}

function randomU64(): bigint {
  return crypto.getRandomValues(new BigUint64Array(1))[0];
}

/** The `wasi:clocks/*` and `wasi:random/*` imports of one instance. */
export function clocksRandomImports(): Record<string, Record<string, unknown>> {
  return { ...CLOCKS_RANDOM, "wasi:random/insecure-seed": insecureSeedImport() };
}

/** `wasi:random/insecure-seed` of one instance (its own seed). */
export function insecureSeedImport(): Record<string, unknown> {
  // Drawn on first use: most instances never ask, and each draw is a host call.
  let seed: [bigint, bigint] | undefined;
  return { insecureSeed: () => seed ??= [randomU64(), randomU64()] };
}

/** The clocks and random imports but the seed: no state, shared by every instance. */
export const CLOCKS_RANDOM: Readonly<Record<string, Record<string, unknown>>> = {
  "wasi:clocks/monotonic-clock": monotonicClock,
  "wasi:clocks/wall-clock": wallClock,
  "wasi:random/random": { getRandomBytes: randomBytes, getRandomU64: randomU64 },
  "wasi:random/insecure": {
    getInsecureRandomBytes: randomBytes,
    getInsecureRandomU64: randomU64,
  },
};
