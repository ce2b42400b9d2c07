/**
 * The `start` action: find or start the group's server and print its address.
 *
 * containerd reads everything `start` writes on stdout and stderr (one pipe) as the
 * address, and waits for EOF on that pipe, so the server is started detached with
 * its own stdio and nothing but the address is ever printed. The socket is
 * listening before the address is printed.
 *
 * @module
 */

import { ReadyLine } from "./ready.ts";
import { formatFlags, type ShimFlags } from "./flags.ts";
import { selfCommand } from "./self_exec.ts";
import { groupId, isListening, socketPath } from "./socket_path.ts";

/** How long `start` waits for the server to listen. */
export const SERVER_READY_TIMEOUT_MS = 20_000;

async function readAnnotations(bundle: string): Promise<Record<string, string>> {
  try {
    const spec = JSON.parse(await Deno.readTextFile(`${bundle}/config.json`));
    return spec?.annotations ?? {};
  } catch {
    return {};
  }
}

/** Writes `<bundle>/address` atomically (containerd 1.x reads it on restart). */
export async function writeAddress(bundle: string, address: string): Promise<void> {
  const tmp = `${bundle}/.address.${Deno.pid}`;
  await Deno.writeTextFile(tmp, address);
  await Deno.rename(tmp, `${bundle}/address`);
}

async function readLine(stream: ReadableStream<Uint8Array>, timeoutMs: number): Promise<string> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const timer = setTimeout(() => reader.cancel(), timeoutMs);
  try {
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(timer);
    reader.releaseLock();
  }
  return text.split("\n")[0];
}

/** Runs `start`. Returns the exit code; on error the message goes to stdout for containerd. */
export async function startAction(flags: ShimFlags): Promise<number> {
  // Runtime options (≤2.2) or BootstrapParams (2.3+) arrive on stdin; read to EOF.
  await new Response(Deno.stdin.readable).arrayBuffer().catch(() => {});
  const bundle = Deno.cwd();
  const group = groupId(flags.id, await readAnnotations(bundle));
  const path = flags.socket || await socketPath(flags.address, flags.namespace, group);
  const address = `unix://${path}`;

  if (!(await isListening(path))) {
    const { cmd, args } = selfCommand([...formatFlags({ ...flags, socket: path })]);
    const child = new Deno.Command(cmd, {
      args,
      cwd: bundle,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      detached: true,
    }).spawn();
    const line = await readLine(child.stdout, SERVER_READY_TIMEOUT_MS);
    child.unref();
    if (line !== ReadyLine.READY && line !== ReadyLine.IN_USE) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      const why = line.startsWith(ReadyLine.ERROR)
        ? line.slice(ReadyLine.ERROR.length + 1)
        : `no answer within ${SERVER_READY_TIMEOUT_MS} ms`;
      await writeOut(`containerd-shim-wasmtime-v1: shim server failed to start: ${why}`);
      return 1;
    }
  }
  await writeAddress(bundle, address);
  await writeOut(address);
  return 0;
}

async function writeOut(text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  let off = 0;
  while (off < bytes.length) off += await Deno.stdout.write(bytes.subarray(off));
}
