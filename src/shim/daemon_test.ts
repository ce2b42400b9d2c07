/**
 * The shim server as a process, driven over ttrpc without containerd: the
 * `start` → server handshake, error codes at the RPC boundary, and Shutdown.
 */

import assert from "node:assert/strict";
import { TtrpcClient } from "../ttrpc/client.ts";
import { decode, encode } from "../proto/messages.ts";
import { Code, RpcError } from "../ttrpc/status.ts";
import { selfCommand } from "../sys/self_exec.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";

const TASK = "containerd.task.v2.Task";
const opts = { sanitizeOps: false, sanitizeResources: false };

/**
 * Runs `start` for container t1 of `bundle` (no config.json: no pod) with the server
 * settings `env` (grouping, idle period), as containerd would.
 */
async function startShim(bundle: string, env: Record<string, string>) {
  const socketDir = await Deno.makeTempDir({ prefix: "shim-sock-" });
  const { cmd, args } = selfCommand([
    "-namespace",
    "test",
    "-address",
    `${socketDir}/containerd.sock`,
    "-id",
    "t1",
    "-socket",
    `${socketDir}/s`,
    "start",
  ]);
  const out = await new Deno.Command(cmd, {
    args,
    cwd: bundle,
    // Its warm runner's slot and its cache in the test's own dir, not the node's.
    env: {
      TTRPC_ADDRESS: "",
      WASMTIME_SHIM_SLOT_DIR: `${socketDir}/slots`,
      WASMTIME_SHIM_CACHE_DIR: `${socketDir}/cache`,
      ...env,
    },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const address = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, address + new TextDecoder().decode(out.stderr));
  assert.equal(address, `unix://${socketDir}/s`);
  assert.equal(await Deno.readTextFile(bundlePath(bundle, BundleFile.ADDRESS)), address);
  assert.equal((await Deno.stat(`${socketDir}/s`)).mode! & 0o777, 0o600);
  return { socketDir, socket: `${socketDir}/s`, client: await TtrpcClient.connect(address) };
}

/** Whether process `pid` still runs (a zombie waits for init: the server is detached). */
async function running(pid: number): Promise<boolean> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
  return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
}

/** Polls `cond` every 20 ms until it holds or `ms` have passed; returns its last value. */
async function within(ms: number, cond: () => Promise<boolean>): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() >= end) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const socketExists = (socket: string) => Deno.stat(socket).then(() => true, () => false);

async function code(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (err) {
    assert.ok(err instanceof RpcError, String(err));
    return err.code;
  }
}

Deno.test({
  name: "server: errors at the RPC boundary, then Shutdown exits and removes the socket",
  ...opts,
  async fn() {
    const bundle = await Deno.makeTempDir({ prefix: "shim-bundle-" });
    // A server of its own (a pod's server, or WASMTIME_SHIM_GROUPING=container) goes
    // with its last task; the shared server's idle period is the next test's.
    const { socketDir, socket, client } = await startShim(bundle, {
      WASMTIME_SHIM_GROUPING: "container",
    });
    try {
      const req = (type: string, obj: object) => encode(type, obj);
      // Unknown id, unknown method, unknown service.
      assert.equal(
        await code(
          client.call(TASK, "State", req("containerd.task.v2.StateRequest", { id: "nope" })),
        ),
        Code.NOT_FOUND,
      );
      assert.equal(
        await code(client.call(TASK, "Frobnicate", new Uint8Array())),
        Code.UNIMPLEMENTED,
      );
      assert.equal(await code(client.call("x.Y", "State", new Uint8Array())), Code.UNIMPLEMENTED);
      assert.equal(await code(client.call(TASK, "Exec", new Uint8Array())), Code.UNIMPLEMENTED);
      // A bundle without config.json fails Create precisely; the server keeps serving.
      const create = req("containerd.task.v2.CreateTaskRequest", { id: "t1", bundle });
      await assert.rejects(
        () => client.call(TASK, "Create", create),
        (err: RpcError) => err.code === Code.INVALID_ARGUMENT && /config\.json/.test(err.message),
      );
      // Garbage payload: a clear error, still serving.
      assert.notEqual(
        await code(client.call(TASK, "Create", new Uint8Array([0xff, 0xff, 0xff]))),
        0,
      );
      const connect = await client.call(
        TASK,
        "Connect",
        req("containerd.task.v2.ConnectRequest", { id: "t1" }),
      );
      const info = decode<{ shim_pid: number }>("containerd.task.v2.ConnectResponse", connect);
      assert.ok(info.shim_pid > 0);
      // Shutdown with no task: the server answers, exits and removes its socket.
      await client.call(TASK, "Shutdown", req("containerd.task.v2.ShutdownRequest", { id: "t1" }));
      await client.closed;
      assert.ok(await within(1_000, async () => !await socketExists(socket)), "socket left");
      assert.ok(
        await within(1_000, async () => !await running(info.shim_pid)),
        "server process still alive after Shutdown",
      );
    } finally {
      client.close();
      await Deno.remove(bundle, { recursive: true });
      await Deno.remove(socketDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "server: the shared server stays for its idle period after Shutdown, then exits",
  ...opts,
  async fn() {
    const bundle = await Deno.makeTempDir({ prefix: "shim-bundle-" });
    const idleMs = 1_500;
    const { socketDir, socket, client } = await startShim(bundle, {
      WASMTIME_SHIM_GROUPING: "namespace",
      WASMTIME_SHIM_IDLE_TIMEOUT_MS: String(idleMs),
    });
    try {
      const connect = await client.call(
        TASK,
        "Connect",
        encode("containerd.task.v2.ConnectRequest", {}),
      );
      const pid =
        decode<{ shim_pid: number }>("containerd.task.v2.ConnectResponse", connect).shim_pid;
      await client.call(
        TASK,
        "Shutdown",
        encode("containerd.task.v2.ShutdownRequest", { id: "t1" }),
      );
      const shutdownAt = Date.now();
      // The next container of the namespace still finds it.
      assert.equal(
        await code(
          client.call(TASK, "State", encode("containerd.task.v2.StateRequest", { id: "nope" })),
        ),
        Code.NOT_FOUND,
      );
      assert.ok(await socketExists(socket));
      await client.closed;
      assert.ok(Date.now() - shutdownAt >= idleMs - 100, "the server left before its idle period");
      assert.ok(await within(1_000, async () => !await socketExists(socket)), "socket left");
      assert.ok(await within(1_000, async () => !await running(pid)), "server still alive");
    } finally {
      client.close();
      await Deno.remove(bundle, { recursive: true });
      await Deno.remove(socketDir, { recursive: true });
    }
  },
});

Deno.test({
  name: "server: a cache cap that is not a number fails start naming the variable; nothing is left",
  ...opts,
  async fn() {
    const bundle = await Deno.makeTempDir({ prefix: "shim-bundle-" });
    const socketDir = await Deno.makeTempDir({ prefix: "shim-sock-" });
    try {
      for (const bad of ["-1", "a lot"]) {
        const { cmd, args } = selfCommand([
          ...["-namespace", "test", "-address", `${socketDir}/containerd.sock`],
          ...["-id", "t1", "-socket", `${socketDir}/s`, "start"],
        ]);
        const out = await new Deno.Command(cmd, {
          args,
          cwd: bundle,
          env: {
            TTRPC_ADDRESS: "",
            WASMTIME_SHIM_SLOT_DIR: `${socketDir}/slots`,
            WASMTIME_SHIM_CACHE_DIR: `${socketDir}/cache`,
            WASMTIME_SHIM_CACHE_MAX_BYTES: bad,
          },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const said = new TextDecoder().decode(out.stdout);
        assert.equal(out.code, 1, said);
        assert.match(
          said,
          new RegExp(
            `shim server failed to start: WASMTIME_SHIM_CACHE_MAX_BYTES=${
              JSON.stringify(bad)
            } is not valid: give a whole number of bytes`,
          ),
        );
        // No socket, no slot, no cache directory: the server stopped before any of them.
        assert.deepEqual([...Deno.readDirSync(socketDir)].map((e) => e.name), []);
      }
    } finally {
      await Deno.remove(bundle, { recursive: true });
      await Deno.remove(socketDir, { recursive: true });
    }
  },
});
