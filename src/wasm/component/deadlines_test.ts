import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.ts";

const TIMEOUT = Symbol("timeout");

Deno.test("deadlines resolve in order after their time; cancelled ones never", async () => {
  const deadlines = new Deadlines(30, TIMEOUT);
  const fired: number[] = [];
  const a = deadlines.start();
  const b = deadlines.start();
  await new Promise((r) => setTimeout(r, 10));
  const c = deadlines.start();
  for (const [n, d] of [[1, a], [2, b], [3, c]] as const) {
    d.promise.then((v) => {
      assert.equal(v, TIMEOUT);
      fired.push(n);
    });
  }
  b.cancel();
  assert.equal(deadlines.pending, 2);
  await new Promise((r) => setTimeout(r, 25));
  assert.deepEqual(fired, [1], "a fired at 30 ms, c (started 10 ms later) not yet");
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(fired, [1, 3]);
  assert.equal(deadlines.pending, 0);
});

Deno.test("cancelled deadlines leave the queue as soon as they are at its front", () => {
  let now = 0;
  const deadlines = new Deadlines(60_000, TIMEOUT, () => now);
  const all = Array.from({ length: 5000 }, () => deadlines.start());
  for (const d of all) d.cancel();
  assert.equal(deadlines.pending, 0);
  now = 1;
  const last = deadlines.start();
  assert.equal(deadlines.pending, 1);
  last.cancel();
  deadlines.close();
});

Deno.test("close cancels everything and stops the timer (no leaked timer)", async () => {
  const deadlines = new Deadlines(20, TIMEOUT);
  let fired = false;
  deadlines.start().promise.then(() => fired = true);
  deadlines.close();
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(fired, false);
  assert.equal(deadlines.pending, 0);
});

Deno.test("a timeout must be positive", () => {
  assert.throws(() => new Deadlines(0, TIMEOUT), RangeError);
  assert.throws(() => new Deadlines(Number.NaN, TIMEOUT), RangeError);
});
