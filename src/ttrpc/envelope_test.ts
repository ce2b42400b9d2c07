import assert from "node:assert/strict";
import { decode, encode } from "../proto/messages.ts";
import { ProtoDecodeError, ProtoWriter } from "../proto/wire.ts";
import {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  type TtrpcRequest,
} from "./envelope.ts";

Deno.test("ttrpc Request/Response codecs match protobufjs in both directions", () => {
  const req: TtrpcRequest = {
    service: "containerd.task.v2.Task",
    method: "State",
    payload: new Uint8Array([0x0a, 0x02, 0x74, 0x31]),
    timeout_nano: 2_000_000_000,
    metadata: [{ key: "containerd-namespace-ttrpc", value: "default" }, { key: "a", value: "" }],
  };
  const ours = encodeRequest(req);
  assert.deepEqual(ours, encode("ttrpc.Request", req));
  assert.deepEqual(decodeRequest(ours), req);
  assert.deepEqual(decode("ttrpc.Request", ours), req);

  const ok = { payload: new Uint8Array([1]) };
  assert.deepEqual(encodeResponse(ok), encode("ttrpc.Response", ok));
  assert.deepEqual(decodeResponse(encodeResponse(ok)), ok);
  const failed = {
    status: {
      code: 5,
      message: "not found",
      details: [{ type_url: "x", value: new Uint8Array(0) }],
    },
    payload: new Uint8Array(0),
  };
  assert.deepEqual(encodeResponse(failed), encode("ttrpc.Response", failed));
  assert.deepEqual(decodeResponse(encode("ttrpc.Response", failed)), failed);
  assert.deepEqual(decodeResponse(new Uint8Array(0)), { payload: new Uint8Array(0) });
});

Deno.test("decoders skip unknown fields of every wire type", () => {
  const bytes = new ProtoWriter()
    .uint32(99, 5)
    .fixed32(98, 1)
    .fixed64(97, 1n)
    .bytes(96, new Uint8Array([1]))
    .string(1, "svc")
    .finish();
  assert.equal(decodeRequest(bytes).service, "svc");
});

Deno.test("ProtoReader rejects malformed input with ProtoDecodeError", () => {
  const bad: [string, number[], RegExp][] = [
    ["truncated varint", [0x20, 0x80], /truncated varint/],
    ["overlong varint", [0x20, ...new Array(11).fill(0xff)], /longer than 10 bytes/],
    ["length past end", [0x0a, 0x05, 0x61], /runs past the end/],
    ["field number 0", [0x02, 0x00], /invalid field number 0/],
    ["wire type 7", [0x0f], /invalid wire type 7/],
    ["group", [0x4b], /cannot skip wire type 3/],
    ["invalid UTF-8", [0x0a, 0x02, 0xc3, 0x28], /invalid UTF-8/],
    ["wrong wire type", [0x08, 0x01], /field 1 has wire type 0, want 2/],
    ["truncated fixed", [0x4d, 0x01], /truncated 4-byte fixed/],
  ];
  for (const [what, bytes, message] of bad) {
    assert.throws(
      () => decodeRequest(new Uint8Array(bytes)),
      (err: unknown) => err instanceof ProtoDecodeError && message.test(err.message),
      what,
    );
  }
});
