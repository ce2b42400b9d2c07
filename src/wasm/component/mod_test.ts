import assert from "node:assert/strict";
import { Kind, ShimError } from "../../errdefs/errors.ts";
import { envPairs, prepare, prepareComponent } from "./mod.ts";
import { COMPONENT_TEST, fixture, FIXTURES, guestInit } from "./test_util.ts";

const STDOUT = "hello from a wasi:cli command\n";
const STDERR = "a line on stderr\n";

/** Runs the command fixture with `args` after arg0; returns its exit code and output. */
async function runCommand(args: string[], func?: string) {
  const guest = guestInit(FIXTURES.command, { args: ["/command.wasm", ...args], func });
  try {
    const run = await prepareComponent(guest.init, fixture(FIXTURES.command));
    const code = await run();
    return { code, stdout: guest.stdout(), stderr: guest.stderr() };
  } finally {
    guest.cleanup();
  }
}

Deno.test("envPairs keeps order and drops entries without =", () => {
  assert.deepEqual(envPairs(["A=1", "B", "C=x=y", "=z", "A=2"]), [["A", "1"], ["C", "x=y"], [
    "A",
    "2",
  ]]);
});

Deno.test({
  name: "command: stdout and stderr reach the container's files; exit 0",
  ...COMPONENT_TEST,
  fn: async () => {
    assert.deepEqual(await runCommand([]), { code: 0, stdout: STDOUT, stderr: STDERR });
  },
});

Deno.test({
  name: "command: exit codes are exact (42, 255, 300 → 44)",
  ...COMPONENT_TEST,
  fn: async () => {
    assert.equal((await runCommand(["42"])).code, 42);
    assert.equal((await runCommand(["255"])).code, 255);
    assert.equal((await runCommand(["300"])).code, 44);
    assert.equal((await runCommand(["0"])).code, 0);
  },
});

Deno.test({
  name: "command: a trap exits 137 and says so on the container's stderr",
  ...COMPONENT_TEST,
  fn: async () => {
    const result = await runCommand(["trap"]);
    assert.equal(result.code, 137);
    assert.equal(result.stdout, STDOUT);
    assert.match(
      result.stderr,
      /^a line on stderr\nwasm trap: wasm `unreachable` instruction executed\n/,
    );
  },
});

Deno.test({
  name: "command: path#func calls that export instead of run",
  ...COMPONENT_TEST,
  fn: async () => {
    assert.deepEqual(await runCommand([], "greet"), {
      code: 0,
      stdout: "greetings from an exported function\n",
      stderr: "",
    });
  },
});

Deno.test({
  name: "prepare: an unknown function is refused, naming what there is",
  ...COMPONENT_TEST,
  fn: async () => {
    const guest = guestInit(FIXTURES.command, { func: "nope" });
    try {
      await assert.rejects(prepare(guest.init, fixture(FIXTURES.command)), (err: unknown) => {
        assert.ok(err instanceof ShimError);
        assert.equal(err.kind, Kind.INVALID_ARGUMENT);
        assert.match(
          err.message,
          /component \/command\.wasm has no exported function "nope"; it exports .*greet/,
        );
        return true;
      });
    } finally {
      guest.cleanup();
    }
  },
});

Deno.test("prepare: a malformed component is refused before any transpile", async () => {
  const guest = guestInit(FIXTURES.command);
  try {
    const bytes = fixture(FIXTURES.command).subarray(0, 64);
    await assert.rejects(prepare(guest.init, bytes), /component \/command\.wasm is malformed/);
  } finally {
    guest.cleanup();
  }
});

Deno.test({
  name: "prepare: a missing container root is refused",
  ...COMPONENT_TEST,
  fn: async () => {
    const guest = guestInit(FIXTURES.command);
    try {
      await assert.rejects(
        prepare({ ...guest.init, rootfs: "/nonexistent/rootfs" }, fixture(FIXTURES.command)),
        /container root \/nonexistent\/rootfs/,
      );
    } finally {
      guest.cleanup();
    }
  },
});
