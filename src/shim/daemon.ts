/**
 * The shim server: the long-running process `start` leaves behind. It listens on
 * the group's socket, serves the task API over ttrpc to containerd, publishes
 * events, and exits after Shutdown once no task remains.
 *
 * Its stdio is not containerd's: stdin and stderr are /dev/null and stdout is a
 * pipe to the `start` process, used once to say "ready" (or why not) and closed.
 *
 * @module
 */

import { TtrpcServer } from "../protocol/server.ts";
import { mountAll, unmountAll } from "../task/mount.ts";
import { TaskService } from "../task/service.ts";
import { readSpec } from "../task/spec.ts";
import { TASK_SERVICES, taskHandlers } from "../task/task_api.ts";
import { createGuest, PrespawnedRunner } from "../wasm/runner.ts";
import { PR_SET_CHILD_SUBREAPER, prctl } from "../sys/libc.ts";
import { EventPublisher } from "./events.ts";
import type { ShimFlags } from "./flags.ts";
import { createLogger, openLogSink } from "./log.ts";
import { ReadyLine } from "./ready.ts";
import { VERSION } from "./version.ts";

/** Where transpiled components and other caches live, unless overridden. */
export const DEFAULT_CACHE_DIR = "/var/lib/containerd-shim-wasmtime/cache";

function tell(line: string): void {
  try {
    Deno.stdout.writeSync(new TextEncoder().encode(line + "\n"));
    Deno.stdout.close();
  } catch {
    // `start` is gone; nothing to tell.
  }
}

async function listen(path: string): Promise<Deno.UnixListener | "inuse"> {
  const dir = path.slice(0, path.lastIndexOf("/"));
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    return Deno.listen({ transport: "unix", path });
  } catch (err) {
    if (!(err instanceof Deno.errors.AddrInUse)) throw err;
  }
  // Someone is there: a live server of our group (reuse it) or a stale file.
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return "inuse";
  } catch {
    await Deno.remove(path).catch(() => {});
    return Deno.listen({ transport: "unix", path });
  }
}

/** Runs the server until Shutdown (or SIGTERM/SIGINT). Returns the exit code. */
export async function runServer(flags: ShimFlags): Promise<number> {
  const bundle = Deno.cwd();
  const log = createLogger(
    openLogSink(`${bundle}/log`),
    { runtime: "io.containerd.wasmtime.v1", id: flags.id, namespace: flags.namespace },
    flags.debug,
  );
  if (flags.socket === "") {
    tell(`${ReadyLine.ERROR} the server needs -socket`);
    return 2;
  }
  let listener: Deno.UnixListener | "inuse";
  try {
    listener = await listen(flags.socket);
  } catch (err) {
    tell(`${ReadyLine.ERROR} cannot listen on ${flags.socket}: ${(err as Error).message}`);
    return 1;
  }
  if (listener === "inuse") {
    tell(ReadyLine.IN_USE);
    return 0;
  }
  await Deno.chmod(flags.socket, 0o600);
  try {
    // Orphaned descendants of guests come back to us, not to init.
    prctl(PR_SET_CHILD_SUBREAPER, 1);
  } catch (err) {
    log.warn(`cannot become a subreaper: ${(err as Error).message}`);
  }

  // The first container's runner starts now, while containerd sends Create.
  let prespawned: PrespawnedRunner | undefined;
  const takePrespawned = () => {
    const p = prespawned;
    prespawned = undefined;
    return p;
  };
  const events = new EventPublisher(Deno.env.get("TTRPC_ADDRESS") ?? "", flags.namespace, log);
  const service = new TaskService({
    readSpec,
    mountRootfs: mountAll,
    unmountRootfs: (target) => void unmountAll(target),
    createGuest: (config) =>
      createGuest(config, { log: (line: string) => log.info(line), prespawned: takePrespawned() }),
    publish: ([topic, typeName], event) => events.publish(topic, typeName, event),
    writeFile: (path, text) => Deno.writeTextFile(path, text),
    shimPid: Deno.pid,
    cacheDir: Deno.env.get("WASMTIME_SHIM_CACHE_DIR") || DEFAULT_CACHE_DIR,
    log: (line) => log.info(line),
  });

  const server = new TtrpcServer();
  let exitCode = 0;
  let stopping: Promise<void> | undefined;
  const stop = (code: number) => {
    exitCode = code;
    stopping ??= (async () => {
      log.info("shim server shutting down");
      service.killAll();
      await takePrespawned()?.discard();
      await events.flush();
      events.close();
      await server.close();
    })();
    return stopping;
  };
  const handlers = taskHandlers(service, { version: VERSION, shutdown: () => stop(0) });
  for (const name of TASK_SERVICES) server.register(name, handlers);

  const onSignal = () => void stop(0);
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);

  log.info(`shim server listening on ${flags.socket}`);
  tell(ReadyLine.READY);
  try {
    const spec = await readSpec(bundle);
    const rootfs = spec.root.path.startsWith("/") ? spec.root.path : `${bundle}/${spec.root.path}`;
    prespawned = new PrespawnedRunner(flags.id, bundle, rootfs, spec.netns, (l) => log.info(l));
  } catch (err) {
    log.warn(`no runner started ahead of Create: ${(err as Error).message}`);
  }
  try {
    await server.serve(listener);
  } catch (err) {
    log.error(`serving: ${(err as Error).message}`);
    exitCode = 1;
  }
  await stop(exitCode);
  await Deno.remove(flags.socket).catch(() => {});
  Deno.removeSignalListener("SIGTERM", onSignal);
  Deno.removeSignalListener("SIGINT", onSignal);
  return exitCode;
}
