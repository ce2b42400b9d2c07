import assert from "node:assert/strict";
import { Kind, type ShimError } from "../errdefs/errors.ts";
import { BlobCache } from "./blob_cache.ts";
import { checkBlob, digestOf, parseDigest } from "../oci/digest.ts";

const bytes = new TextEncoder().encode("hello wasm");

Deno.test("parseDigest: sha256 and sha512 only, lowercase hex of the right length", () => {
  const hex = "a".repeat(64);
  assert.deepEqual(parseDigest(`sha256:${hex}`), { algorithm: "sha256", hex });
  assert.deepEqual(parseDigest(`sha512:${"b".repeat(128)}`), {
    algorithm: "sha512",
    hex: "b".repeat(128),
  });
  assert.throws(() => parseDigest(`md5:${hex}`), /unsupported algorithm/);
  assert.throws(() => parseDigest(hex), /unsupported algorithm/);
  assert.throws(() => parseDigest(`sha256:${"A".repeat(64)}`), /64 lowercase hex/);
  assert.throws(() => parseDigest("sha256:../../etc"), /64 lowercase hex/);
});

Deno.test("checkBlob: size first, then digest; DATA_LOSS naming both digests", async () => {
  const d = await digestOf(bytes);
  assert.match(d, /^sha256:[0-9a-f]{64}$/);
  assert.match(await digestOf(bytes, "sha512"), /^sha512:[0-9a-f]{128}$/);
  await checkBlob(bytes, { digest: d, size: bytes.length }, "blob");
  await assert.rejects(
    checkBlob(bytes, { digest: d, size: 3 }, "the layer"),
    (err: ShimError) =>
      err.kind === Kind.DATA_LOSS &&
      /the layer is 10 bytes, but its descriptor says 3/.test(err.message),
  );
  const other = `sha256:${"0".repeat(64)}`;
  await assert.rejects(
    checkBlob(bytes, { digest: other, size: bytes.length }, "the layer"),
    (err: ShimError) =>
      err.kind === Kind.DATA_LOSS &&
      err.message === `the layer has digest ${d}, not ${other}: the content is corrupt`,
  );
});

Deno.test("BlobCache: put, get (verified), and a corrupt entry is deleted", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const lines: string[] = [];
    const cache = new BlobCache(`${dir}/`, (l) => lines.push(l));
    const ref = { digest: await digestOf(bytes), size: bytes.length };
    assert.equal(cache.path(ref.digest), `${dir}/blobs/sha256/${ref.digest.slice(7)}`);
    assert.equal(await cache.get(ref), null, "empty cache");
    const path = await cache.put(ref, bytes);
    assert.equal(path, cache.path(ref.digest));
    assert.deepEqual(await cache.get(ref), bytes);
    assert.deepEqual([...Deno.readDirSync(`${dir}/blobs/sha256`)].map((e) => e.name), [
      ref.digest.slice(7),
    ], "no temporary files left");

    await Deno.writeFile(path, new TextEncoder().encode("hello wasn"));
    assert.equal(await cache.get(ref), null);
    assert.match(lines.join("\n"), /discarding .* has digest sha256:[0-9a-f]+, not/);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
    assert.equal(lines.length, 1);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("BlobCache: a directory that cannot be written fails put, saying where", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/blobs`, "a file where the directory should be");
    const cache = new BlobCache(dir);
    const ref = { digest: await digestOf(bytes), size: bytes.length };
    await assert.rejects(
      cache.put(ref, bytes),
      /cannot store blob sha256:[0-9a-f]+ in .*\/blobs\/sha256/,
    );
    assert.equal(await cache.get(ref), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
