/**
 * The `start` action: find or start the group's server and print its address.
 *
 * containerd reads everything `start` writes on stdout and stderr (one pipe) as the
 * address, and waits for EOF on that pipe, so the server is started detached with
 * its own stdio and nothing but the address is ever printed. The socket is
 * listening before the address is printed.
 *
 * `start` runs on the critical path of every container start, so the usual path
 * (a live server holds the container) uses synchronous file calls and no
 * `setTimeout`: in a fresh Deno process the first timer and the first asynchronous
 * file call each cost several milliseconds of lazy initialisation.
 *
 * @module
 */

import { ReadyLine } from "./ready.ts";
import { formatFlags, type ShimFlags } from "./flags.ts";
import { selfCommand } from "../sys/self_exec.ts";
import { encodeHold, GROUP_SERVICE, groupingFromEnv, groupOf, HOLD_METHOD } from "./group.ts";
import { SANDBOX_ID_ANNOTATION, socketPath } from "./socket_path.ts";
import { TtrpcClient } from "../ttrpc/client.ts";
import { writeAllSync } from "../sys/write_all.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";
import { serverTelemetryEnv, telemetryConfig } from "../sys/telemetry.ts";

/** How long `start` waits for the server to listen. */
export const SERVER_READY_TIMEOUT_MS = 20_000;
/** How long `start` waits for a live server to answer Hold. */
const HOLD_TIMEOUT_MS = 5_000;
/** How often `start` tries a live-but-closing server before starting a new one. */
const ATTEMPTS = 3;

function readAnnotations(bundle: string): Record<string, string> {
  try {
    const spec = JSON.parse(Deno.readTextFileSync(bundlePath(bundle, BundleFile.CONFIG)));
    return spec?.annotations ?? {};
  } catch {
    return {};
  }
}

/** Writes `<bundle>/address` atomically (containerd 1.x reads it on restart). */
export function writeAddress(bundle: string, address: string): void {
  const tmp = `${bundle}/.${BundleFile.ADDRESS}.${Deno.pid}`;
  Deno.writeTextFileSync(tmp, address);
  Deno.renameSync(tmp, bundlePath(bundle, BundleFile.ADDRESS));
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

/**
 * Asks the server at `path` to keep itself up for container `id`. Resolves false if
 * nothing listens there or the server is shutting down.
 */
async function hold(path: string, id: string): Promise<boolean> {
  let client: TtrpcClient;
  try {
    client = await TtrpcClient.connect(path);
  } catch {
    return false;
  }
  // The deadline closes the connection, which fails the call. AbortSignal.timeout
  // instead of the call's own timer: see the module documentation.
  const deadline = AbortSignal.timeout(HOLD_TIMEOUT_MS);
  const onDeadline = () => client.close();
  deadline.addEventListener("abort", onDeadline);
  try {
    await client.call(GROUP_SERVICE, HOLD_METHOD, encodeHold(id));
    return true;
  } catch {
    return false;
  } finally {
    deadline.removeEventListener("abort", onDeadline);
    client.close();
  }
}

/** Starts a server for the group; resolves with its ready line (or why it failed). */
async function spawnServer(flags: ShimFlags, path: string, bundle: string): Promise<string> {
  const { cmd, args } = selfCommand([...formatFlags({ ...flags, socket: path })]);
  const child = new Deno.Command(cmd, {
    args,
    // The standard OTel variables from containerd's environment turn on Deno's exporter
    // in the server (OTEL_DENO must be there when it starts); the rest is inherited.
    env: serverTelemetryEnv(telemetryConfig(Deno.env.toObject())),
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
  }
  return line;
}

/** Runs `start`. Returns the exit code; on error the message goes to stdout for containerd. */
export async function startAction(flags: ShimFlags): Promise<number> {
  // Runtime options (≤2.2) or BootstrapParams (2.3+) arrive on stdin; read to EOF.
  drainStdin();
  const bundle = Deno.cwd();
  let group: string;
  try {
    const grouping = groupingFromEnv(Deno.env.get("WASMTIME_SHIM_GROUPING"));
    group = groupOf(flags.id, readAnnotations(bundle), grouping, SANDBOX_ID_ANNOTATION);
  } catch (err) {
    writeOut(`containerd-shim-wasmtime-v1: ${(err as Error).message}`);
    return 1;
  }
  const path = flags.socket || await socketPath(flags.address, flags.namespace, group);
  const address = `unix://${path}`;

  let ready = false;
  for (let attempt = 0; attempt < ATTEMPTS && !ready; attempt++) {
    // A live server of the group takes the container (a pod's, or the shared one).
    if (await hold(path, flags.id)) {
      ready = true;
      break;
    }
    const line = await spawnServer(flags, path, bundle);
    // A new server holds the container it was started for; IN_USE means another
    // `start` won the race, so hold that one next time round.
    if (line === ReadyLine.READY) ready = true;
    else if (line !== ReadyLine.IN_USE) {
      const why = line.startsWith(ReadyLine.ERROR)
        ? line.slice(ReadyLine.ERROR.length + 1)
        : `no answer within ${SERVER_READY_TIMEOUT_MS} ms`;
      writeOut(`containerd-shim-wasmtime-v1: shim server failed to start: ${why}`);
      return 1;
    }
  }
  if (!ready) {
    writeOut(
      `containerd-shim-wasmtime-v1: the shim server at ${path} is shutting down and ` +
        `no new one could take its place after ${ATTEMPTS} attempts`,
    );
    return 1;
  }
  writeAddress(bundle, address);
  writeOut(address);
  return 0;
}

function writeOut(text: string): void {
  writeAllSync(Deno.stdout, new TextEncoder().encode(text));
}

/** Reads stdin to its end and drops it. */
function drainStdin(): void {
  const buf = new Uint8Array(64 * 1024);
  try {
    while (Deno.stdin.readSync(buf) !== null) { /* not used */ }
  } catch { /* no stdin */ }
}
