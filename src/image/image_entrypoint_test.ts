import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { Method } from "./containerd/client.ts";
import { sha256Digest } from "../oci/image.ts";
import { decode, encode } from "../proto/messages.ts";
import { Kind, ShimError } from "../errdefs/errors.ts";
import { resolveGuestEntrypoint } from "./image_entrypoint.ts";
import { guestDenoFlags } from "../runner/permissions.ts";
import type { GuestConfig } from "../wasm/guest_init.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const enc = new TextEncoder();
const WASM = new Uint8Array([0, 0x61, 0x73, 0x6d, 1, 0, 0, 0]);

function config(rootfs: string, args: string[], cacheDir?: string): GuestConfig {
  return {
    id: "c1",
    rootfs,
    args,
    env: [],
    cwd: "/",
    stdin: "",
    stdout: "",
    stderr: "",
    cacheDir,
  };
}

/** A fake containerd serving one artifact image to container "c1"; counts blob reads. */
async function fakeContainerd(image: string | undefined) {
  const blobs = new Map<string, Uint8Array>();
  const add = async (mediaType: string, bytes: Uint8Array) => {
    const digest = await sha256Digest(bytes);
    blobs.set(digest, bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const layer = {
    ...(await add("application/wasm", WASM)),
    annotations: { "org.opencontainers.image.title": "app.wasm" },
  };
  const cfg = await add(
    "application/vnd.wasm.config.v0+json",
    enc.encode(JSON.stringify({ architecture: "wasm", os: "wasip1" })),
  );
  const manifest = await add(
    "application/vnd.oci.image.manifest.v1+json",
    enc.encode(JSON.stringify({ schemaVersion: 2, config: cfg, layers: [layer] })),
  );
  const reads: string[] = [];
  const server = new grpc.Server();
  const raw = (b: Uint8Array) => Buffer.from(b);
  const bytes = (b: Buffer) => new Uint8Array(b);
  const getContainer: grpc.handleUnaryCall<Uint8Array, Uint8Array> = (call, cb) => {
    const { id } = decode<{ id: string }>(Method.getContainer.request, call.request);
    cb(null, encode(Method.getContainer.response, { container: { id, image: image ?? "" } }));
  };
  const getImage: grpc.handleUnaryCall<Uint8Array, Uint8Array> = (call, cb) => {
    const { name } = decode<{ name: string }>(Method.getImage.request, call.request);
    const target = { media_type: manifest.mediaType, digest: manifest.digest, size: manifest.size };
    cb(null, encode(Method.getImage.response, { image: { name, target } }));
  };
  const readContent: grpc.handleServerStreamingCall<Uint8Array, Uint8Array> = (call) => {
    const { digest } = decode<{ digest: string }>(Method.readContent.request, call.request);
    reads.push(digest);
    const blob = blobs.get(digest);
    if (!blob) {
      call.emit("error", { code: grpc.status.NOT_FOUND, details: `content digest ${digest}` });
      return;
    }
    call.write(encode(Method.readContent.response, { offset: 0, data: blob }));
    call.end();
  };
  server.register(Method.getContainer.path, getContainer, raw, bytes, "unary");
  server.register(Method.getImage.path, getImage, raw, bytes, "unary");
  server.register(Method.readContent.path, readContent, raw, bytes, "serverStream");
  const dir = await Deno.makeTempDir();
  const path = `${dir}/c.sock`;
  await new Promise((resolve, reject) =>
    server.bindAsync(
      `unix://${path}`,
      grpc.ServerCredentials.createInsecure(),
      (e, p) => e ? reject(e) : resolve(p),
    )
  );
  return {
    address: { address: path, namespace: "ns" },
    reads,
    layer,
    async close() {
      server.forceShutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name: "resolveGuestEntrypoint: a file in the rootfs never asks containerd",
  ...opts,
  async fn() {
    const rootfs = await Deno.makeTempDir();
    try {
      await Deno.writeFile(`${rootfs}/app.wasm`, WASM);
      const lines: string[] = [];
      const entry = await resolveGuestEntrypoint(config(rootfs, ["/app.wasm"]), {
        containerd: { address: "/nonexistent.sock", namespace: "ns" },
        log: (l) => lines.push(l),
      });
      assert.equal(entry.hostPath, `${rootfs}/app.wasm`);
      assert.equal(entry.layer, undefined);
      assert.equal(lines.length, 0, lines.join());
      // A path that leaves the rootfs is refused before any look at the image.
      await assert.rejects(
        resolveGuestEntrypoint(config(rootfs, ["/../x.wasm"]), {
          containerd: { address: "/nonexistent.sock", namespace: "ns" },
          log: (l) => lines.push(l),
        }),
        (err: ShimError) => err.kind === Kind.INVALID_ARGUMENT,
      );
      assert.equal(lines.length, 0, lines.join());
    } finally {
      await Deno.remove(rootfs, { recursive: true });
    }
  },
});

Deno.test({
  name: "resolveGuestEntrypoint: no containerd, or none reachable: the rootfs error stays",
  ...opts,
  async fn() {
    const rootfs = await Deno.makeTempDir();
    try {
      const cfg = config(rootfs, ["/app.wasm"], `${rootfs}/cache`);
      const notFound = /entrypoint "\/app.wasm" in the container's root .*: not found$/;
      await assert.rejects(resolveGuestEntrypoint(cfg), notFound);
      const lines: string[] = [];
      await assert.rejects(
        resolveGuestEntrypoint(cfg, {
          containerd: { address: `${rootfs}/none.sock`, namespace: "ns" },
          log: (l) => lines.push(l),
        }),
        notFound,
      );
      assert.match(lines.join(), /no Wasm layers to run instead: containerd cannot say which/);
    } finally {
      await Deno.remove(rootfs, { recursive: true });
    }
  },
});

Deno.test({
  name: "resolveGuestEntrypoint: an artifact's layer is fetched once, then cached",
  ...opts,
  async fn() {
    const rootfs = await Deno.makeTempDir();
    const fake = await fakeContainerd("example.com/app:1");
    try {
      const cacheDir = `${rootfs}-cache`;
      const lines: string[] = [];
      const options = { containerd: fake.address, log: (l: string) => lines.push(l) };
      const entry = await resolveGuestEntrypoint(
        config(rootfs, ["/app.wasm#run"], cacheDir),
        options,
      );
      assert.equal(entry.layer, fake.layer.digest);
      assert.equal(entry.func, "run");
      assert.equal(entry.hostPath, `${cacheDir}/blobs/sha256/${fake.layer.digest.slice(7)}`);
      assert.deepEqual(await Deno.readFile(entry.hostPath), WASM);
      assert.match(entry.guestPath, /^example.com\/app:1 app.wasm \(layer sha256:/);
      assert.equal(fake.reads.length, 3, "manifest, config and layer");
      assert.match(lines[0], /0 from the shim's cache, 3 read from containerd \(\d+ bytes\)/);

      const again = await resolveGuestEntrypoint(config(rootfs, ["other"], cacheDir), options);
      assert.equal(again.hostPath, entry.hostPath);
      assert.equal(fake.reads.length, 3, "nothing read the second time");
      assert.match(lines[1], /3 from the shim's cache, 0 read from containerd/);
      await Deno.remove(cacheDir, { recursive: true });
    } finally {
      await fake.close();
      await Deno.remove(rootfs, { recursive: true });
    }
  },
});

Deno.test({
  name: "resolveGuestEntrypoint: a container without an image keeps the rootfs error",
  ...opts,
  async fn() {
    const rootfs = await Deno.makeTempDir();
    const fake = await fakeContainerd(undefined);
    try {
      const lines: string[] = [];
      await assert.rejects(
        resolveGuestEntrypoint(config(rootfs, ["/app.wasm"], `${rootfs}/cache`), {
          containerd: fake.address,
          log: (l) => lines.push(l),
        }),
        (err: ShimError) => err instanceof ShimError && err.kind === Kind.NOT_FOUND,
      );
      assert.match(lines.join(), /no Wasm layers to run instead: the container has no image/);
    } finally {
      await fake.close();
      await Deno.remove(rootfs, { recursive: true });
    }
  },
});

Deno.test("guestDenoFlags: an image layer outside the rootfs is readable, not writable", () => {
  const flags = guestDenoFlags({
    rootfs: "/b/rootfs",
    stdio: ["", "/b/out", "/b/err"],
    kind: "module",
    wasmFile: "/cache/blobs/sha256/abc",
  });
  assert.ok(
    flags.includes("--allow-read=/b/rootfs,/dev/null,/b/out,/b/err,/cache/blobs/sha256/abc"),
  );
  assert.ok(flags.includes("--allow-write=/b/rootfs,/dev/null,/b/out,/b/err"));
});
