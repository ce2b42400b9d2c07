import assert from "node:assert/strict";
import { Kind, ShimError } from "../errdefs/errors.ts";
import { digestOf, parseDigest } from "../oci/digest.ts";
import { listFiles, TEMP_SUFFIX } from "../sys/cache_files.ts";
import { CACHE_SUFFIX, type CacheEntry, TranspileCache } from "../wasm/component/cache.ts";
import { BlobCache } from "./blob_cache.ts";
import {
  CacheJanitor,
  type ContentPresence,
  DEFAULT_MAX_BYTES,
  DEFAULT_SWEEP_INTERVAL_MS,
  maxBytesFromEnv,
  sweepIntervalFromEnv,
} from "./cache_janitor.ts";

const encoder = new TextEncoder();

async function blob(cache: BlobCache, text: string, ageMs = 0) {
  const bytes = encoder.encode(text);
  const ref = { digest: await digestOf(bytes), size: bytes.length };
  const path = await cache.put(ref, bytes);
  const t = new Date(Date.now() - ageMs);
  await Deno.utime(path, t, t);
  return { ref, path, hex: parseDigest(ref.digest).hex };
}

const ENTRY: CacheEntry = { glue: "export {}", cores: new Map(), exports: [] };

/** containerd as the sweep sees it: `has[namespace]` lists the digests it has. */
function fakeContainerd(has: Record<string, string[]>, calls: string[] = []): ContentPresence {
  return {
    listNamespaces: () => Promise.resolve(Object.keys(has)),
    contentInfo(digest, ns) {
      calls.push(`${ns} ${digest.slice(0, 13)}`);
      if (has[ns].includes(digest)) return Promise.resolve({});
      if (has[ns].includes("unavailable")) {
        return Promise.reject(new ShimError(Kind.UNAVAILABLE, "containerd is restarting"));
      }
      return Promise.reject(new ShimError(Kind.NOT_FOUND, `${digest}: not found`));
    },
    close() {},
  };
}

Deno.test("maxBytesFromEnv: bytes with binary units; anything else names the variable", () => {
  assert.equal(maxBytesFromEnv(undefined), DEFAULT_MAX_BYTES);
  assert.equal(maxBytesFromEnv(""), DEFAULT_MAX_BYTES);
  assert.equal(maxBytesFromEnv("0"), 0);
  assert.equal(maxBytesFromEnv("1048576"), 1 << 20);
  assert.equal(maxBytesFromEnv("512Mi"), 512 << 20);
  assert.equal(maxBytesFromEnv("2G"), 2 * (1 << 30));
  assert.equal(maxBytesFromEnv("64kb"), 64 << 10);
  for (const bad of ["-1", "1.5G", "lots", "10 parsecs", "0x100", "1e9"]) {
    assert.throws(
      () => maxBytesFromEnv(bad),
      new RegExp(`WASMTIME_SHIM_CACHE_MAX_BYTES=${JSON.stringify(bad)} is not valid`),
    );
  }
  assert.equal(sweepIntervalFromEnv(undefined), DEFAULT_SWEEP_INTERVAL_MS);
  assert.equal(sweepIntervalFromEnv("0"), 0);
  assert.throws(() => sweepIntervalFromEnv("-5"), /WASMTIME_SHIM_CACHE_SWEEP_INTERVAL_MS="-5"/);
});

Deno.test("CacheJanitor: both caches share the cap; a held layer and used entries stay", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const blobs = new BlobCache(dir);
    const components = new TranspileCache(`${dir}/components`);
    const old = await blob(blobs, "a".repeat(400), 50_000);
    const held = await blob(blobs, "b".repeat(400), 40_000);
    const recent = await blob(blobs, "c".repeat(400), 1_000);
    assert.ok(await components.put("k1", ENTRY));
    const k1 = `${dir}/components/k1${CACHE_SUFFIX}`;
    await Deno.utime(k1, new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    // k1 is read now: its use makes it recent again.
    assert.equal((await components.get("k1")).outcome, "hit");
    using hold = await blobs.hold(held.ref.digest);
    assert.ok(hold);
    const k1Size = (await Deno.stat(k1)).size;
    const janitor = new CacheJanitor({ cacheDir: dir, maxBytes: 400 + k1Size });
    const r = await janitor.evict();
    assert.ok(r);
    assert.deepEqual(r.removed, [old.path, recent.path]);
    assert.deepEqual(r.held, []);
    assert.equal(r.bytesAfter, 400 + k1Size);
    assert.notEqual(await blobs.get(held.ref), null);
    // The cap holds afterwards.
    const total = (await janitor.files()).reduce((n, f) => n + f.size, 0);
    assert.ok(total <= 400 + k1Size);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CacheJanitor.sweep: blobs no namespace has go, with their components; held stay", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const blobs = new BlobCache(dir);
    const components = new TranspileCache(`${dir}/components`);
    const kept = await blob(blobs, "in ns2 only");
    const gone = await blob(blobs, "removed image's layer");
    const busy = await blob(blobs, "removed, but a Create holds it");
    for (const key of [`${kept.hex}-0123456789abcdef`, `${gone.hex}-0123456789abcdef`]) {
      assert.ok(await components.put(key, ENTRY));
    }
    // A component from a rootfs (no blob) is only bounded by the cap.
    assert.ok(await components.put(`${"f".repeat(64)}-0123456789abcdef`, ENTRY));
    using hold = await blobs.hold(busy.ref.digest);
    assert.ok(hold);
    const calls: string[] = [];
    const janitor = new CacheJanitor({
      cacheDir: dir,
      maxBytes: DEFAULT_MAX_BYTES,
      containerd: { address: "/unused", namespace: "ns1" },
      connect: () => Promise.resolve(fakeContainerd({ ns1: [], ns2: [kept.ref.digest] }, calls)),
    });
    const r = await janitor.sweep();
    assert.ok(r);
    assert.equal(r.checked, 3);
    assert.deepEqual(
      r.removed.sort(),
      [gone.path, `${dir}/components/${gone.hex}-0123456789abcdef${CACHE_SUFFIX}`].sort(),
    );
    assert.deepEqual(r.held, [busy.ref.digest]);
    const left = (await listFiles(dir)).map((f) => f.path.slice(dir.length + 1)).sort();
    assert.deepEqual(
      left,
      [
        `blobs/sha256/${busy.hex}`,
        `blobs/sha256/${kept.hex}`,
        `components/${kept.hex}-0123456789abcdef${CACHE_SUFFIX}`,
        `components/${"f".repeat(64)}-0123456789abcdef${CACHE_SUFFIX}`,
        "janitor.lock",
        "sweep.stamp",
      ].sort(),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CacheJanitor: a sweep runs at most once per interval; a containerd that cannot say keeps all", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const blobs = new BlobCache(dir);
    const a = await blob(blobs, "layer");
    let connects = 0;
    const janitor = new CacheJanitor({
      cacheDir: dir,
      maxBytes: DEFAULT_MAX_BYTES,
      sweepIntervalMs: 60_000,
      containerd: { address: "/unused", namespace: "ns1" },
      connect: () => {
        connects++;
        return Promise.resolve(fakeContainerd({ ns1: ["unavailable"] }));
      },
    });
    janitor.schedule();
    janitor.schedule();
    await janitor.idle();
    janitor.schedule();
    await janitor.idle();
    assert.equal(connects, 1);
    assert.notEqual(await blobs.get(a.ref), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CacheJanitor: concurrent stores and evictions by several processes keep the cap and every entry whole", async () => {
  const dir = await Deno.makeTempDir();
  const cap = 64 << 10;
  const here = (file: string) => new URL(file, import.meta.url).href;
  // Each process stores 12 blobs of 8 KiB (a shared third of them: the same image
  // started by several), holds each while "its runner reads it", and evicts.
  const script = `
    import { BlobCache } from "${here("./blob_cache.ts")}";
    import { CacheJanitor } from "${here("./cache_janitor.ts")}";
    import { digestOf } from "${here("../oci/digest.ts")}";
    const [dir, id, cap] = Deno.args;
    const cache = new BlobCache(dir);
    const janitor = new CacheJanitor({ cacheDir: dir, maxBytes: Number(cap) });
    for (let i = 0; i < 12; i++) {
      const bytes = new Uint8Array(8192).fill(i % 3 === 0 ? i : Number(id) * 16 + i);
      const ref = { digest: await digestOf(bytes), size: bytes.length };
      if (await cache.get(ref) === null) await cache.put(ref, bytes);
      const hold = await cache.hold(ref.digest);
      if (hold !== null) {
        const read = await Deno.readFile(hold.path);
        if (read.length !== bytes.length) throw new Error("a held entry changed under its reader");
        await janitor.evict();
        hold.release();
      }
    }
    await janitor.evict();
  `;
  try {
    const runs = await Promise.all(
      [1, 2, 3, 4].map((id) =>
        new Deno.Command(Deno.execPath(), {
          args: ["eval", script, dir, String(id), String(cap)],
          stdout: "piped",
          stderr: "piped",
        }).output()
      ),
    );
    for (const run of runs) assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    const files = await listFiles(`${dir}/blobs`);
    assert.ok(files.length > 0);
    assert.ok(files.reduce((n, f) => n + f.size, 0) <= cap, "the cap does not hold");
    assert.ok(files.every((f) => !f.path.endsWith(TEMP_SUFFIX)), "a temporary file is left");
    const cache = new BlobCache(dir);
    for (const f of files) {
      const hex = f.path.slice(f.path.lastIndexOf("/") + 1);
      assert.notEqual(await cache.get({ digest: `sha256:${hex}`, size: 8192 }), null, f.path);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CacheJanitor: a corrupt entry counts until read, then goes; a truncated one too", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const blobs = new BlobCache(dir);
    const a = await blob(blobs, "a whole layer");
    await Deno.writeTextFile(a.path, "a wh"); // truncated by a crash of the disk, say
    const janitor = new CacheJanitor({ cacheDir: dir, maxBytes: 100 });
    assert.deepEqual((await janitor.evict())!.removed, []);
    assert.equal(await blobs.get(a.ref), null);
    assert.deepEqual(await listFiles(`${dir}/blobs`), []);
    // A component entry that is garbage is discarded at its read, as before.
    await Deno.mkdir(`${dir}/components`);
    await Deno.writeTextFile(`${dir}/components/k${CACHE_SUFFIX}`, "garbage");
    assert.equal((await new TranspileCache(`${dir}/components`).get("k")).outcome, "corrupt");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CacheJanitor: a read-only cache directory only costs the cache", async () => {
  const dir = await Deno.makeTempDir();
  const ro = `${dir}/ro`;
  await Deno.mkdir(ro);
  const blobs = new BlobCache(ro);
  const a = await blob(blobs, "layer", 60_000);
  const mtime = (await Deno.stat(a.path)).mtime!.getTime();
  // Root ignores file modes: a read-only bind mount is what a node would have.
  const mount = (...args: string[]) => new Deno.Command("mount", { args }).output();
  assert.equal((await mount("--bind", ro, ro)).code, 0);
  try {
    assert.equal((await mount("-o", "remount,bind,ro", ro)).code, 0);
    const lines: string[] = [];
    const janitor = new CacheJanitor({ cacheDir: ro, maxBytes: 0, log: (l) => lines.push(l) });
    await janitor.runOnce();
    await janitor.runOnce();
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(lines[0], /cache: cannot manage .*ro: .*containers are not affected/);
    // Reads still work; their use is not recorded.
    assert.notEqual(await blobs.get(a.ref), null);
    using hold = await blobs.hold(a.ref.digest);
    assert.ok(hold);
    assert.equal((await Deno.stat(a.path)).mtime!.getTime(), mtime);
    assert.equal(await new TranspileCache(`${ro}/components`).put("k", ENTRY), false);
  } finally {
    await new Deno.Command("umount", { args: [ro] }).output();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("CacheJanitor: a containerd that cannot be reached costs one log line; entries stay", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const blobs = new BlobCache(dir);
    const a = await blob(blobs, "layer");
    const lines: string[] = [];
    const janitor = new CacheJanitor({
      cacheDir: dir,
      maxBytes: DEFAULT_MAX_BYTES,
      sweepIntervalMs: 0,
      containerd: { address: "/nowhere/containerd.sock", namespace: "ns1" },
      connect: () => Promise.reject(new ShimError(Kind.UNAVAILABLE, "connection refused")),
      log: (l) => lines.push(l),
    });
    await janitor.runOnce();
    assert.deepEqual(lines, ["cache: sweep failed, entries kept: connection refused"]);
    assert.notEqual(await blobs.get(a.ref), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
