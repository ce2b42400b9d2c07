import assert from "node:assert/strict";
import {
  CACHE_SUFFIX,
  type CacheEntry,
  cacheKey,
  CorruptEntry,
  decodeEntry,
  encodeEntry,
  TranspileCache,
} from "./cache.ts";
import { CACHE_SUBDIR, loadComponent } from "./load.ts";
import { COMPONENT_TEST, fixture, FIXTURES } from "./test_util.ts";

const ENTRY: CacheEntry = {
  glue: "export function instantiate() { return {}; }",
  cores: new Map([["component.core.wasm", new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0])]]),
  exports: [["wasi:cli/run@0.2.0", "instance"]],
};

function flipLastByte(bytes: Uint8Array): Uint8Array {
  const copy = bytes.slice();
  copy[copy.length - 1] ^= 0xff;
  return copy;
}

Deno.test("cacheKey depends on the bytes and on the options", async () => {
  const a = await cacheKey(new Uint8Array([1, 2, 3]), "options-1");
  assert.match(a, /^[0-9a-f]{64}-[0-9a-f]{16}$/);
  assert.equal(a, await cacheKey(new Uint8Array([1, 2, 3]), "options-1"));
  assert.notEqual(a, await cacheKey(new Uint8Array([1, 2, 4]), "options-1"));
  assert.notEqual(a, await cacheKey(new Uint8Array([1, 2, 3]), "options-2"));
});

Deno.test("an encoded entry decodes to the same contents", async () => {
  const decoded = await decodeEntry("k", await encodeEntry("k", ENTRY));
  assert.deepEqual(decoded, ENTRY);
});

Deno.test("decodeEntry refuses bad magic, another key, truncation and a changed byte", async () => {
  const data = await encodeEntry("k", ENTRY);
  await assert.rejects(decodeEntry("k", data.slice(1)), CorruptEntry);
  await assert.rejects(decodeEntry("other", data), /entry is for k/);
  await assert.rejects(decodeEntry("k", data.subarray(0, data.length - 1)), /length/);
  await assert.rejects(decodeEntry("k", flipLastByte(data)), /component\.core\.wasm: bad checksum/);
});

Deno.test("TranspileCache: a stored entry is a hit", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cache = new TranspileCache(dir);
    assert.equal((await cache.get("k")).outcome, "miss");
    assert.ok(await cache.put("k", ENTRY));
    const { entry, outcome } = await cache.get("k");
    assert.equal(outcome, "hit");
    assert.deepEqual(entry, ENTRY);
    // Only the entry remains: the temporary file was renamed.
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [`k${CACHE_SUFFIX}`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TranspileCache: a corrupt entry is reported, deleted and not used", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const logs: string[] = [];
    const cache = new TranspileCache(dir, (line) => logs.push(line));
    await cache.put("k", ENTRY);
    const path = cache.path("k")!;
    await Deno.writeFile(path, flipLastByte(await Deno.readFile(path)));
    const { entry, outcome } = await cache.get("k");
    assert.equal(outcome, "corrupt");
    assert.equal(entry, null);
    assert.match(logs.join("\n"), /discarding .*k\.jco: component\.core\.wasm: bad checksum/);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TranspileCache: a directory that cannot be created costs only the cache", async () => {
  const file = await Deno.makeTempFile();
  try {
    const logs: string[] = [];
    const cache = new TranspileCache(`${file}/cache`, (line) => logs.push(line));
    assert.equal(await cache.put("k", ENTRY), false);
    assert.match(logs.join("\n"), /cannot store .*running from memory/);
    assert.equal((await cache.get("k")).outcome, "miss");
  } finally {
    await Deno.remove(file);
  }
});

Deno.test({
  name: "loadComponent transpiles once, then loads from the cache; a corrupt entry is rebuilt",
  ...COMPONENT_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    try {
      const bytes = fixture(FIXTURES.command);
      const logs: string[] = [];
      const options = { cacheDir: dir, path: "/command.wasm", log: (l: string) => logs.push(l) };
      const first = await loadComponent(bytes, options);
      assert.equal(first.timings.source, "miss");
      assert.ok(first.timings.transpileMs > 0);
      assert.ok(first.modules.size > 0);

      const second = await loadComponent(bytes, options);
      assert.equal(second.timings.source, "hit");
      assert.equal(second.timings.transpileMs, 0);
      assert.deepEqual(second.exports, first.exports);

      const [entry] = [...Deno.readDirSync(`${dir}/${CACHE_SUBDIR}`)];
      const path = `${dir}/${CACHE_SUBDIR}/${entry.name}`;
      const data = await Deno.readFile(path);
      await Deno.writeFile(path, data.subarray(0, data.length >> 1)); // a partial write
      const third = await loadComponent(bytes, options);
      assert.equal(third.timings.source, "corrupt");
      assert.ok(third.timings.transpileMs > 0);
      assert.match(logs.join("\n"), /discarding/);
      assert.deepEqual(await Deno.readFile(path), data, "the entry was rebuilt");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "loadComponent runs from memory when the cache directory is unusable",
  ...COMPONENT_TEST,
  fn: async () => {
    const file = await Deno.makeTempFile();
    try {
      const logs: string[] = [];
      const loaded = await loadComponent(fixture(FIXTURES.command), {
        cacheDir: file,
        path: "/command.wasm",
        log: (l) => logs.push(l),
      });
      assert.equal(loaded.timings.source, "miss");
      assert.ok(loaded.modules.size > 0);
      assert.match(logs.join("\n"), /cannot store/);
    } finally {
      await Deno.remove(file);
    }
  },
});

Deno.test({
  name: "loadComponent without a cache directory transpiles in memory",
  ...COMPONENT_TEST,
  fn: async () => {
    const loaded = await loadComponent(fixture(FIXTURES.command), {
      cacheDir: null,
      path: "/command.wasm",
    });
    assert.equal(loaded.timings.source, "disabled");
  },
});
