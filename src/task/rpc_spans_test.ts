import assert from "node:assert/strict";
import { RpcSpans, TRACEPARENT_METADATA } from "./rpc_spans.ts";

const SERVICE = "containerd.task.v2.Task";
const FROM_ENV = { traceId: "1".repeat(32), spanId: "2".repeat(16), traceFlags: 1 };
const SENT = `00-${"a".repeat(32)}-${"b".repeat(16)}-01`;

function call(method: string, traceparent?: string) {
  const metadata = new Map<string, string[]>();
  if (traceparent) metadata.set(TRACEPARENT_METADATA, [traceparent]);
  return { metadata, method, service: SERVICE };
}

Deno.test("RpcSpans.parentOf: containerd's traceparent, else the server's trace context", () => {
  const spans = new RpcSpans({ parent: FROM_ENV });
  assert.equal(spans.parentOf(call("Create", SENT), "c1")?.spanId, "b".repeat(16));
  assert.deepEqual(spans.parentOf(call("Create"), "c1"), FROM_ENV);
  assert.deepEqual(spans.parentOf(call("Start", "garbage"), "c1"), FROM_ENV);
  assert.equal(new RpcSpans().parentOf(call("Start"), "c1"), undefined);
});

Deno.test("RpcSpans.around: answers, rethrows, and logs one debug line per call", async () => {
  const lines: string[] = [];
  const spans = new RpcSpans({ debug: (line) => lines.push(line) });
  assert.equal(await spans.around(call("State"), "c1", () => 42, () => 0), 42);
  await assert.rejects(
    spans.around(call("Kill"), "c2", () => Promise.reject(new Error("no such task")), () => 5),
    /no such task/,
  );
  assert.equal(lines.length, 2);
  assert.match(lines[0], /^task c1: State ok in [\d.]+ ms$/);
  assert.match(lines[1], /^task c2: Kill error code 5: no such task in [\d.]+ ms$/);
});
