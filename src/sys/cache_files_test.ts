import assert from "node:assert/strict";
import {
  evictLru,
  holdFile,
  listFiles,
  removeUnlessHeld,
  STALE_TEMP_MS,
  tryExclusive,
} from "./cache_files.ts";

/** Writes `size` bytes at `dir/name`, last used `ageMs` ago. */
async function entry(dir: string, name: string, size: number, ageMs: number): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  await Deno.writeFile(path, new Uint8Array(size));
  const t = new Date(Date.now() - ageMs);
  await Deno.utime(path, t, t);
  return path;
}

const names = (paths: string[]) => paths.map((p) => p.slice(p.lastIndexOf("/") + 1)).sort();

/** A child process holding a shared flock on `path` until its stdin closes. */
function holderProcess(path: string) {
  const child = new Deno.Command("flock", {
    args: ["--shared", path, "sh", "-c", "echo locked; cat >/dev/null"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const ready = child.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
  return {
    ready,
    async stop() {
      await child.stdin.close();
      await child.status;
    },
  };
}

Deno.test("evictLru: past the cap, the least recently used go first, down to the cap", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await entry(dir, "a/old", 100, 40_000);
    await entry(dir, "b/older", 100, 50_000);
    await entry(dir, "a/mid", 100, 30_000);
    await entry(dir, "new", 100, 0);
    const files = await listFiles(dir);
    assert.equal(files.length, 4);
    const r = await evictLru(files, 250);
    assert.deepEqual(names(r.removed), ["old", "older"]);
    assert.equal(r.bytesBefore, 400);
    assert.equal(r.bytesAfter, 200);
    assert.deepEqual(names((await listFiles(dir)).map((f) => f.path)), ["mid", "new"]);
    // Under the cap: nothing to do.
    assert.deepEqual((await evictLru(await listFiles(dir), 250)).removed, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evictLru: an entry held by this or another process survives; freed, it goes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const mine = await entry(dir, "mine", 10, 30_000);
    const theirs = await entry(dir, "theirs", 10, 20_000);
    await entry(dir, "free", 10, 10_000);
    const hold = await holdFile(mine);
    assert.ok(hold);
    const other = holderProcess(theirs);
    assert.equal((await other.ready).value, "locked\n");
    try {
      const r = await evictLru(await listFiles(dir), 0);
      assert.deepEqual(names(r.removed), ["free"]);
      assert.deepEqual(names(r.held), ["mine", "theirs"]);
      assert.equal(r.bytesAfter, 20);
    } finally {
      hold.release();
      hold.release(); // idempotent
      await other.stop();
    }
    assert.deepEqual(names((await evictLru(await listFiles(dir), 0)).removed), ["mine", "theirs"]);
    assert.deepEqual(await listFiles(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("holdFile marks the entry used, and misses a file evicted while it waited", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = await entry(dir, "e", 10, 60_000);
    const hold = await holdFile(path);
    assert.ok(hold);
    assert.ok(Date.now() - (await Deno.stat(path)).mtime!.getTime() < 5_000, "mtime not renewed");
    hold.release();
    assert.equal(await holdFile(`${dir}/missing`), null);
    // An evictor has it exclusively; a holder arriving now waits, then finds it gone.
    using evictor = await Deno.open(path);
    await evictor.lock(true);
    const waiting = holdFile(path);
    await new Promise((r) => setTimeout(r, 50));
    await Deno.remove(path);
    // A new entry under the same name is not the file the holder opened.
    await Deno.writeFile(path, new Uint8Array(3));
    await evictor.unlock();
    assert.equal(await waiting, null);
    // The new one can be held.
    using again = await holdFile(path);
    assert.ok(again);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evictLru: a writer's young temporary file is left alone, a stale one removed", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await entry(dir, "x.123.abc.tmp", 1000, 1_000);
    await entry(dir, "y.456.def.tmp", 1000, STALE_TEMP_MS + 60_000);
    await entry(dir, "entry", 10, 0);
    const r = await evictLru(await listFiles(dir), 100);
    // Temporary files are not entries: they neither count nor get evicted as such.
    assert.equal(r.bytesBefore, 10);
    assert.deepEqual(r.removed, []);
    assert.equal(r.staleTemps, 1);
    assert.deepEqual(names((await listFiles(dir)).map((f) => f.path)), ["entry", "x.123.abc.tmp"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("removeUnlessHeld: gone already is removed; tryExclusive lets one run at a time", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(await removeUnlessHeld(`${dir}/none`), true);
    const lock = `${dir}/lock`;
    const order: string[] = [];
    const first = tryExclusive(lock, async () => {
      order.push("first");
      // While the first runs, a second is refused without waiting.
      assert.equal(await tryExclusive(lock, () => Promise.resolve("second")), undefined);
      return 1;
    });
    assert.equal(await first, 1);
    assert.equal(await tryExclusive(lock, () => Promise.resolve(2)), 2);
    assert.deepEqual(order, ["first"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
