import assert from "node:assert/strict";
import { parseKeyedFile, parseUint, UINT64_MAX } from "./control.ts";

Deno.test("keyed and single-value files", () => {
  assert.deepEqual(
    [...parseKeyedFile("oom_kill_disable 0\nunder_oom 1\noom_kill 12\nbad x\n")],
    [["oom_kill_disable", 0n], ["under_oom", 1n], ["oom_kill", 12n]],
  );
  assert.equal(parseUint("max\n"), UINT64_MAX);
  assert.equal(parseUint("9223372036854771712\n"), 9223372036854771712n);
  assert.equal(parseUint("-1"), undefined);
  assert.equal(parseUint(undefined), undefined);
});
