import assert from "node:assert/strict";
import { type Deadline, Deadlines, type Expiring } from "./deadlines.ts";

/** A target that records when it expired. */
function recorder(fired: number[], n: number): Expiring {
  return { expire: () => fired.push(n) };
}

Deno.test("deadlines expire in order after their time; cancelled ones never", async () => {
  const deadlines = new Deadlines(30);
  const fired: number[] = [];
  deadlines.start(recorder(fired, 1));
  const b = deadlines.start(recorder(fired, 2));
  await new Promise((r) => setTimeout(r, 10));
  deadlines.start(recorder(fired, 3));
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
  const deadlines = new Deadlines(60_000, () => now);
  const fired: number[] = [];
  const all = Array.from({ length: 5000 }, (_, i) => deadlines.start(recorder(fired, i)));
  for (const d of all) d.cancel();
  assert.equal(deadlines.pending, 0);
  now = 1;
  const last = deadlines.start(recorder(fired, -1));
  assert.equal(deadlines.pending, 1);
  last.cancel();
  last.cancel();
  assert.equal(deadlines.pending, 0);
  deadlines.close();
  assert.deepEqual(fired, []);
});

Deno.test("a target may start and cancel deadlines when it expires", async () => {
  let now = 0;
  const deadlines = new Deadlines(10, () => now);
  const fired: string[] = [];
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const later: { c?: Deadline } = {};
  deadlines.start({
    expire: () => {
      fired.push("a");
      later.c!.cancel();
      deadlines.start({ expire: () => fired.push("d") });
    },
  });
  now = 5;
  later.c = deadlines.start({ expire: () => fired.push("c") });
  now = 10;
  await sleep(30);
  assert.deepEqual(fired, ["a"], "a expired; c (due at 15) was cancelled by it");
  assert.equal(deadlines.pending, 1);
  now = 100;
  await sleep(30);
  assert.deepEqual(fired, ["a", "d"]);
  assert.equal(deadlines.pending, 0);
});

Deno.test("close cancels everything and stops the timer (no leaked timer)", async () => {
  const deadlines = new Deadlines(20);
  let fired = false;
  deadlines.start({ expire: () => fired = true });
  deadlines.close();
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(fired, false);
  assert.equal(deadlines.pending, 0);
});

Deno.test("a timeout must be positive", () => {
  assert.throws(() => new Deadlines(0), RangeError);
  assert.throws(() => new Deadlines(Number.NaN), RangeError);
});
