/**
 * End to end: faults around a task's stdio and the component cache, under a private
 * containerd whose `WASMTIME_SHIM_CACHE_DIR` is a temp dir of this file.
 *
 * - stdout: a flood read to its end; a flood nobody reads (a detached task); a flood
 *   whose reader (`ctr run`) is killed with SIGKILL;
 * - stdin: a guest that exits without reading while ctr writes a lot (or never closes
 *   it), and one that closes its stdin after a first read;
 * - the transpile cache: corrupt entries (a flipped byte in a core module and in the
 *   manifest, a truncated and an empty file), a read-only cache (a `ro` bind mount,
 *   with and without a corrupt entry in it), and a cache path under a regular file.
 *
 * Each fault must leave the shared server serving (the same server: it did not die and
 * come back), tasks that can be killed (137) and deleted, and nothing behind at the
 * end: mounts, sockets, processes, slots, cgroups, FIFOs.
 */

import assert from "node:assert/strict";
import { decodeEntry } from "../../src/wasm/component/cache.ts";
import { SHARED_GROUP } from "../../src/shim/group.ts";
import { socketPath } from "../../src/shim/socket_path.ts";
import { ok, sleep, taskList, waitFor, waitStatus } from "./ctr_util.ts";
import { type Containerd, CTR_BIN, type Leftovers, TEST_NAMESPACE } from "./harness.ts";
import { fixture } from "./shim_install.ts";
import { encodeU32 } from "../../src/wasm/component/leb128.ts";
import { startSuite } from "./suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const TESTDATA = new URL("../../src/wasm/component/testdata/", import.meta.url).pathname;
/** Prefix of every container id here (to tell our cgroups from other suites'). */
const PREFIX = "flt-";
/** What `command.wasm` prints; also a string inside its core module. */
const HELLO = "hello from a wasi:cli command\n";
const opts = { sanitizeOps: false, sanitizeResources: false };
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------
// A guest that reads a little of its stdin, closes it, then reads again: it exits
// with 100 × fd_close's errno + the second fd_read's errno (expected: 0 and EBADF, 8).

function section(id: number, bytes: number[]): number[] {
  return [id, ...encodeU32(bytes.length), ...bytes];
}

function name(s: string): number[] {
  return [...encodeU32(s.length), ...encoder.encode(s)];
}

/** The stdin-closing guest, as a WASI preview1 module. */
function stdinCloser(): Uint8Array {
  const I32 = 0x7f;
  const wasi = "wasi_snapshot_preview1";
  const call = (f: number) => [0x10, f];
  const read = [0x41, 0, 0x41, 0, 0x41, 1, 0x41, 8, ...call(1)]; // fd_read(0, iov@0, 1, @8)
  const body = [
    1, // one local declaration:
    2,
    I32, // r1, r2
    // iovec at 0: 16 bytes at 16
    ...[0x41, 0, 0x41, 16, 0x36, 2, 0],
    ...[0x41, 4, 0x41, 16, 0x36, 2, 0],
    ...read,
    0x1a, // drop the first read's errno
    ...[0x41, 0, ...call(0), 0x21, 0], // r1 = fd_close(0)
    ...read,
    ...[0x21, 1], // r2 = fd_read(0, …)
    ...[0x20, 0, 0x41, 0xe4, 0x00, 0x6c, 0x20, 1, 0x6a, ...call(2)], // proc_exit(r1*100+r2)
    0x0b,
  ];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    ...section(1, [
      4,
      ...[0x60, 1, I32, 1, I32], // 0: (i32) -> i32
      ...[0x60, 4, I32, I32, I32, I32, 1, I32], // 1: (i32 i32 i32 i32) -> i32
      ...[0x60, 1, I32, 0], // 2: (i32) -> ()
      ...[0x60, 0, 0], // 3: () -> ()
    ]),
    ...section(2, [
      3,
      ...[...name(wasi), ...name("fd_close"), 0, 0],
      ...[...name(wasi), ...name("fd_read"), 0, 1],
      ...[...name(wasi), ...name("proc_exit"), 0, 2],
    ]),
    ...section(3, [1, 3]),
    ...section(5, [1, 0, 1]),
    ...section(7, [2, ...name("memory"), 2, 0, ...name("_start"), 0, 3]),
    ...section(10, [1, ...encodeU32(body.length), ...body]),
  ]);
}

// ---------------------------------------------------------------------------------

interface Env {
  cd: Containerd;
  image: string;
  tmp: string;
  /** `WASMTIME_SHIM_CACHE_DIR`: `<tmp>/c/cache` (so that `<tmp>/c` can become a file). */
  cache: string;
}

let env: Promise<Env> | undefined;

function setup(): Promise<Env> {
  env ??= (async () => {
    const suite = await startSuite({
      name: "faults",
      config: { entrypoint: ["/probe.wasm"] },
      files: [
        { path: "/probe.wasm", hostPath: fixture("probe.wasm") },
        { path: "/closer.wasm", data: stdinCloser() },
        { path: "/command.wasm", hostPath: `${TESTDATA}command.wasm` },
      ],
      containerd: (tmp) => ({ env: { WASMTIME_SHIM_CACHE_DIR: `${tmp}/c/cache` } }),
    });
    const cache = `${suite.tmp}/c/cache`;
    await Deno.mkdir(cache, { recursive: true });
    return { ...suite, cache };
  })();
  return env;
}

/** Every container id used here. */
const ids: string[] = [];
function nextId(what: string): string {
  ids.push(`${PREFIX}${what}-${ids.length + 1}`);
  return ids[ids.length - 1];
}

/** `ctr run --rm` of `args` in a fresh container; never throws on exit status. */
async function run(args: string[], stdin: Uint8Array | string = "", timeoutMs = 60_000) {
  const { cd, image } = await setup();
  return await cd.ctr(["run", "--rm", "--runtime", RUNTIME, image, nextId("run"), ...args], {
    stdin,
    timeoutMs,
  });
}

/** Starts `ctr run --rm` as a child of ours, with piped stdio, for the tests to break. */
async function spawnRun(id: string, args: string[]): Promise<Deno.ChildProcess> {
  const { cd, image } = await setup();
  return new Deno.Command(CTR_BIN, {
    args: [
      ...["--address", cd.address, "--namespace", TEST_NAMESPACE, "run", "--rm"],
      ...["--fifo-dir", cd.fifoDir, "--runc-root", cd.runcRoot, "--runtime", RUNTIME],
      image,
      id,
      ...args,
    ],
    env: { CONTAINERD_SNAPSHOTTER: cd.snapshotter },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** The shim servers of this containerd (guest runners excluded). */
async function servers(cd: Containerd): Promise<number[]> {
  return (await cd.leftovers()).processes.filter((p) => !p.cmdline.includes("guest"))
    .map((p) => p.pid);
}

/** The state of the `/proc/<pid>/stat` of a task's runner ("S" sleeping, "R" running…). */
async function procState(pid: number): Promise<string> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[0];
}

/** A hello run while a fault is in progress: the server must run it, output and exit code. */
async function helloWorks(): Promise<void> {
  const r = await run(["/probe.wasm", "hello"], "", 30_000);
  assert.equal(r.code, 0, `hello during the fault: ${r.stderr}`);
  assert.equal(r.stdout, "hello from wasm\n", `hello's output during the fault`);
}

/** SIGKILLs a running task, then deletes it and its container: it exited 137. */
async function killAndDelete(cd: Containerd, id: string): Promise<void> {
  ok(await cd.ctr(["task", "kill", "-s", "SIGKILL", id]), `kill ${id}`);
  await waitStatus(cd, id, "STOPPED", 20_000);
  const del = await cd.ctr(["task", "delete", id]);
  ok(del, `task delete ${id}`);
  assert.match(del.stdout + del.stderr, /exit code 137\b/, `delete ${id}`);
  ok(await cd.ctr(["container", "delete", id]), `container delete ${id}`);
}

/** The flood's expected output: `lines` lines "%08d " + 90 zeros. */
function checkFlood(out: string, lines: number): void {
  assert.equal(out.length, lines * 100, "flood output length");
  const zeros = "0".repeat(90);
  for (let i = 0; i < lines; i++) {
    const line = out.slice(i * 100, i * 100 + 100);
    if (line !== `${String(i).padStart(8, "0")} ${zeros}\n`) {
      assert.fail(`flood line ${i} is ${JSON.stringify(line)}`);
    }
  }
}

// ---------------------------------------------------------------------------------
// stdout

Deno.test({
  name: "faults: a 30 MB stdout flood read by ctr run arrives whole, exit 0",
  ...opts,
  async fn() {
    const lines = 300_000;
    const r = await run(["/probe.wasm", "flood", String(lines)]);
    assert.equal(r.code, 0, r.stderr);
    checkFlood(r.stdout, lines);
  },
});

Deno.test({
  name: "faults: a detached task flooding a stdout nobody reads; others run; SIGKILL → 137",
  ...opts,
  async fn() {
    const { cd, image } = await setup();
    const id = nextId("unread");
    const started = await cd.ctr([
      ...["run", "-d", "--runtime", RUNTIME, image, id],
      ...["/probe.wasm", "flood", "1000000000"],
    ]);
    assert.equal(started.code, 0, started.stderr);
    // ctr -d is gone: the FIFO fills and the guest blocks in its write.
    const pid = await waitStatus(cd, id, "RUNNING");
    await waitFor("the flooding guest to block", async () => (await procState(pid)) === "S");
    const [server] = await servers(cd);
    assert.ok(server, "a server runs");
    await Promise.all([helloWorks(), helloWorks()]);
    assert.equal((await taskList(cd)).get(id)?.status, "RUNNING", "the blocked task still runs");
    await killAndDelete(cd, id);
    await helloWorks();
    assert.ok((await servers(cd)).includes(server), "the same server kept serving");
  },
});

Deno.test({
  name: "faults: ctr run killed (SIGKILL) while its guest floods: the task is killed and deleted",
  ...opts,
  async fn() {
    const { cd } = await setup();
    const id = nextId("reader");
    const ctr = await spawnRun(id, ["/probe.wasm", "flood", "1000000000"]);
    const stderr = ctr.stderr.text();
    let got = 0;
    const reader = ctr.stdout.getReader();
    while (got < 4 << 20) {
      const chunk = await reader.read();
      if (chunk.done) assert.fail(`ctr's stdout ended early: ${await stderr}`);
      got += chunk.value.length;
    }
    const [server] = await servers(cd);
    ctr.kill("SIGKILL");
    assert.equal((await ctr.status).signal, "SIGKILL");
    reader.releaseLock();
    await ctr.stdout.cancel().catch(() => {});
    await ctr.stdin.close().catch(() => {});
    await stderr;
    // The reader is gone; the guest now blocks on its full FIFO and keeps running.
    const pid = await waitStatus(cd, id, "RUNNING");
    await waitFor("the flooding guest to block", async () => (await procState(pid)) === "S");
    await helloWorks();
    await killAndDelete(cd, id);
    await helloWorks();
    assert.ok((await servers(cd)).includes(server), "the same server kept serving");
  },
});

// ---------------------------------------------------------------------------------
// stdin

Deno.test({
  name: "faults: guests that never read 20 MB of stdin exit with their own code",
  ...opts,
  async fn() {
    const big = new Uint8Array(20 << 20).fill(0x61);
    const exit = await run(["/probe.wasm", "exit", "3"], big, 30_000);
    assert.equal(exit.code, 3, exit.stderr);
    const hello = await run(["/probe.wasm", "hello"], big, 30_000);
    assert.equal(hello.code, 0, hello.stderr);
    // Still asleep while ctr's writes fill the FIFO and the runner's stdin pipe.
    const sleep = await run(["/probe.wasm", "sleep", "1"], big, 30_000);
    assert.equal(sleep.code, 0, sleep.stderr);
    // …and one that reads it all gets every byte.
    const echo = await run(["/probe.wasm", "stdin"], big.subarray(0, 5 << 20), 30_000);
    assert.equal(echo.code, 0, echo.stderr);
    assert.equal(echo.stdout.length, (5 << 20) + "stdin closed\n".length);
  },
});

Deno.test({
  name: "faults: a guest exits while ctr's stdin stays open and keeps being written",
  ...opts,
  async fn() {
    const ctr = await spawnRun(nextId("open-stdin"), ["/probe.wasm", "exit", "5"]);
    const out = Promise.all([ctr.stdout.text(), ctr.stderr.text()]);
    const writer = ctr.stdin.getWriter();
    // Write until ctr is gone; never close.
    const feeding = (async () => {
      const chunk = new Uint8Array(1 << 20);
      try {
        for (let i = 0; i < 200; i++) await writer.write(chunk);
      } catch { /* ctr exited */ }
    })();
    const timer = setTimeout(() => {
      try {
        ctr.kill("SIGKILL");
      } catch { /* exited meanwhile */ }
    }, 30_000);
    const status = await ctr.status;
    clearTimeout(timer);
    await feeding;
    await writer.close().catch(() => {});
    const [, stderr] = await out;
    assert.equal(status.code, 5, `ctr run: ${status.signal ?? ""} ${stderr}`);
  },
});

Deno.test({
  name: "faults: a guest that closes its stdin early (fd_close(0)) gets EBADF, ctr ends",
  ...opts,
  async fn() {
    const r = await run(["/closer.wasm"], new Uint8Array(10 << 20).fill(0x62), 30_000);
    // 100 × fd_close's errno (0) + the read after it (EBADF = 8).
    assert.equal(r.code, 8, r.stderr);
    await helloWorks();
  },
});

/** Threads of `pid` blocked in a pipe (FIFO) read: each holds one of Deno's 32 blocking threads. */
async function pipeReads(pid: number): Promise<number> {
  let n = 0;
  for (const t of await Array.fromAsync(Deno.readDir(`/proc/${pid}/task`))) {
    const wchan = await Deno.readTextFile(`/proc/${pid}/task/${t.name}/wchan`).catch(() => "");
    if (wchan.includes("pipe_read")) n++;
  }
  return n;
}

/** `pid`'s open fds on ctr's FIFOs that are gone (their containers were deleted). */
async function deletedFifos(cd: Containerd, pid: number): Promise<string[]> {
  const out: string[] = [];
  for (const fd of await Array.fromAsync(Deno.readDir(`/proc/${pid}/fd`))) {
    const target = await Deno.readLink(`/proc/${pid}/fd/${fd.name}`).catch(() => "");
    if (target.startsWith(`${cd.fifoDir}/`) && target.endsWith(" (deleted)")) out.push(target);
  }
  return out;
}

Deno.test({
  name: "faults: guests that exit as their stdin FIFO opens: the server keeps no FIFO, no read",
  ...opts,
  async fn() {
    // The server opens a task's stdin FIFO at Start; a guest that exits meanwhile once
    // left that FIFO open with a read that nothing would end, and after 32 of them (Deno's
    // blocking threads) the server hung. Short guests, 4 at a time, hit that window.
    const { cd, image } = await setup();
    const sentinel = nextId("sentinel");
    ok(
      await cd.ctr([
        ...["run", "-d", "--runtime", RUNTIME, image, sentinel],
        ...["/probe.wasm", "sleep", "600"],
      ]),
      "start the sentinel",
    );
    try {
      await waitStatus(cd, sentinel, "RUNNING");
      const [server] = await servers(cd);
      const worker = async () => {
        for (let i = 0; i < 12; i++) {
          const r = await run(["/probe.wasm", "exit", "0"], "", 30_000);
          assert.equal(r.code, 0, r.stderr);
        }
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
      // Only the sentinel's stdin is being read; no FIFO of a deleted container is open.
      await waitFor("the finished tasks' FIFOs to be closed", async () => {
        return (await deletedFifos(cd, server)).length === 0 && (await pipeReads(server)) <= 1;
      }).catch(() => {});
      assert.deepEqual(await deletedFifos(cd, server), [], "FIFOs of deleted containers open");
      assert.ok((await pipeReads(server)) <= 1, "server threads stuck reading FIFOs");
      assert.ok((await servers(cd)).includes(server), "the same server kept serving");
    } finally {
      await killAndDelete(cd, sentinel);
    }
  },
});

// ---------------------------------------------------------------------------------
// component cache

/** The cache entries (`<cache>/components/*.jco`). */
async function cacheEntries(cache: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(`${cache}/components`))).map((e) => e.name)
      .filter((n) => n.endsWith(".jco")).sort();
  } catch {
    return [];
  }
}

/** Runs command.wasm: it must print its own greeting, whatever the cache holds. */
async function runCommand(what: string): Promise<void> {
  const r = await run(["/command.wasm"], "", 90_000);
  assert.equal(r.code, 0, `${what}: ${r.stderr}`);
  assert.equal(r.stdout, HELLO, `${what}: a corrupt cache entry must never be used`);
}

/** How many lines of containerd's log contain `text`. */
async function logCount(cd: Containerd, text: string): Promise<number> {
  return (await cd.logs()).split("\n").filter((l) => l.includes(text)).length;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

async function mount(args: string[]): Promise<void> {
  const out = await new Deno.Command("mount", { args, stderr: "piped" }).output();
  assert.ok(out.success, `mount ${args.join(" ")}: ${decoder.decode(out.stderr)}`);
}

async function umount(path: string): Promise<void> {
  await new Deno.Command("umount", { args: [path], stderr: "null" }).output();
}

Deno.test({
  name: "faults: corrupt component cache entries are discarded and rebuilt, never used",
  ...opts,
  async fn() {
    const { cd, cache } = await setup();
    await runCommand("first run");
    const [entry] = await cacheEntries(cache);
    assert.ok(entry, "the first run stored an entry");
    const path = `${cache}/components/${entry}`;
    const key = entry.slice(0, -".jco".length);
    const good = await Deno.readFile(path);
    const hello = indexOf(good, encoder.encode(HELLO.trim()));
    assert.ok(hello > 0, "the greeting is in the entry's core module");
    const manifestAt = indexOf(good, encoder.encode(`"key":"${key}"`));
    assert.ok(manifestAt > 0, "the entry's manifest names its key");
    const corruptions: [string, (b: Uint8Array) => Uint8Array][] = [
      ["a byte of the core module (hello → jello)", (b) => {
        const c = b.slice();
        c[hello] = "j".charCodeAt(0);
        return c;
      }],
      ["a byte of the manifest", (b) => {
        const c = b.slice();
        c[manifestAt + 8] ^= 0x01;
        return c;
      }],
      ["truncated to half", (b) => b.slice(0, b.length >> 1)],
      ["empty", () => new Uint8Array()],
    ];
    for (const [what, corrupt] of corruptions) {
      const discarded = await logCount(cd, `discarding ${path}`);
      const bad = corrupt(good);
      await Deno.writeFile(path, bad);
      await runCommand(`entry corrupted: ${what}`);
      await waitFor(
        `the log to say the entry (${what}) was discarded`,
        async () => (await logCount(cd, `discarding ${path}`)) === discarded + 1,
        10_000,
      );
      const rebuilt = await Deno.readFile(path);
      assert.notDeepEqual(rebuilt, bad, `${what}: rebuilt`);
      const decoded = await decodeEntry(key, rebuilt); // throws if still corrupt
      assert.ok(decoded.cores.size > 0, `${what}: the rebuilt entry has its core modules`);
    }
    assert.deepEqual(await cacheEntries(cache), [entry], "one entry, no temp files");
  },
});

Deno.test({
  name: "faults: a read-only component cache (ro bind mount): runs from memory, stores nothing",
  ...opts,
  async fn() {
    const { cd, tmp, cache } = await setup();
    const [entry] = await cacheEntries(cache);
    const good = await Deno.readFile(`${cache}/components/${entry}`);
    const roSource = `${tmp}/ro-cache`;
    await Deno.mkdir(`${roSource}/components`, { recursive: true });
    await mount(["--bind", "-o", "ro", roSource, cache]);
    try {
      // A runner sees the node's mounts as they were when it started (it has a mount
      // namespace of its own): the warm runner from before this mount goes first, and
      // the one that replaces it sees the read-only cache.
      await runCommand("the runner started before the cache became read-only");
      // Empty and read-only: nothing can be stored.
      const refused = await logCount(cd, "component cache: cannot store");
      await runCommand("empty read-only cache");
      assert.deepEqual(await cacheEntries(cache), []);
      await waitFor(
        "the log to say the entry could not be stored",
        async () => (await logCount(cd, "component cache: cannot store")) > refused,
        10_000,
      );
      // A corrupt entry that cannot even be deleted is still never used.
      await umount(cache);
      const bad = good.slice();
      bad[indexOf(good, encoder.encode(HELLO.trim()))] = "j".charCodeAt(0);
      await Deno.writeFile(`${roSource}/components/${entry}`, bad);
      await mount(["--bind", "-o", "ro", roSource, cache]);
      await runCommand("corrupt entry in a read-only cache");
      await runCommand("corrupt entry in a read-only cache, again");
    } finally {
      await umount(cache);
    }
  },
});

Deno.test({
  name: "faults: a cache path under a regular file: components still run, warm runners too",
  ...opts,
  async fn() {
    const { cd, tmp, cache } = await setup();
    const parent = `${tmp}/c`;
    await Deno.remove(parent, { recursive: true });
    await Deno.writeTextFile(parent, "a regular file where the cache's parent should be\n");
    try {
      await runCommand("cache under a file");
      await runCommand("cache under a file, again");
      // The server's pool still keeps a warm runner (with no slot left behind when
      // it cannot; see the leftovers test below).
      const logs = await cd.logs();
      assert.ok(!logs.includes(`cannot start a warm runner`), "warm runners still start");
    } finally {
      await Deno.remove(parent);
      await Deno.mkdir(cache, { recursive: true });
    }
  },
});

// ---------------------------------------------------------------------------------

/** Our part of {@linkcode Leftovers}: other suites may share the machine and namespace. */
async function ours(cd: Containerd, left: Leftovers): Promise<Leftovers> {
  // The shared server's socket, or (grouped by container) one named after our ids.
  const sockets = new Set<string>();
  for (const group of [SHARED_GROUP, ...ids]) {
    sockets.add(await socketPath(cd.address, TEST_NAMESPACE, group));
  }
  return {
    ...left,
    sockets: left.sockets.filter((s) => sockets.has(s)),
    cgroups: left.cgroups.filter((c) => c.split("/").pop()!.startsWith(PREFIX)),
  };
}

Deno.test({
  name: "faults: nothing left behind (mounts, sockets, processes, slots, cgroups, FIFOs)",
  ...opts,
  async fn() {
    const { cd, tmp } = await setup();
    let containers = "";
    let fifos: Deno.DirEntry[] = [];
    let left: Leftovers;
    try {
      containers = (await cd.ctr(["container", "ls", "-q"])).stdout.trim();
      // The shared server goes 1 s after its last task (the harness's idle period).
      for (let i = 0; i < 100 && (await cd.leftovers()).processes.length > 0; i++) {
        await sleep(100);
      }
      fifos = await Array.fromAsync(Deno.readDir(cd.fifoDir));
    } finally {
      // Whatever happened: stop containerd, end its shims, remove the temp dirs.
      left = await ours(cd, await cd.stop());
      await Deno.remove(tmp, { recursive: true });
    }
    assert.equal(containers, "", "containers left");
    assert.deepEqual(left.mounts, [], "mounts left");
    assert.deepEqual(left.sockets, [], "sockets left");
    assert.deepEqual(left.processes, [], "processes left");
    assert.deepEqual(left.slots, [], "slots left");
    assert.deepEqual(left.cgroups, [], "cgroups left");
    assert.deepEqual(fifos.map((e) => e.name), [], "FIFO dirs left");
  },
});
