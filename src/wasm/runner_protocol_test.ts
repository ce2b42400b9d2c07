import assert from "node:assert/strict";
import { parseExitMessage } from "./runner_protocol.ts";

Deno.test("parseExitMessage reads the runner's exit line and nothing else", () => {
  assert.equal(parseExitMessage('{"exit":0}'), 0);
  assert.equal(parseExitMessage('{"exit":137}'), 137);
  for (
    const line of [
      '{"ready":true}',
      '{"exit":-1}',
      '{"exit":256}',
      '{"exit":1.5}',
      '{"exit":',
      "exit 0",
    ]
  ) {
    assert.equal(parseExitMessage(line), undefined, line);
  }
});
