import assert from "node:assert/strict";
import { Kind, ShimError } from "../errdefs/errors.ts";
import { Status, transition } from "./state.ts";

Deno.test("the normal lifecycle is allowed", () => {
  assert.equal(transition("t", Status.CREATED, "start"), Status.RUNNING);
  assert.equal(transition("t", Status.RUNNING, "pause"), Status.PAUSED);
  assert.equal(transition("t", Status.PAUSED, "resume"), Status.RUNNING);
  assert.equal(transition("t", Status.RUNNING, "exit"), Status.STOPPED);
  assert.equal(transition("t", Status.STOPPED, "delete"), "gone");
  assert.equal(transition("t", Status.CREATED, "delete"), "gone");
  assert.equal(transition("t", Status.CREATED, "exit"), Status.STOPPED);
  assert.equal(transition("t", Status.PAUSED, "exit"), Status.STOPPED);
});

Deno.test("everything else is FAILED_PRECONDITION with a clear message", () => {
  const bad: [number, Parameters<typeof transition>[2]][] = [
    [Status.RUNNING, "start"],
    [Status.STOPPED, "start"],
    [Status.RUNNING, "delete"],
    [Status.PAUSED, "delete"],
    [Status.STOPPED, "exit"],
    [Status.CREATED, "pause"],
    [Status.RUNNING, "resume"],
  ];
  for (const [from, event] of bad) {
    assert.throws(
      () => transition("t1", from as 1, event),
      (err: unknown) => err instanceof ShimError && err.kind === Kind.FAILED_PRECONDITION,
    );
  }
  assert.throws(
    () => transition("t1", Status.RUNNING, "delete"),
    /cannot delete task t1: it is running: failed precondition/,
  );
});
