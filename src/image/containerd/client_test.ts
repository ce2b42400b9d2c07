import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import * as grpc from "@grpc/grpc-js";
import { decode, encode } from "../../proto/messages.ts";
import { Kind, type ShimError } from "../../errdefs/errors.ts";
import { ContainerdClient, grpcTarget, Method, NAMESPACE_HEADER } from "./client.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };
const raw = (b: Uint8Array) => Buffer.from(b);
const bytes = (b: Buffer) => new Uint8Array(b);

/** A fake containerd: Containers/Get, Images/Get and Content/Read over a unix socket. */
async function fakeContainerd(blob: Uint8Array, seen: string[]) {
  const server = new grpc.Server();
  const namespace = (call: { metadata: grpc.Metadata }) =>
    String(call.metadata.get(NAMESPACE_HEADER)[0] ?? "");
  server.register<Uint8Array, Uint8Array>(
    Method.getContainer.path,
    (call: grpc.ServerUnaryCall<Uint8Array, Uint8Array>, cb: grpc.sendUnaryData<Uint8Array>) => {
      const { id } = decode<{ id: string }>(Method.getContainer.request, call.request);
      seen.push(`Get ${id} in ${namespace(call)}`);
      if (id === "missing") {
        cb({ code: grpc.status.NOT_FOUND, details: `container "missing": not found` });
        return;
      }
      cb(null, encode(Method.getContainer.response, { container: { id, image: "img:1" } }));
    },
    raw,
    bytes,
    "unary",
  );
  server.register<Uint8Array, Uint8Array>(
    Method.getImage.path,
    (call: grpc.ServerUnaryCall<Uint8Array, Uint8Array>, cb: grpc.sendUnaryData<Uint8Array>) => {
      const { name } = decode<{ name: string }>(Method.getImage.request, call.request);
      cb(
        null,
        encode(Method.getImage.response, {
          image: {
            name,
            target: {
              media_type: "application/vnd.oci.image.manifest.v1+json",
              digest: "d",
              size: 7,
            },
          },
        }),
      );
    },
    raw,
    bytes,
    "unary",
  );
  server.register<Uint8Array, Uint8Array>(
    Method.readContent.path,
    (call: grpc.ServerWritableStream<Uint8Array, Uint8Array>) => {
      const req = decode<{ digest: string }>(Method.readContent.request, call.request);
      seen.push(`Read ${req.digest} in ${namespace(call)}`);
      for (let offset = 0; offset < blob.length; offset += 4) {
        call.write(
          encode(Method.readContent.response, { offset, data: blob.subarray(offset, offset + 4) }),
        );
      }
      call.end();
    },
    raw,
    bytes,
    "serverStream",
  );
  const dir = await Deno.makeTempDir();
  const path = `${dir}/containerd.sock`;
  await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `unix://${path}`,
      grpc.ServerCredentials.createInsecure(),
      (err, port) => err ? reject(err) : resolve(port),
    )
  );
  return {
    path,
    async close() {
      server.forceShutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("grpcTarget: a path or unix:// URL; anything else is refused", () => {
  assert.equal(
    grpcTarget("/run/containerd/containerd.sock"),
    "unix:///run/containerd/containerd.sock",
  );
  assert.equal(grpcTarget("unix:///x.sock"), "unix:///x.sock");
  assert.throws(() => grpcTarget("localhost:1234"), /is not a unix socket path/);
});

Deno.test({
  name: "ContainerdClient: unary and streaming calls carry the namespace; errors keep codes",
  ...opts,
  async fn() {
    const seen: string[] = [];
    const blob = new TextEncoder().encode("0123456789");
    const fake = await fakeContainerd(blob, seen);
    const client = await ContainerdClient.connect({ address: fake.path, namespace: "ns-1" });
    try {
      const c = await client.getContainer("c1");
      assert.equal(c.id, "c1");
      assert.equal(c.image, "img:1");
      assert.equal(c.snapshot_key, "", "proto3 defaults are filled in");
      const image = await client.getImage("img:1");
      assert.deepEqual(image.target, {
        media_type: "application/vnd.oci.image.manifest.v1+json",
        digest: "d",
        size: 7,
        annotations: {},
      });
      await assert.rejects(client.getContainer("missing"), (err: ShimError) => {
        assert.equal(err.kind, Kind.NOT_FOUND);
        assert.equal(err.message, `containerd Containers/Get: container "missing": not found`);
        return true;
      });
      const chunks = [];
      for await (const chunk of client.readContent("sha256:x")) chunks.push(chunk);
      assert.deepEqual(chunks.map((c) => c.offset), [0, 4, 8]);
      assert.equal(
        new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c.data]))),
        "0123456789",
      );
      // Leaving early cancels the stream; the client stays usable.
      for await (const _ of client.readContent("sha256:y")) break;
      assert.equal((await client.getContainer("c2")).id, "c2");
      assert.deepEqual(seen, [
        "Get c1 in ns-1",
        "Get missing in ns-1",
        "Read sha256:x in ns-1",
        "Read sha256:y in ns-1",
        "Get c2 in ns-1",
      ]);
    } finally {
      client.close();
      await fake.close();
    }
  },
});

Deno.test({
  name: "ContainerdClient: a containerd that is not there fails with UNAVAILABLE, naming it",
  ...opts,
  async fn() {
    const client = await ContainerdClient.connect({
      address: "/nonexistent/containerd.sock",
      namespace: "default",
    });
    try {
      await assert.rejects(client.getImage("x"), (err: ShimError) => {
        assert.equal(err.kind, Kind.UNAVAILABLE);
        assert.match(err.message, /^containerd Images\/Get at \/nonexistent\/containerd.sock: /);
        return true;
      });
    } finally {
      client.close();
    }
    await assert.rejects(
      ContainerdClient.connect({ address: "/x.sock", namespace: "" }),
      /containerd namespace is empty/,
    );
  },
});
