import assert from "node:assert/strict";
import { type ErrorKind, Kind, ShimError } from "../../errdefs/errors.ts";
import { BlobCache } from "../blob_cache.ts";
import { digestOf } from "../../oci/digest.ts";
import type { Container, Image } from "./client.ts";
import { ContainerdImageSource, type ImageClient, readBlob } from "./content.ts";

const enc = new TextEncoder();

/** A client whose Content/Read sends the given chunks (or fails). */
function reader(
  chunks: { offset: number; data: string }[] | ShimError,
  calls: string[] = [],
): ImageClient {
  return {
    namespace: "ns",
    getContainer: (id: string) => Promise.resolve({ id, image: "img" } as Container),
    getImage: (name: string) =>
      Promise.resolve({
        name,
        labels: {},
        target: { media_type: "m/t", digest: "sha256:t", size: 1, annotations: {} },
      } as Image),
    async *readContent(digest: string) {
      calls.push(digest);
      if (chunks instanceof ShimError) throw chunks;
      for (const c of chunks) yield { offset: c.offset, data: enc.encode(c.data) };
    },
  } as ImageClient;
}

async function descOf(text: string) {
  return { digest: await digestOf(enc.encode(text)), size: text.length };
}

Deno.test("readBlob: chunks are joined and verified", async () => {
  const d = await descOf("abcdef");
  const got = await readBlob(
    reader([{ offset: 0, data: "abc" }, { offset: 3, data: "def" }]),
    d,
    100,
    "blob X",
  );
  assert.equal(new TextDecoder().decode(got), "abcdef");
});

Deno.test("readBlob: each way the store can disagree with the descriptor", async () => {
  const d = await descOf("abcdef");
  const fails = async (client: ImageClient, code: ErrorKind, re: RegExp, max = 100) => {
    await assert.rejects(readBlob(client, d, max, "blob X"), (err: ShimError) => {
      assert.equal(err.kind, code, err.message);
      assert.match(err.message, re);
      return true;
    });
  };
  await fails(
    reader([]),
    Kind.RESOURCE_EXHAUSTED,
    /blob X is 6 bytes, over the shim's limit of 5/,
    5,
  );
  await fails(
    reader([{ offset: 0, data: "abc" }, { offset: 4, data: "ef" }]),
    Kind.DATA_LOSS,
    /blob X: containerd sent bytes at offset 4, expected 3/,
  );
  await fails(
    reader([{ offset: 0, data: "abcdefg" }]),
    Kind.DATA_LOSS,
    /blob X in containerd's content store is longer than the 6 bytes/,
  );
  await fails(
    reader([{ offset: 0, data: "abc" }]),
    Kind.DATA_LOSS,
    /blob X in containerd's content store is 3 bytes, but its descriptor says 6/,
  );
  await fails(
    reader([{ offset: 0, data: "abcdeF" }]),
    Kind.DATA_LOSS,
    /blob X in containerd's content store has digest sha256:[0-9a-f]{64}, not sha256:/,
  );
  await fails(
    reader(new ShimError(Kind.NOT_FOUND, "containerd Content/Read: content digest x: not found")),
    Kind.NOT_FOUND,
    /blob X is missing from containerd's content store \(namespace "ns"\): containerd Content/,
  );
  await fails(
    reader(new ShimError(Kind.UNAVAILABLE, "containerd Content/Read at /s: gone")),
    Kind.UNAVAILABLE,
    /^containerd Content\/Read at \/s: gone$/,
  );
});

Deno.test("ContainerdImageSource: reads once, then answers from the cache", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const calls: string[] = [];
    const d = { mediaType: "application/wasm", ...(await descOf("wasm!")) };
    const source = new ContainerdImageSource(
      reader([{ offset: 0, data: "wasm!" }], calls),
      new BlobCache(dir),
    );
    assert.equal(await source.containerImage("c"), "img");
    assert.deepEqual(await source.imageTarget("img"), {
      mediaType: "m/t",
      digest: "sha256:t",
      size: 1,
      annotations: {},
    });
    const held = await source.file(d, 100, "layer");
    assert.equal(await Deno.readTextFile(held.path), "wasm!");
    assert.equal(new TextDecoder().decode(await source.read(d, 100, "layer")), "wasm!");
    using again = await source.file(d, 100, "layer");
    assert.equal(again.path, held.path);
    held.release();
    assert.deepEqual(calls, [d.digest]);
    assert.deepEqual(source.stats, { cached: 2, read: 1, bytesRead: 5 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ContainerdImageSource: a layer that cannot be stored fails; metadata need not be", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/blobs`, "not a directory");
    const lines: string[] = [];
    const d = { mediaType: "application/wasm", ...(await descOf("wasm!")) };
    const source = new ContainerdImageSource(
      reader([{ offset: 0, data: "wasm!" }]),
      new BlobCache(dir),
      (l) => lines.push(l),
    );
    assert.equal(new TextDecoder().decode(await source.read(d, 100, "manifest")), "wasm!");
    assert.match(lines.join(), /manifest: not cached: cannot store blob/);
    await assert.rejects(source.file(d, 100, "the layer"), (err: ShimError) => {
      assert.equal(err.kind, Kind.FAILED_PRECONDITION);
      assert.match(err.message, /the layer: cannot store blob .* set WASMTIME_SHIM_CACHE_DIR/);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
