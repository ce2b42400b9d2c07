import assert from "node:assert/strict";
import {
  type DecodedFrame,
  encodeFrame,
  Flag,
  FrameDecoder,
  FrameError,
  HEADER_LENGTH,
  MESSAGE_LENGTH_MAX,
  MessageType,
} from "./frame.ts";
import { concatBytes } from "../sys/bytes.ts";

const concat = (...parts: Uint8Array[]): Uint8Array => concatBytes(parts);

function header(length: number, streamId: number, type: number, flags: number): Uint8Array {
  const h = new Uint8Array(HEADER_LENGTH);
  const v = new DataView(h.buffer);
  v.setUint32(0, length);
  v.setUint32(4, streamId);
  h[8] = type;
  h[9] = flags;
  return h;
}

const text = (s: string) => new TextEncoder().encode(s);

/** Three frames: a request, a zero-length response, and a data frame. */
const SAMPLE = [
  { streamId: 3, type: MessageType.REQUEST, flags: 0, data: text("hello, ttrpc") },
  { streamId: 5, type: MessageType.RESPONSE, flags: 0, data: new Uint8Array(0) },
  {
    streamId: 7,
    type: MessageType.DATA,
    flags: Flag.REMOTE_CLOSED | Flag.NO_DATA,
    data: new Uint8Array([1, 2, 3]),
  },
];
const SAMPLE_BYTES = concat(
  ...SAMPLE.map((f) => encodeFrame(f.streamId, f.type, f.flags, f.data)),
);

Deno.test("constants match the wire spec", () => {
  assert.equal(HEADER_LENGTH, 10);
  assert.equal(MESSAGE_LENGTH_MAX, 4194304);
  assert.deepEqual({ ...MessageType }, { REQUEST: 1, RESPONSE: 2, DATA: 3 });
  assert.deepEqual({ ...Flag }, { REMOTE_CLOSED: 1, REMOTE_OPEN: 2, NO_DATA: 4 });
});

Deno.test("encodeFrame writes a big-endian header followed by the data", () => {
  const frame = encodeFrame(0x01020304, MessageType.RESPONSE, Flag.NO_DATA, text("ab"));
  assert.deepEqual(
    [...frame],
    [0, 0, 0, 2, 1, 2, 3, 4, 2, 4, 0x61, 0x62],
  );
  assert.deepEqual([...encodeFrame(5, MessageType.RESPONSE, 0)], [0, 0, 0, 0, 0, 0, 0, 5, 2, 0]);
});

Deno.test("encodeFrame rejects oversize data and out-of-range header values", () => {
  assert.throws(
    () => encodeFrame(1, 1, 0, new Uint8Array(MESSAGE_LENGTH_MAX + 1)),
    /message length 4194305 exceed maximum message size of 4194304/,
  );
  assert.equal(encodeFrame(1, 1, 0, new Uint8Array(MESSAGE_LENGTH_MAX)).length, 4194314);
  assert.throws(() => encodeFrame(-1, 1, 0), RangeError);
  assert.throws(() => encodeFrame(2 ** 32, 1, 0), RangeError);
  assert.throws(() => encodeFrame(1, 256, 0), RangeError);
  assert.throws(() => encodeFrame(1, 1, 1.5), RangeError);
});

Deno.test("FrameDecoder decodes many frames from one chunk, including zero-length ones", () => {
  const frames = new FrameDecoder().push(SAMPLE_BYTES);
  assert.deepEqual(frames, SAMPLE);
});

Deno.test("FrameDecoder handles a split at every byte boundary", () => {
  for (let split = 0; split <= SAMPLE_BYTES.length; split++) {
    const decoder = new FrameDecoder();
    const frames = [
      ...decoder.push(SAMPLE_BYTES.subarray(0, split)),
      ...decoder.push(SAMPLE_BYTES.subarray(split)),
    ];
    assert.deepEqual(frames, SAMPLE, `split at ${split}`);
    assert.equal(decoder.buffered, 0);
  }
});

Deno.test("FrameDecoder handles two splits at every pair of byte boundaries", () => {
  for (let a = 0; a <= SAMPLE_BYTES.length; a++) {
    for (let b = a; b <= SAMPLE_BYTES.length; b++) {
      const decoder = new FrameDecoder();
      const frames = [
        ...decoder.push(SAMPLE_BYTES.subarray(0, a)),
        ...decoder.push(SAMPLE_BYTES.subarray(a, b)),
        ...decoder.push(SAMPLE_BYTES.subarray(b)),
      ];
      assert.deepEqual(frames, SAMPLE, `splits at ${a}, ${b}`);
    }
  }
});

Deno.test("FrameDecoder handles one byte at a time", () => {
  const decoder = new FrameDecoder();
  const frames: DecodedFrame[] = [];
  for (const byte of SAMPLE_BYTES) frames.push(...decoder.push(new Uint8Array([byte])));
  assert.deepEqual(frames, SAMPLE);
});

Deno.test("FrameDecoder copies data: the caller may reuse its chunk buffer", () => {
  const chunk = encodeFrame(1, MessageType.REQUEST, 0, text("abc"));
  const [frame] = new FrameDecoder().push(chunk);
  chunk.fill(0);
  assert.ok(!frame.oversize);
  assert.deepEqual(frame.data, text("abc"));
});

Deno.test("FrameDecoder accepts a frame of exactly MESSAGE_LENGTH_MAX bytes", () => {
  const data = new Uint8Array(MESSAGE_LENGTH_MAX).fill(7);
  const [frame] = new FrameDecoder().push(encodeFrame(9, MessageType.REQUEST, 0, data));
  assert.ok(!frame.oversize);
  assert.equal(frame.data.length, MESSAGE_LENGTH_MAX);
});

Deno.test("FrameDecoder assembles a large body from uneven chunks as it grows", () => {
  const data = new Uint8Array(MESSAGE_LENGTH_MAX - 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
  const bytes = encodeFrame(5, MessageType.REQUEST, 0, data);
  const decoder = new FrameDecoder();
  const frames: DecodedFrame[] = [];
  for (let at = 0, step = 1; at < bytes.length; at += step, step = (step * 7 + 3) % 200_000 + 1) {
    frames.push(...decoder.push(bytes.subarray(at, at + step)));
  }
  assert.equal(frames.length, 1);
  assert.ok(!frames[0].oversize);
  assert.equal(frames[0].data.length, data.length);
  assert.ok(frames[0].data.every((b, i) => b === data[i]));
  assert.equal(decoder.buffered, 0);
});

Deno.test("FrameDecoder does not allocate a body's announced length before it arrives", () => {
  // Before: each 10-byte header allocated its whole length (here 4 MiB) at once.
  const decoders: FrameDecoder[] = [];
  const before = Deno.memoryUsage().external;
  for (let i = 0; i < 100; i++) {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(header(MESSAGE_LENGTH_MAX, 1, MessageType.REQUEST, 0)), []);
    assert.deepEqual(decoder.push(new Uint8Array(1)), []);
    decoders.push(decoder);
  }
  const grown = Deno.memoryUsage().external - before;
  // 100 × 4 MiB would be 400 MiB; 100 × 64 KiB is 6.4 MiB.
  assert.ok(grown < 64 << 20, `external memory grew by ${grown} bytes for 100 headers`);
  assert.equal(decoders[99].buffered, 1);
});

Deno.test("FrameDecoder discards an oversize body as it streams in, without buffering it", () => {
  const length = MESSAGE_LENGTH_MAX + 1000;
  const decoder = new FrameDecoder();
  const frames = decoder.push(header(length, 11, MessageType.REQUEST, 0));
  assert.deepEqual(frames, [
    { streamId: 11, type: MessageType.REQUEST, flags: 0, length, oversize: true },
  ]);
  const chunk = new Uint8Array(64 * 1024).fill(0xee);
  let remaining = length;
  while (remaining > chunk.length) {
    assert.deepEqual(decoder.push(chunk), []);
    remaining -= chunk.length;
    assert.equal(decoder.buffered, 0);
    assert.equal(decoder.discarding, remaining);
  }
  // The tail of the oversize body and a normal frame arrive in one chunk.
  const next = encodeFrame(13, MessageType.REQUEST, 0, text("next"));
  const tail = decoder.push(concat(chunk.subarray(0, remaining), next));
  assert.deepEqual(tail, [
    { streamId: 13, type: MessageType.REQUEST, flags: 0, data: text("next") },
  ]);
  assert.equal(decoder.discarding, 0);
});

Deno.test("FrameDecoder reports a garbage header and stays failed", () => {
  const decoder = new FrameDecoder();
  const good = encodeFrame(1, MessageType.REQUEST, 0, text("x"));
  assert.throws(
    () => decoder.push(concat(good, text("GET / HTTP/1.1\r\n"))),
    (err: unknown) => err instanceof FrameError && /reserved first byte/.test(err.message),
  );
  assert.throws(() => decoder.push(good), FrameError);
});
