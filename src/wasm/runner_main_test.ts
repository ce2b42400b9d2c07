import assert from "node:assert/strict";
import { IDLE_MESSAGE, RUNNER_ACTION } from "./runner_protocol.ts";

const ENTRY = new URL("./runner_main.ts", import.meta.url).pathname;

function run(args: string[]): Promise<Deno.CommandOutput> {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", ENTRY, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
}

Deno.test("runner_main: boots as a runner, says it is idle, exits 1 without a guest", async () => {
  const out = await run([RUNNER_ACTION, "t"]);
  assert.equal(out.code, 1, new TextDecoder().decode(out.stderr));
  assert.equal(new TextDecoder().decode(out.stdout).split("\n")[0], IDLE_MESSAGE);
});

Deno.test("runner_main: refuses a command line without the runner's action word", async () => {
  const out = await run(["t"]);
  assert.equal(out.code, 2);
  assert.match(new TextDecoder().decode(out.stderr), /expected "guest" first, got "t"/);
});
