import assert from "node:assert/strict";
import { decode, encode } from "./messages.ts";
import { encodeDeleteResponse } from "./gen/task.ts";
import { encodeRuntimeInfo } from "./gen/types.ts";
import { decodeAny, decodeTimestamp, encodeAny, encodeTimestamp } from "./gen/well_known.ts";
import { ProtoReader, ProtoWriter, WireType } from "./wire.ts";

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, "0")).join(" ");

Deno.test("ProtoWriter varints match protobuf for edge values", () => {
  const cases: [number | bigint, string][] = [
    [1, "08 01"],
    [127, "08 7f"],
    [128, "08 80 01"],
    [300, "08 ac 02"],
    [2 ** 32, "08 80 80 80 80 10"],
    [Number.MAX_SAFE_INTEGER, "08 ff ff ff ff ff ff ff 0f"],
    [-1, "08 ff ff ff ff ff ff ff ff ff 01"],
    [2n ** 64n - 1n, "08 ff ff ff ff ff ff ff ff ff 01"],
  ];
  for (const [value, expected] of cases) {
    assert.equal(hex(new ProtoWriter().int64(1, value).finish()), expected, String(value));
  }
  assert.equal(hex(new ProtoWriter().int32(1, -2).finish()), "08 fe ff ff ff ff ff ff ff ff 01");
  assert.throws(() => new ProtoWriter().uint32(1, 2 ** 32), RangeError);
  assert.throws(() => new ProtoWriter().int64(1, 2 ** 60), RangeError);
  assert.throws(() => new ProtoWriter().tag(0, WireType.VARINT), RangeError);
});

Deno.test("ProtoWriter omits proto3 defaults but always writes sub-messages", () => {
  const w = new ProtoWriter()
    .uint32(1, 0)
    .int32(2, 0)
    .int64(3, 0)
    .bool(4, false)
    .string(5, "")
    .bytes(6, new Uint8Array(0))
    .fixed32(7, 0)
    .fixed64(8, 0n)
    .message(9, undefined);
  assert.equal(w.finish().length, 0);
  assert.equal(hex(new ProtoWriter().message(9, new Uint8Array(0)).finish()), "4a 00");
});

Deno.test("ProtoWriter/ProtoReader fixed and growing buffers round-trip", () => {
  const big = new Uint8Array(1000).fill(3);
  const bytes = new ProtoWriter()
    .fixed32(1, 0xdeadbeef)
    .fixed64(2, 0x0123456789abcdefn)
    .bytes(3, big)
    .string(4, "héllo")
    .bool(5, true)
    .finish();
  const r = new ProtoReader(bytes);
  assert.deepEqual(r.next(), { field: 1, wireType: WireType.FIXED32 });
  assert.equal(r.fixed32(), 0xdeadbeef);
  assert.deepEqual(r.next(), { field: 2, wireType: WireType.FIXED64 });
  assert.equal(r.fixed64(), 0x0123456789abcdefn);
  assert.deepEqual(r.next(), { field: 3, wireType: WireType.LEN });
  assert.deepEqual(r.bytes(), big);
  assert.deepEqual(r.next(), { field: 4, wireType: WireType.LEN });
  assert.equal(r.string(), "héllo");
  assert.deepEqual(r.next(), { field: 5, wireType: WireType.VARINT });
  assert.equal(r.bool(), true);
  assert.equal(r.next(), undefined);
});

Deno.test("encodeDeleteResponse reproduces the doc §2.9 bytes and matches protobufjs", () => {
  const exitedAt = { seconds: 1795466793, nanos: 107973814 };
  assert.equal(
    hex(encodeDeleteResponse({ pid: 0, exit_status: 137, exited_at: exitedAt })),
    "10 89 01 1a 0b 08 a9 cc 92 d8 06 10 b6 99 be 33",
  );
  const cases = [
    { pid: 0, exit_status: 0 },
    { pid: 4242, exit_status: 255, exited_at: { seconds: 0, nanos: 0 } },
    { pid: 2 ** 32 - 1, exit_status: 137, exited_at: { seconds: -5, nanos: 999_999_999 } },
  ];
  for (const c of cases) {
    assert.deepEqual(
      encodeDeleteResponse(c),
      encode("containerd.task.v2.DeleteResponse", c),
      JSON.stringify(c),
    );
  }
});

Deno.test("encodeRuntimeInfo matches protobufjs", () => {
  const cases = [
    { name: "io.containerd.wasmtime.v1" },
    {
      name: "io.containerd.wasmtime.v1",
      version: { version: "0.1.0", revision: "" },
      options: { type_url: "opts", value: new Uint8Array([1, 2]) },
      features: { type_url: "", value: new Uint8Array(0) },
      annotations: { "containerd.io/runtime-allow-mounts": "bind,overlay", empty: "", "": "v" },
    },
  ];
  for (const c of cases) {
    const ours = encodeRuntimeInfo(c);
    assert.equal(hex(ours), hex(encode("containerd.types.RuntimeInfo", c)));
    assert.deepEqual(decode("containerd.types.RuntimeInfo", ours), { annotations: {}, ...c });
  }
});

Deno.test("Timestamp and Any codecs match protobufjs", () => {
  for (
    const ts of [{ seconds: 0, nanos: 0 }, { seconds: 1_700_000_000, nanos: 1 }, {
      seconds: -62135596800,
      nanos: 999_999_999,
    }]
  ) {
    const ours = encodeTimestamp(ts);
    assert.deepEqual(ours, encode("google.protobuf.Timestamp", ts));
    assert.deepEqual(decodeTimestamp(ours), ts);
  }
  const any = { type_url: "containerd.events.TaskExit", value: new Uint8Array([1, 2, 3]) };
  assert.deepEqual(encodeAny(any), encode("google.protobuf.Any", any));
  assert.deepEqual(decodeAny(encode("google.protobuf.Any", any)), any);
});
