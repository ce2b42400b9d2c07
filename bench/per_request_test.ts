import assert from "node:assert/strict";
import { GcLog } from "./per_request.ts";

// Lines as V8 (Deno 2.9.6) prints them with --trace-gc.
const SCAVENGE = (at: number, before: number, after: number, pause: number) =>
  `[3362:0x56245cbd9000]     ${at} ms: Scavenge ${before} (12.0) -> ${after} (13.0) MB, ` +
  `pooled: 0.0 MB, ${pause} / 0.00 ms (average mu = 1.000, current mu = 1.000) allocation failure; `;
const FULL = "[15548:0x7f6b9c060000]      726 ms: Incremental Mark-Compact 13.1 (20.6) -> " +
  "8.5 (20.6) MB, pooled: 0.0 MB, 3.18 / 0.00 ms (+ 14.9 ms in 135 steps since start of " +
  "marking, biggest step 4.2 ms, walltime since start of marking 35 ms) (average mu = 0.975, " +
  "current mu = 0.975) finalize incremental marking via task; GC in old space requested";

Deno.test("GcLog counts collections, pauses and allocation only while measuring", () => {
  const log = new GcLog();
  log.line(SCAVENGE(10, 9, 2, 0.5));
  log.measuring = true;
  log.line(SCAVENGE(20, 10, 3, 0.75));
  log.line("listening 1234");
  log.line(SCAVENGE(30, 11, 2.5, 1.25));
  log.measuring = false;
  log.line(SCAVENGE(40, 12, 2, 9));
  const t = log.isolates.get("0x56245cbd9000")!;
  assert.equal(t.scavenges, 2);
  assert.equal(t.scavengeTotalMs, 2);
  assert.equal(t.scavengeMaxMs, 1.25);
  // (10 - 2) + (11 - 3): heap use before each collection minus after the one before.
  assert.equal(t.allocatedMb, 16);
  assert.equal(t.full, 0);
});

Deno.test("GcLog reads incremental full collections and their marking steps", () => {
  const log = new GcLog();
  log.measuring = true;
  log.line(FULL);
  const t = log.isolates.get("0x7f6b9c060000")!;
  assert.equal(t.full, 1);
  assert.equal(t.fullMaxMs, 3.18);
  assert.equal(t.markingTotalMs, 14.9);
  assert.equal(t.markingMaxStepMs, 4.2);
  assert.equal(t.lastAfter, 8.5);
});
