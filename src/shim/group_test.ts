import assert from "node:assert/strict";
import {
  decodeHold,
  encodeHold,
  groupingFromEnv,
  groupOf,
  idleTimeoutFromEnv,
  IdleTracker,
  SHARED_GROUP,
} from "./group.ts";
import { SANDBOX_ID_ANNOTATION } from "./socket_path.ts";

Deno.test("groupOf: a pod's containers share the pod's server whatever the grouping", () => {
  const pod = { [SANDBOX_ID_ANNOTATION]: "pod-1" };
  assert.equal(groupOf("c1", pod, "namespace", SANDBOX_ID_ANNOTATION), "pod-1");
  assert.equal(groupOf("c1", pod, "container", SANDBOX_ID_ANNOTATION), "pod-1");
});

Deno.test("groupOf: other containers share the namespace's server, or have their own", () => {
  assert.equal(groupOf("c1", {}, "namespace", SANDBOX_ID_ANNOTATION), SHARED_GROUP);
  assert.equal(groupOf("c1", undefined, "container", SANDBOX_ID_ANNOTATION), "c1");
});

Deno.test("grouping and idle timeout from the environment, with clear errors", () => {
  assert.equal(groupingFromEnv(undefined), "namespace");
  assert.equal(groupingFromEnv("container"), "container");
  assert.throws(() => groupingFromEnv("pod"), /WASMTIME_SHIM_GROUPING="pod" is not valid/);
  assert.equal(idleTimeoutFromEnv(undefined), 60_000);
  assert.equal(idleTimeoutFromEnv("0"), 0);
  assert.equal(idleTimeoutFromEnv("1500"), 1500);
  assert.throws(() => idleTimeoutFromEnv("1.5"), /WASMTIME_SHIM_IDLE_TIMEOUT_MS="1.5"/);
  assert.throws(() => idleTimeoutFromEnv("-1"), /whole number of milliseconds/);
});

Deno.test("HoldRequest round-trips and skips unknown fields", () => {
  assert.equal(decodeHold(encodeHold("task-7")), "task-7");
  assert.equal(decodeHold(new Uint8Array()), "");
  // field 2 varint 5, then field 1 "a"
  assert.equal(decodeHold(new Uint8Array([0x10, 5, 0x0a, 1, 0x61])), "a");
});

Deno.test("IdleTracker: idle only with no task and no hold, after the period", async () => {
  let fired = 0;
  const t = new IdleTracker(30, () => fired++);
  t.hold("a", 1_000);
  t.setTasks(1);
  t.release("a");
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(fired, 0, "a task keeps the server");
  t.setTasks(0);
  t.hold("b", 1_000);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(fired, 0, "a hold keeps the server");
  t.release("b");
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(fired, 1);
  t.close();
});

Deno.test("IdleTracker: an expired hold lets the server go", async () => {
  let fired = 0;
  const t = new IdleTracker(10, () => fired++);
  t.hold("a", 20);
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(fired, 1);
  t.close();
});
