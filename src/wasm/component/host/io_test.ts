import assert from "node:assert/strict";
import { CLOSED, InputStream, IoError, OutputStream, Pollable, Poller } from "./io.ts";
import { BodySink, QueueSink, StreamSource } from "./pipes.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function isTag(tag: string) {
  return (err: unknown) => (err as { tag?: string }).tag === tag;
}

Deno.test("QueueSink holds back a writer faster than its reader", async () => {
  const written: string[] = [];
  const gate = Promise.withResolvers<void>();
  const sink = new QueueSink(async (bytes) => {
    await gate.promise;
    written.push(decoder.decode(bytes));
    return bytes.length;
  }, 8);
  const out = new OutputStream(sink);
  assert.equal(out.checkWrite(), 8n);
  out.write(encoder.encode("12345678"));
  assert.equal(out.checkWrite(), 0n, "full");
  const pollable = out.subscribe();
  assert.equal(pollable.ready(), false);
  gate.resolve();
  await pollable.block();
  assert.equal(out.checkWrite(), 8n);
  await out.blockingWriteAndFlush(encoder.encode("abc"));
  assert.deepEqual(written, ["12345678", "abc"]);
  await sink.drained();
});

Deno.test("QueueSink reports a failed write to the next operation", async () => {
  const sink = new QueueSink(() => Promise.reject(new Error("EPIPE")), 16);
  const out = new OutputStream(sink);
  out.checkWrite();
  out.write(encoder.encode("x"));
  await sink.drained();
  assert.throws(() => out.checkWrite(), (err: unknown) => {
    const e = err as { tag: string; val: IoError };
    return e.tag === "last-operation-failed" && e.val.toDebugString() === "EPIPE";
  });
});

Deno.test("OutputStream: a write beyond check-write, or a blocking write over 4096, traps", async () => {
  const out = new OutputStream(new QueueSink((b) => Promise.resolve(b.length), 4));
  assert.throws(() => out.write(new Uint8Array(1)), /exceeds the 0 allowed/);
  await assert.rejects(
    async () => await out.blockingWriteAndFlush(new Uint8Array(4097)),
    /exceeds 4096/,
  );
  out[Symbol.dispose]();
  assert.throws(() => out.checkWrite(), isTag("closed"));
});

Deno.test("BodySink: capacity follows the reader; a cancelled reader fails the writer", async () => {
  const sink = new BodySink(4);
  const out = new OutputStream(sink);
  assert.equal(out.checkWrite(), 4n);
  out.write(encoder.encode("abcd"));
  assert.equal(out.checkWrite(), 0n);
  const reader = sink.stream.getReader();
  assert.equal(decoder.decode((await reader.read()).value), "abcd");
  await out.subscribe().block();
  assert.equal(out.checkWrite(), 4n);
  await reader.cancel("client went away");
  assert.throws(() => out.checkWrite(), isTag("last-operation-failed"));
});

Deno.test("BodySink: end closes the stream, abort errors it", async () => {
  const ended = new BodySink();
  ended.write(encoder.encode("done"));
  ended.end();
  assert.equal(await new Response(ended.stream).text(), "done");
  const aborted = new BodySink();
  aborted.abort(new Error("cut"));
  await assert.rejects(new Response(aborted.stream).text(), /cut/);
});

Deno.test("StreamSource + InputStream: reads what the stream has, then closed", async () => {
  const input = new InputStream(new StreamSource(new Blob(["hello ", "world"]).stream()));
  assert.equal(input.read(100n).length, 0, "nothing buffered before a read was started");
  let text = "";
  while (true) {
    try {
      text += decoder.decode(await input.blockingRead(3n));
    } catch (err) {
      assert.equal(err, CLOSED);
      break;
    }
  }
  assert.equal(text, "hello world");
});

Deno.test("poll returns the ready pollables, waiting for one if none is", async () => {
  const poller = new Poller();
  let ready = false;
  const later = new Pollable({
    ready: () => ready,
    wait: () => new Promise((r) => setTimeout(() => (ready = true, r()), 10)),
  });
  assert.deepEqual([...await poller.poll([later, new Pollable()])], [1]);
  assert.deepEqual([...await poller.poll([later])], [0]);
  await assert.rejects(poller.poll([]), /empty/);
});
