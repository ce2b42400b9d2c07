import assert from "node:assert/strict";
import { drainedBy, holdReaders, NonBlockingFifo } from "./fifo.ts";

async function withFifo(fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "fifo-test-" });
  try {
    const path = `${dir}/f`;
    const made = await new Deno.Command("mkfifo", { args: [path] }).output();
    assert.equal(made.code, 0);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a writer is held only once a reader has the FIFO open", async () => {
  await withFifo(async (path) => {
    assert.equal(NonBlockingFifo.openWriterIfRead(path), undefined);
    assert.deepEqual(await holdReaders([path], 10), []);
    const reader = NonBlockingFifo.openReadWrite(path);
    const held = await holdReaders([path, ""], 10);
    assert.equal(held.length, 1);
    for (const end of [...held, reader]) end.close();
  });
});

Deno.test("unread counts what no reader took yet; drainedBy waits for the reader", async () => {
  await withFifo(async (path) => {
    const reader = NonBlockingFifo.openReadWrite(path);
    const writer = NonBlockingFifo.openWriterIfRead(path)!;
    assert.equal(writer.writeSome(new TextEncoder().encode("hello")), 5);
    assert.equal(writer.unread(), 5);
    assert.equal(await drainedBy([writer], 20), false, "nobody read: not drained in time");
    const later = drainedBy([writer], 2_000);
    const buf = new Uint8Array(16);
    assert.equal(await reader.read(buf, () => true), 5);
    assert.equal(await later, true);
    assert.equal(writer.unread(), 0);
    writer.close();
    assert.equal(writer.unread(), 0, "a closed end has nothing unread");
    reader.close();
  });
});
