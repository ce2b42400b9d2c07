import assert from "node:assert/strict";
import { FlagError, formatFlags, parseFlags } from "./flags.ts";

Deno.test("parseFlags reads containerd 1.6 start argv", () => {
  const f = parseFlags([
    "-namespace",
    "probe",
    "-address",
    "/run/lab/c.sock",
    "-publish-binary",
    "/usr/bin/containerd",
    "-id",
    "demo",
    "-debug",
    "start",
  ]);
  assert.equal(f.namespace, "probe");
  assert.equal(f.address, "/run/lab/c.sock");
  assert.equal(f.publishBinary, "/usr/bin/containerd");
  assert.equal(f.id, "demo");
  assert.equal(f.debug, true);
  assert.equal(f.action, "start");
});

Deno.test("parseFlags accepts -name=value, --name and bool values", () => {
  const f = parseFlags(["--id=x", "-bundle=/b", "-debug=false", "-v", "delete", "extra"]);
  assert.equal(f.id, "x");
  assert.equal(f.bundle, "/b");
  assert.equal(f.debug, false);
  assert.equal(f.version, true);
  assert.equal(f.action, "delete");
  assert.deepEqual(f.rest, ["extra"]);
});

Deno.test("parseFlags: no action means the server; -info alone", () => {
  assert.equal(parseFlags(["-id", "a"]).action, "");
  const info = parseFlags(["-info"]);
  assert.equal(info.info, true);
  assert.equal(info.namespace, "");
});

Deno.test("parseFlags stops at -- and at the first non-flag", () => {
  const f = parseFlags(["-id", "a", "--", "-debug"]);
  assert.equal(f.action, "-debug");
  assert.equal(f.debug, false);
  assert.equal(parseFlags(["start", "-debug"]).debug, false);
});

Deno.test("parseFlags rejects unknown flags and missing values", () => {
  assert.throws(() => parseFlags(["-nope"]), FlagError);
  assert.throws(() => parseFlags(["-id"]), /needs an argument: -id/);
  assert.throws(() => parseFlags(["-debug=maybe"]), /invalid boolean/);
  assert.throws(() => parseFlags(["---x"]), /bad flag syntax/);
});

Deno.test("formatFlags round-trips", () => {
  const argv = ["-namespace", "n", "-address", "/a", "-id", "i", "-debug"];
  assert.deepEqual(formatFlags(parseFlags(argv)), argv);
});
