/**
 * The shim server as a process, driven over ttrpc without containerd: the
 * `start` → server handshake, error codes at the RPC boundary, and Shutdown.
 */

import assert from "node:assert/strict";
import { TtrpcClient } from "../ttrpc/client.ts";
import { decode, encode, TypeName } from "../proto/messages.ts";
import { Code, RpcError } from "../ttrpc/status.ts";
import { selfCommand } from "../sys/self_exec.ts";

const TASK = "containerd.task.v2.Task";
const opts = { sanitizeOps: false, sanitizeResources: false };

async function startShim(bundle: string) {
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
    env: { TTRPC_ADDRESS: "" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const address = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, address + new TextDecoder().decode(out.stderr));
  assert.equal(address, `unix://${socketDir}/s`);
  assert.equal(await Deno.readTextFile(`${bundle}/address`), address);
  assert.equal((await Deno.stat(`${socketDir}/s`)).mode! & 0o777, 0o600);
  return { socketDir, socket: `${socketDir}/s`, client: await TtrpcClient.connect(address) };
}

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
    const { socketDir, socket, client } = await startShim(bundle);
    try {
      const req = (type: string, obj: object) => encode(type, obj);
      // Unknown id, unknown method, unknown service.
      assert.equal(
        await code(client.call(TASK, "State", req(TypeName.StateRequest, { id: "nope" }))),
        Code.NOT_FOUND,
      );
      assert.equal(
        await code(client.call(TASK, "Frobnicate", new Uint8Array())),
        Code.UNIMPLEMENTED,
      );
      assert.equal(await code(client.call("x.Y", "State", new Uint8Array())), Code.UNIMPLEMENTED);
      assert.equal(await code(client.call(TASK, "Exec", new Uint8Array())), Code.UNIMPLEMENTED);
      // A bundle without config.json fails Create precisely; the server keeps serving.
      const create = req(TypeName.CreateTaskRequest, { id: "t1", bundle });
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
        req(TypeName.ConnectRequest, { id: "t1" }),
      );
      const info = decode<{ shim_pid: number }>(TypeName.ConnectResponse, connect);
      assert.ok(info.shim_pid > 0);
      // Shutdown with no task: the server answers, exits and removes its socket.
      await client.call(TASK, "Shutdown", req(TypeName.ShutdownRequest, { id: "t1" }));
      await client.closed;
      for (let i = 0; i < 50 && await Deno.stat(socket).then(() => true, () => false); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      await assert.rejects(() => Deno.stat(socket), Deno.errors.NotFound);
      // Gone, or a zombie waiting for init to reap it (the server is detached).
      const running = async () => {
        const stat = await Deno.readTextFile(`/proc/${info.shim_pid}/stat`).catch(() => "");
        return stat !== "" && stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
      };
      let alive = true;
      for (let i = 0; i < 50 && (alive = await running()); i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(alive, false, "server process still alive after Shutdown");
    } finally {
      client.close();
      await Deno.remove(bundle, { recursive: true });
      await Deno.remove(socketDir, { recursive: true });
    }
  },
});
