/**
 * The machine's own bound for a guest that writes a large grown memory on every request:
 * each serving thread must at least write its bytes (the guest's fill) and zero them
 * again (the reset), so no runtime serves more requests per second than threads doing
 * only that, with libc's memset on huge pages, do iterations. Measured next to the guest
 * (this machine's memory bandwidth drifts by 2× within minutes), as its baseline.
 *
 * @module
 */

/** What each thread runs: memset(0xab) then memset(0) of `bytes`, for `seconds`. */
const WORKER = `
const lib = Deno.dlopen("libc.so.6", {
  memset: { parameters: ["buffer", "i32", "usize"], result: "pointer" },
  madvise: { parameters: ["buffer", "usize", "i32"], result: "i32" },
});
const MADV_HUGEPAGE = 14;
const HUGE = 2 << 20;
self.onmessage = ({ data: { bytes, seconds } }) => {
  const raw = new Uint8Array(bytes + HUGE);
  const at = Number(Deno.UnsafePointer.value(Deno.UnsafePointer.of(raw)));
  const off = (HUGE - (at % HUGE)) % HUGE;
  const buf = raw.subarray(off, off + bytes);
  lib.symbols.madvise(buf, bytes, MADV_HUGEPAGE);
  const once = () => {
    lib.symbols.memset(buf, 0xab, bytes);
    lib.symbols.memset(buf, 0, bytes);
  };
  for (let i = 0; i < 3; i++) once();
  const end = performance.now() + seconds * 1000;
  let n = 0;
  while (performance.now() < end) {
    once();
    n++;
  }
  self.postMessage(n);
};
`;

/**
 * Iterations per second of `threads` threads each writing `bytes` (0xab) and zeroing
 * them, for `seconds`.
 */
export async function memsetBound(bytes: number, threads: number, seconds = 3): Promise<number> {
  const url = URL.createObjectURL(new Blob([WORKER], { type: "application/javascript" }));
  const workers = Array.from({ length: threads }, () => new Worker(url, { type: "module" }));
  try {
    const counts = await Promise.all(workers.map((w) =>
      new Promise<number>((resolve, reject) => {
        w.onmessage = (e) => resolve(e.data as number);
        w.onerror = (e) => {
          e.preventDefault();
          reject(new Error(e.message));
        };
        w.postMessage({ bytes, seconds });
      })
    ));
    return counts.reduce((a, b) => a + b, 0) / seconds;
  } finally {
    for (const w of workers) w.terminate();
    URL.revokeObjectURL(url);
  }
}

if (import.meta.main) {
  const mib = Number(Deno.args[0] ?? 32);
  const threads = Number(Deno.args[1] ?? Math.min(navigator.hardwareConcurrency, 4));
  console.log(`${(await memsetBound(mib << 20, threads)).toFixed(0)} iterations/s`);
}
