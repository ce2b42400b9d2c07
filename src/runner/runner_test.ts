import assert from "node:assert/strict";
import fs from "node:fs";
import { type ErrorKind, Kind, ShimError } from "../errdefs/errors.ts";
import { createGuest } from "../task/guest_factory.ts";
import { nextStdinState } from "./guest.ts";
import { guestDenoFlags } from "./permissions.ts";
import {
  DEFAULT_RUNNER_V8_FLAGS,
  RUNNER_MALLOC_ENV,
  RUNNER_V8_FLAGS_ENV,
  runnerV8Flags,
} from "./spawn.ts";
import { exitStatus, signalName, signalNumber } from "../sys/signals.ts";
import { selfCommand } from "../sys/self_exec.ts";
import { IDLE_MESSAGE, RUNNER_ACTION } from "../wasm/runner_protocol.ts";
import type { Guest, GuestConfig } from "../task/guest.ts";
import type { GuestInit } from "../wasm/guest_init.ts";

const TESTDATA = new URL("../wasm/testdata/", import.meta.url).pathname;
/** Set in this process; a guest must never see it. */
const MARKER = "WASM_RUNNER_TEST_MARKER";
/** Modules copied into every test rootfs, under /bin. */
const MODULES = ["probe.wasm", "funcs.wasm", "reactor.wasm", "foreign_import.wasm"];

let sequence = 0;

/** A container bundle: a rootfs with the test guests, FIFOs, and a secret outside it. */
class Bundle {
  readonly dir = Deno.makeTempDirSync({ prefix: "runner_test_" });
  readonly rootfs = `${this.dir}/rootfs`;
  readonly id = `runner-test-${Deno.pid}-${++sequence}`;
  readonly stdin = `${this.dir}/stdin`;
  readonly stdout = `${this.dir}/stdout`;
  readonly stderr = `${this.dir}/stderr`;
  readonly secret = `${this.dir}/secret.txt`;

  constructor() {
    Deno.mkdirSync(`${this.rootfs}/bin`, { recursive: true });
    Deno.mkdirSync(`${this.rootfs}/etc`);
    for (const m of MODULES) Deno.copyFileSync(`${TESTDATA}${m}`, `${this.rootfs}/bin/${m}`);
    Deno.writeTextFileSync(`${this.rootfs}/etc/data.txt`, "data inside the rootfs\n");
    Deno.writeTextFileSync(this.secret, "HOST SECRET\n");
    Deno.symlinkSync("../secret.txt", `${this.rootfs}/climb`);
    Deno.symlinkSync(this.secret, `${this.rootfs}/hostlink`);
    const made = new Deno.Command("mkfifo", { args: [this.stdin, this.stdout, this.stderr] })
      .outputSync();
    assert.ok(made.success, new TextDecoder().decode(made.stderr));
  }

  config(args: string[], more: Partial<GuestConfig> = {}): GuestConfig {
    return {
      id: this.id,
      rootfs: this.rootfs,
      args,
      env: ["PATH=/bin", "GREETING=hi there"],
      cwd: "/",
      stdin: "",
      stdout: this.stdout,
      stderr: this.stderr,
      ...more,
    };
  }

  [Symbol.dispose]() {
    Deno.removeSync(this.dir, { recursive: true });
  }
}

/** Reads a FIFO to its end, with a way to wait for some text mid-way. */
class FifoReader {
  text = "";
  readonly done: Promise<string>;
  #waiters: { needle: string; resolve: () => void }[] = [];
  #path: string;

  constructor(path: string) {
    this.#path = path;
    this.done = (async () => {
      using file = await Deno.open(path, { read: true });
      const decoder = new TextDecoder();
      for await (const chunk of file.readable) {
        this.text += decoder.decode(chunk, { stream: true });
        this.#waiters = this.#waiters.filter((w) => {
          if (this.text.includes(w.needle)) w.resolve();
          return !this.text.includes(w.needle);
        });
      }
      return this.text;
    })();
  }

  /** Resolves once `needle` has been read. */
  waitFor(needle: string): Promise<void> {
    if (this.text.includes(needle)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ needle, resolve }));
  }

  /** Ends a read that is still waiting for a writer (the guest never opened the FIFO). */
  unblock(): void {
    try {
      fs.closeSync(fs.openSync(this.#path, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK));
    } catch {
      // no reader waiting (ENXIO): nothing to do
    }
  }
}

interface Outcome {
  status: number;
  stdout: string;
  stderr: string;
  log: string[];
}

/** Creates, starts and waits for a guest; collects its output and the runner's log. */
async function run(
  bundle: Bundle,
  args: string[],
  more: Partial<GuestConfig> = {},
  during?: (guest: Guest, out: FifoReader) => Promise<void>,
): Promise<Outcome> {
  const out = new FifoReader(bundle.stdout);
  const err = new FifoReader(bundle.stderr);
  const log: string[] = [];
  try {
    const guest = await createGuest(bundle.config(args, more), { log: (l) => log.push(l) });
    await guest.start();
    await during?.(guest, out);
    const status = await guest.exited;
    return { status, stdout: await out.done, stderr: await err.done, log };
  } finally {
    out.unblock();
    err.unblock();
    await Promise.allSettled([out.done, err.done]);
  }
}

/** Pids of live processes whose command line contains `word`. */
function processesWith(word: string): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`).split("\0");
      if (argv.includes(word)) pids.push(Number(entry.name));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** Asserts that createGuest rejects with `code` and `pattern`, leaving no runner. */
async function assertCreateFails(
  bundle: Bundle,
  cfg: GuestConfig,
  code: ErrorKind,
  pattern: RegExp,
  options: Parameters<typeof createGuest>[1] = {},
): Promise<void> {
  await assert.rejects(createGuest(cfg, options), (err: unknown) => {
    assert.ok(err instanceof ShimError, `expected ShimError, got ${err}`);
    assert.equal(err.kind, code, err.message);
    assert.match(err.message, pattern);
    return true;
  });
  assert.deepEqual(processesWith(bundle.id), [], "a guest runner was left behind");
}

Deno.test("hello: stdout and stderr reach their FIFOs, exit 0", async () => {
  using bundle = new Bundle();
  const result = await run(bundle, ["probe.wasm"]);
  assert.equal(result.status, 0);
  assert.equal(result.stdout, "hello from wasm\n");
  assert.equal(result.stderr, "hello on stderr\n");
  assert.deepEqual(result.log, [], "the runner logged something");
});

Deno.test("with debug, the runner's own debug lines come at debug level, named after it", async () => {
  using bundle = new Bundle();
  const out = new FifoReader(bundle.stdout);
  const err = new FifoReader(bundle.stderr);
  const lines: [string, string | undefined][] = [];
  try {
    const guest = await createGuest(bundle.config(["probe.wasm"], { debug: true }), {
      log: (line, level) => lines.push([line, level]),
    });
    await guest.start();
    assert.equal(await guest.exited, 0);
    await out.done;
  } finally {
    out.unblock();
    err.unblock();
    await Promise.allSettled([out.done, err.done]);
  }
  const debug = lines.filter(([, level]) => level === "debug").map(([line]) => line);
  assert.deepEqual(lines.filter(([, level]) => level !== "debug"), [], "only debug lines");
  const name = `guest ${bundle.id} \\(runner pid \\d+\\)`;
  assert.match(debug[0], new RegExp(`^${name}: prepared /bin/probe.wasm in [\\d.]+ ms \\(rootfs`));
  assert.match(debug[1], new RegExp(`^${name}: started$`));
  assert.match(debug[2], new RegExp(`^${name}: guest ended with code 0 after [\\d.]+ ms$`));
});

Deno.test("argv is process.args, arg0 included with its #func", async () => {
  using bundle = new Bundle();
  const result = await run(bundle, ["/bin/probe.wasm#_start", "args", "two words", "#x", ""]);
  assert.equal(result.status, 0);
  assert.equal(
    result.stdout,
    "argv[0]=/bin/probe.wasm#_start\nargv[1]=args\nargv[2]=two words\nargv[3]=#x\nargv[4]=\n",
  );
});

Deno.test("the guest sees only the spec's env, never the shim's", async () => {
  using bundle = new Bundle();
  Deno.env.set(MARKER, "leaked");
  try {
    const result = await run(bundle, ["probe.wasm", "env"]);
    assert.equal(result.status, 0);
    assert.equal(result.stdout, "PATH=/bin\nGREETING=hi there\n");
    assert.ok(!result.stdout.includes(MARKER));
  } finally {
    Deno.env.delete(MARKER);
  }
});

Deno.test("the guest reads files of its rootfs, by absolute and relative path", async () => {
  using bundle = new Bundle();
  for (const path of ["/etc/data.txt", "etc/data.txt", "./etc/../etc/data.txt"]) {
    const result = await run(bundle, ["probe.wasm", "cat", path]);
    assert.equal(result.status, 0, result.stderr);
    assert.equal(result.stdout, "data inside the rootfs\n");
  }
});

Deno.test("the guest cannot leave its rootfs through .. or symlinks", async () => {
  using bundle = new Bundle();
  const tries = ["../secret.txt", "/../secret.txt", "/climb", "/hostlink", bundle.secret];
  for (const path of tries) {
    const result = await run(bundle, ["probe.wasm", "cat", path]);
    assert.equal(result.status, 1, `${path}: ${result.stdout}`);
    assert.ok(!result.stdout.includes("HOST SECRET"), `${path} leaked the host file`);
    assert.match(result.stderr, new RegExp(`^${path.replace(/[.]/g, "\\.")}: `));
  }
});

Deno.test("stdin comes from its FIFO and ends at CloseIO, with nothing lost", async () => {
  using bundle = new Bundle();
  const result = await run(bundle, ["probe.wasm", "stdin"], { stdin: bundle.stdin }, async (g) => {
    using writer = await Deno.open(bundle.stdin, { write: true });
    await writer.write(new TextEncoder().encode("ping\npong\n"));
    // As ctr does: its stdin reached EOF, it closed its end and sends CloseIO at once.
    writer.close();
    g.closeStdin();
  });
  assert.equal(result.status, 0);
  assert.equal(result.stdout, "ping\npong\n");
});

Deno.test("no stdio paths means /dev/null", async () => {
  using bundle = new Bundle();
  const guest = await createGuest(
    bundle.config(["probe.wasm", "stdin"], { stdin: "", stdout: "", stderr: "" }),
  );
  await guest.start();
  assert.equal(await guest.exited, 0);
});

Deno.test("the guest's exit code is the task's", async () => {
  using bundle = new Bundle();
  assert.equal((await run(bundle, ["probe.wasm", "exit", "42"])).status, 42);
  assert.equal((await run(bundle, ["probe.wasm", "exit", "255"])).status, 255);
});

Deno.test("a trap exits 137 with the message on the container's stderr", async () => {
  using bundle = new Bundle();
  const result = await run(bundle, ["probe.wasm", "trap"]);
  assert.equal(result.status, 137);
  assert.equal(result.stdout, "before trap\n");
  assert.match(result.stderr, /^wasm trap: unreachable\n {4}at .*wasm-function/);
  assert.match(result.log.join("\n"), /wasm trap: unreachable/);
});

Deno.test("path#func calls that export of a command", async () => {
  using bundle = new Bundle();
  const hello = await run(bundle, ["funcs.wasm#hello"]);
  assert.equal(hello.status, 0);
  assert.equal(hello.stdout, "hello from func\n");
  const start = await run(bundle, ["funcs.wasm"]);
  assert.equal(start.stdout, "hello from _start\n");
  assert.equal((await run(bundle, ["funcs.wasm#exit3"])).status, 3);
  const trap = await run(bundle, ["funcs.wasm#trap"]);
  assert.equal(trap.status, 137);
  assert.match(trap.stderr, /^wasm trap: unreachable\n/);
  const add = await run(bundle, ["funcs.wasm#add"]);
  assert.equal(add.status, 137);
  assert.match(add.stderr, /exported function "add" takes 2 parameter\(s\)/);
});

Deno.test("path#func initializes a reactor before calling the export", async () => {
  using bundle = new Bundle();
  const result = await run(bundle, ["reactor.wasm#greet"]);
  assert.equal(result.status, 0);
  assert.equal(result.stdout, "initialized\n");
});

Deno.test("SIGKILL ends a looping guest within 1 s: 137", async () => {
  using bundle = new Bundle();
  let elapsed = 0;
  const result = await run(bundle, ["probe.wasm", "loop"], {}, async (guest, out) => {
    await out.waitFor("looping\n");
    const t0 = performance.now();
    guest.kill(9);
    await guest.exited;
    elapsed = performance.now() - t0;
  });
  assert.equal(result.status, 137);
  assert.ok(elapsed < 1000, `took ${elapsed} ms`);
});

Deno.test("SIGTERM ends a sleeping guest: 143", async () => {
  using bundle = new Bundle();
  const result = await run(bundle, ["probe.wasm", "sleep", "30"], {}, async (guest, out) => {
    await out.waitFor("sleeping\n");
    guest.kill(15);
  });
  assert.equal(result.status, 143);
});

Deno.test("a guest can be signalled before it starts", async () => {
  using bundle = new Bundle();
  const guest = await createGuest(bundle.config(["probe.wasm"]));
  assert.deepEqual(processesWith(bundle.id), [guest.pid]);
  guest.kill(2);
  assert.equal(await guest.exited, 130);
  guest.kill(9); // after exit: no effect, no error
  await assert.rejects(guest.start(), /is gone/);
  await assert.rejects(guest.start(), /already started/);
});

Deno.test("the runner refuses an entrypoint swapped for a symlink out of the rootfs", async () => {
  using bundle = new Bundle();
  // As if the rootfs changed after the server resolved /bin/probe.wasm.
  Deno.copyFileSync(`${TESTDATA}probe.wasm`, `${bundle.dir}/outside.wasm`);
  Deno.removeSync(`${bundle.rootfs}/bin/probe.wasm`);
  Deno.symlinkSync(`${bundle.dir}/outside.wasm`, `${bundle.rootfs}/bin/probe.wasm`);
  const init: GuestInit = {
    ...bundle.config(["probe.wasm"]),
    hostPath: `${bundle.rootfs}/bin/probe.wasm`,
    guestPath: "/bin/probe.wasm",
    func: "_start",
  };
  const { cmd, args } = selfCommand([RUNNER_ACTION, bundle.id], ["-A"]);
  const child = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped" }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(init) + "\n"));
  await writer.close();
  const { code, stdout } = await child.output();
  assert.equal(code, 1);
  const [idle, reply] = new TextDecoder().decode(stdout).trim().split("\n");
  assert.equal(idle, IDLE_MESSAGE);
  assert.deepEqual(JSON.parse(reply), {
    error: "entrypoint /bin/probe.wasm now leads outside the container's root: invalid argument",
    kind: Kind.INVALID_ARGUMENT,
  });
});

Deno.test("a missing entrypoint fails Create, naming where it looked", async () => {
  using bundle = new Bundle();
  await assertCreateFails(
    bundle,
    bundle.config(["nope.wasm"], { cwd: "/etc" }),
    Kind.NOT_FOUND,
    /^entrypoint "nope\.wasm" in the container's root .*\(searched PATH and cwd: \/bin\/nope\.wasm, \/etc\/nope\.wasm\): not found$/,
  );
});

Deno.test("an entrypoint outside the rootfs fails Create", async () => {
  using bundle = new Bundle();
  Deno.copyFileSync(`${TESTDATA}probe.wasm`, `${bundle.dir}/outside.wasm`);
  Deno.symlinkSync("../../outside.wasm", `${bundle.rootfs}/bin/escape.wasm`);
  for (const arg0 of ["../outside.wasm", "/bin/escape.wasm"]) {
    await assertCreateFails(
      bundle,
      bundle.config([arg0]),
      Kind.INVALID_ARGUMENT,
      /leads outside the container's root/,
    );
  }
});

Deno.test("a file that is not wasm fails Create", async () => {
  using bundle = new Bundle();
  Deno.writeTextFileSync(`${bundle.rootfs}/bin/script.wasm`, "#!/bin/sh\necho hi\n");
  await assertCreateFails(
    bundle,
    bundle.config(["script.wasm"]),
    Kind.INVALID_ARGUMENT,
    /^\/bin\/script\.wasm is not a WebAssembly module or component \(starts with 23 21 2f 62 69 6e 2f 73 "#!\/bin\/s"\): invalid argument$/,
  );
});

Deno.test("a module that does not compile fails Create", async () => {
  using bundle = new Bundle();
  const broken = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0x01, 0xff]);
  Deno.writeFileSync(`${bundle.rootfs}/bin/broken.wasm`, broken);
  await assertCreateFails(
    bundle,
    bundle.config(["broken.wasm"]),
    Kind.INVALID_ARGUMENT,
    /^module \/bin\/broken\.wasm does not compile: /,
  );
});

Deno.test("a missing export fails Create, listing the exports", async () => {
  using bundle = new Bundle();
  await assertCreateFails(
    bundle,
    bundle.config(["funcs.wasm#nope"]),
    Kind.INVALID_ARGUMENT,
    /^module \/bin\/funcs\.wasm has no exported function "nope"; it exports "_start", "hello", /,
  );
  await assertCreateFails(
    bundle,
    bundle.config(["reactor.wasm"]),
    Kind.INVALID_ARGUMENT,
    /has no exported function "_start"; it exports "_initialize", "greet"/,
  );
});

Deno.test("an import the shim does not provide fails Create", async () => {
  using bundle = new Bundle();
  await assertCreateFails(
    bundle,
    bundle.config(["foreign_import.wasm"]),
    Kind.INVALID_ARGUMENT,
    /imports "env"\."host_log" \(function\), which this shim does not provide/,
  );
});

Deno.test("a runner that is not ready in time is killed and Create fails", async () => {
  using bundle = new Bundle();
  await assertCreateFails(
    bundle,
    bundle.config(["probe.wasm"]),
    Kind.DEADLINE_EXCEEDED,
    /was not ready after 0\.001 s/,
    { readyTimeoutMs: 1 },
  );
});

Deno.test("a runner that dies before ready fails Create with its stderr", async () => {
  using bundle = new Bundle();
  await assertCreateFails(
    bundle,
    bundle.config(["probe.wasm"], { netns: `${bundle.dir}/no-such-netns` }),
    Kind.INTERNAL,
    /its runner exited with code 1 before it was ready; its stderr ended with: nsenter: .*no-such-netns/,
  );
});

Deno.test({
  name: "netns: the runner joins the network namespace",
  ignore: Deno.uid() !== 0,
  async fn() {
    using bundle = new Bundle();
    const name = `runner-test-${Deno.pid}`;
    const ip = (...args: string[]) => new Deno.Command("ip", { args }).outputSync();
    if (!ip("netns", "add", name).success) return; // no iproute2 or no privileges
    try {
      const netns = `/run/netns/${name}`;
      const guest = await createGuest(bundle.config(["probe.wasm"], { stdout: "", netns }));
      const inode = (path: string) => Deno.statSync(path).ino;
      assert.equal(inode(`/proc/${guest.pid}/ns/net`), inode(netns));
      assert.notEqual(inode(`/proc/${guest.pid}/ns/net`), inode("/proc/self/ns/net"));
      await guest.start();
      assert.equal(await guest.exited, 0);
    } finally {
      ip("netns", "delete", name);
    }
  },
});

Deno.test("the runner's command line carries the action and the container id; its environment, the malloc settings", async () => {
  using bundle = new Bundle();
  const guest = await createGuest(bundle.config(["probe.wasm"], { stdout: "", stderr: "" }));
  const argv = Deno.readTextFileSync(`/proc/${guest.pid}/cmdline`).split("\0");
  assert.equal(argv[argv.indexOf(RUNNER_ACTION) + 1], bundle.id);
  assert.ok(argv.includes(`--allow-read=${bundle.rootfs},/dev/null`), argv.join(" "));
  assert.ok(!argv.includes("-A") && !argv.some((a) => a.startsWith("--allow-env")));
  const environ = Deno.readTextFileSync(`/proc/${guest.pid}/environ`).split("\0");
  for (const [key, value] of Object.entries(RUNNER_MALLOC_ENV)) {
    assert.ok(environ.includes(`${key}=${value}`), environ.join(" "));
  }
  guest.kill(9);
  assert.equal(await guest.exited, 137);
});

Deno.test("guestDenoFlags grants the rootfs and stdio, the cache to components, net on demand", () => {
  const base = { rootfs: "/b/rootfs", stdio: ["", "/f/out", "/f/err"] };
  const nodeModules = new URL("../../node_modules", import.meta.url).pathname;
  const src = new URL("../", import.meta.url).pathname;
  assert.deepEqual(guestDenoFlags({ ...base, kind: "module", cacheDir: "/cache" }), [
    "--allow-read=/b/rootfs,/dev/null,/f/out,/f/err",
    "--allow-write=/b/rootfs,/dev/null,/f/out,/f/err",
    "--allow-ffi",
  ]);
  assert.deepEqual(guestDenoFlags({ ...base, kind: "component", cacheDir: "/cache", net: true }), [
    `--allow-read=/b/rootfs,/dev/null,/f/out,/f/err,/cache,${nodeModules},${src}`,
    "--allow-write=/b/rootfs,/dev/null,/f/out,/f/err,/cache",
    "--allow-env",
    "--allow-ffi",
    "--allow-net",
  ]);
  assert.deepEqual(
    guestDenoFlags({ ...base, kind: "component", net: ["0.0.0.0:8080"] }).at(-1),
    "--allow-net=0.0.0.0:8080",
  );
  assert.throws(
    () => guestDenoFlags({ ...base, rootfs: "/a,b", kind: "module" }),
    /\/a,b: paths containing "," cannot be granted/,
  );
});

Deno.test("signal numbers map to names and back, exit status is 128+N", () => {
  assert.equal(signalName(9), "SIGKILL");
  assert.equal(signalName(15), "SIGTERM");
  assert.equal(signalName(10), "SIGUSR1");
  assert.equal(signalNumber("SIGUSR2"), 12);
  assert.throws(() => signalName(64), /unknown signal 64/);
  assert.equal(exitStatus({ success: false, code: 143, signal: "SIGTERM" }), 143);
  assert.equal(exitStatus({ success: false, code: 3, signal: null }), 3);
});

/** Median of a list of numbers. */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

Deno.test("timing: createGuest → ready, start → exit (hello, median of 10)", async () => {
  using bundle = new Bundle();
  const ready: number[] = [];
  const running: number[] = [];
  for (let i = 0; i < 10; i++) {
    const out = new FifoReader(bundle.stdout);
    const err = new FifoReader(bundle.stderr);
    const t0 = performance.now();
    const guest = await createGuest(bundle.config(["probe.wasm"]));
    const t1 = performance.now();
    await guest.start();
    assert.equal(await guest.exited, 0);
    const t2 = performance.now();
    await Promise.all([out.done, err.done]);
    ready.push(t1 - t0);
    running.push(t2 - t1);
  }
  console.log(
    `createGuest→ready median ${median(ready).toFixed(1)} ms ` +
      `(min ${Math.min(...ready).toFixed(1)}, max ${Math.max(...ready).toFixed(1)}); ` +
      `start→exit median ${median(running).toFixed(1)} ms ` +
      `(min ${Math.min(...running).toFixed(1)}, max ${Math.max(...running).toFixed(1)})`,
  );
});

Deno.test("runnerV8Flags: the default, a node's own list, none, and a bad value refused", () => {
  assert.deepEqual(runnerV8Flags(undefined), [`--v8-flags=${DEFAULT_RUNNER_V8_FLAGS}`]);
  assert.deepEqual(runnerV8Flags(" --max-semi-space-size=8,--no-parallel-scavenge "), [
    "--v8-flags=--max-semi-space-size=8,--no-parallel-scavenge",
  ]);
  assert.deepEqual(runnerV8Flags(""), []);
  for (const bad of ["--a b", "-x", "--a=1;rm", "--a,,--b", "--expose-gc --allow-all"]) {
    assert.throws(() => runnerV8Flags(bad), new RegExp(`^Error: ${RUNNER_V8_FLAGS_ENV}=`));
  }
});

Deno.test("stdin states: CloseIO drains a started pump, an exit abandons it, closed is final", () => {
  assert.equal(nextStdinState("unstarted", "start"), "pumping");
  // Before Start there is nothing to drain: CloseIO or an exit closes at once.
  assert.equal(nextStdinState("unstarted", "closeIO"), "closed");
  assert.equal(nextStdinState("unstarted", "exit"), "closed");
  assert.equal(nextStdinState("pumping", "closeIO"), "draining");
  assert.equal(nextStdinState("pumping", "exit"), "abandoned");
  assert.equal(nextStdinState("draining", "closeIO"), "draining");
  assert.equal(nextStdinState("draining", "exit"), "abandoned");
  assert.equal(nextStdinState("abandoned", "closeIO"), "abandoned");
  assert.equal(nextStdinState("pumping", "end"), "closed");
  assert.equal(nextStdinState("draining", "end"), "closed");
  assert.equal(nextStdinState("abandoned", "end"), "closed");
  for (const event of ["start", "closeIO", "exit", "end"] as const) {
    assert.equal(nextStdinState("closed", event), "closed");
  }
});
