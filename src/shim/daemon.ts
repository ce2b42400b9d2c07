/**
 * The shim server: the long-running process `start` leaves behind. It listens on
 * the group's socket, serves the task API over ttrpc to containerd, publishes
 * events, and keeps warm guest runners. A pod's server exits after Shutdown once
 * no task remains; the namespace's shared server (see `group.ts`) stays up for an
 * idle period first, so that the next container finds it.
 *
 * Its stdio is not containerd's: stdin and stderr are /dev/null and stdout is a
 * pipe to the `start` process, used once to say "ready" (or why not) and closed.
 *
 * @module
 */

import { TtrpcServer } from "../ttrpc/server.ts";
import { CgroupManager, joinCgroup } from "../cgroup/cgroup.ts";
import { mountAll, unmountAll } from "../sys/mount.ts";
import { TaskService } from "../task/service.ts";
import { GUEST_NETWORK_ENV, parseGuestNetworkEnv, readSpec } from "../oci/spec.ts";
import { TASK_SERVICES, taskHandlers } from "../task/task_api.ts";
import { createGuest } from "../task/guest_factory.ts";
import { RunnerPool } from "../runner/pool.ts";
import { DEFAULT_SLOT_ROOT } from "../runner/slot.ts";
import { PR_SET_CHILD_SUBREAPER, prctl } from "../sys/libc.ts";
import { runcRoot } from "../native/runc.ts";
import { EventPublisher } from "./events.ts";
import type { ShimFlags } from "./flags.ts";
import {
  decodeHold,
  GROUP_SERVICE,
  groupingFromEnv,
  groupOf,
  HOLD_METHOD,
  HOLD_TTL_MS,
  idleTimeoutFromEnv,
  IdleTracker,
  SHARED_GROUP,
} from "./group.ts";
import { createLogger, LogRouter } from "./log.ts";
import { deleteAnswer } from "./delete.ts";
import { SANDBOX_ID_ANNOTATION } from "./socket_path.ts";
import { Code, RpcError } from "../ttrpc/status.ts";
import { ReadyLine } from "./ready.ts";
import { VERSION } from "./version.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";
import {
  CacheJanitor,
  MAX_BYTES_ENV,
  maxBytesFromEnv,
  SWEEP_INTERVAL_ENV,
  sweepIntervalFromEnv,
} from "../image/cache_janitor.ts";
import { RpcSpans } from "../task/rpc_spans.ts";
import {
  exitWatchdog,
  gauge,
  metricsSummary,
  telemetryConfig,
  telemetryOn,
  TRACECONTEXT_ENV,
  traceContextFromEnv,
} from "../sys/telemetry.ts";

/** Where transpiled components and other caches live, unless overridden. */
export const DEFAULT_CACHE_DIR = "/var/lib/containerd-shim-wasmtime/cache";

/** How long an exiting server may take to send its last telemetry before it is killed. */
export const SERVER_EXIT_FLUSH_MS = 3_000;

/** How often a server with `-debug` logs its metrics (see `metricsSummary`). */
export const METRICS_LOG_INTERVAL_MS = 60_000;

/**
 * The task a server log line is about: lines from the task and runner layers start
 * `task <id>:` or `guest <id>` (a warm runner's, `guest slot-…`, until it is given a
 * container, is about none).
 */
const TASK_LINE = /^(?:task|guest) (?!slot-)([^\s:()]+)/;

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

/** Runs the server until it is shut down (or SIGTERM/SIGINT). Returns the exit code. */
export async function runServer(flags: ShimFlags): Promise<number> {
  const bundle = Deno.cwd();
  const logs = new LogRouter(flags.id, bundle);
  const log = createLogger(
    logs.write,
    { runtime: "io.containerd.wasmtime.v1", namespace: flags.namespace },
    flags.debug,
  );
  // Each task's pod (CRI's sandbox id), for the `pod` field of the lines about it.
  const pods = new Map<string, string | undefined>();
  const taskLog = (id: string) => log.with({ id, pod: pods.get(id) });
  /** A line from the task or runner layer, with the fields of the task it names. */
  const logLine = (line: string, level: "info" | "debug" = "info") => {
    const id = TASK_LINE.exec(line)?.[1];
    (id !== undefined ? taskLog(id) : log)[level](line);
  };
  if (flags.socket === "") {
    tell(`${ReadyLine.ERROR} the server needs -socket`);
    return 2;
  }
  let spec;
  let idleTimeoutMs;
  let group;
  let cacheMaxBytes;
  let sweepIntervalMs;
  try {
    cacheMaxBytes = maxBytesFromEnv(Deno.env.get(MAX_BYTES_ENV));
    sweepIntervalMs = sweepIntervalFromEnv(Deno.env.get(SWEEP_INTERVAL_ENV));
    spec = await readSpec(bundle).catch(() => undefined);
    const grouping = groupingFromEnv(Deno.env.get("WASMTIME_SHIM_GROUPING"));
    group = groupOf(flags.id, spec?.annotations, grouping, SANDBOX_ID_ANNOTATION);
    idleTimeoutMs = group === SHARED_GROUP
      ? idleTimeoutFromEnv(Deno.env.get("WASMTIME_SHIM_IDLE_TIMEOUT_MS"))
      : 0;
  } catch (err) {
    tell(`${ReadyLine.ERROR} ${(err as Error).message}`);
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
  // Bundles come and go; the server must not keep one as its cwd.
  Deno.chdir("/");
  try {
    // Orphaned descendants of guests come back to us, not to init; so does a native
    // container's init once runc create has exited (src/native/wait.ts reaps it).
    prctl(PR_SET_CHILD_SUBREAPER, 1);
  } catch (err) {
    log.warn(`cannot become a subreaper: ${(err as Error).message}`);
  }

  const cacheDir = Deno.env.get("WASMTIME_SHIM_CACHE_DIR") || DEFAULT_CACHE_DIR;
  let guestNetwork = false;
  try {
    guestNetwork = parseGuestNetworkEnv(Deno.env.get(GUEST_NETWORK_ENV));
  } catch (err) {
    // A typo must not open the network: the guests stay without it, and the log says why.
    log.warn(`${(err as Error).message}; guests get no network beyond what their spec gives`);
  }
  const slotRoot = Deno.env.get("WASMTIME_SHIM_SLOT_DIR") || DEFAULT_SLOT_ROOT;
  RunnerPool.sweep(slotRoot);
  const pool = new RunnerPool({ slotRoot, cacheDir, log: (line, level) => logLine(line, level) });
  // The first container's runner starts now, while containerd sends Create.
  pool.warm(spec?.netns);
  // Eviction and the sweep run after each Create has answered (see cache_janitor.ts).
  const janitor = new CacheJanitor({
    cacheDir,
    maxBytes: cacheMaxBytes,
    sweepIntervalMs,
    containerd: { address: flags.address, namespace: flags.namespace },
    log: (line) => log.info(line),
  });
  janitor.start();

  let closing = false;
  let stop: (code: number) => Promise<void> = () => Promise.resolve();
  // With no idle period the server goes at Shutdown; the timer is then only a
  // safety net for a server that containerd never used or never told to go.
  const idleMs = idleTimeoutMs > 0 ? idleTimeoutMs : HOLD_TTL_MS;
  const idle = new IdleTracker(idleMs, () => {
    log.info(`shim server idle for ${idleMs} ms with no task: exiting`);
    void stop(0);
  });
  idle.hold(flags.id);

  const events = new EventPublisher(Deno.env.get("TTRPC_ADDRESS") ?? "", flags.namespace, log);
  const cgroups = new CgroupManager();
  const service = new TaskService({
    readSpec,
    mountRootfs: mountAll,
    unmountRootfs: (target) => void unmountAll(target),
    createGuest: async (config) => {
      // From here on the task's lines go to its own log (containerd reads that one).
      if (config.bundle) {
        const taskSpec = await readSpec(config.bundle).catch(() => undefined);
        pods.set(config.id, taskSpec?.annotations[SANDBOX_ID_ANNOTATION]);
        logs.add(config.id, config.bundle);
        // A marker left in a reused bundle would let `delete` skip a cleanup.
        try {
          Deno.removeSync(bundlePath(config.bundle, BundleFile.CLEANED));
        } catch { /* none: the usual case */ }
      }
      const started = performance.now();
      // With -debug, runners write their debug lines too.
      const guest = await createGuest({ ...config, debug: flags.debug }, {
        log: (line, level) => logLine(line, level),
        pool,
        containerd: { address: flags.address, namespace: flags.namespace },
        // Native executables (the pause container, sidecars) run with runc.
        native: { root: runcRoot(flags.namespace) },
      }).finally(() => janitor.schedule());
      taskLog(config.id).debug(
        `guest ready: pid ${guest.pid}, ${(performance.now() - started).toFixed(1)} ms ` +
          `(${config.args[0] ?? "no args"})`,
      );
      return guest;
    },
    createCgroup: async (id, taskSpec) => {
      const cgroup = await cgroups.create(taskSpec.cgroupsPath, id, taskSpec.resources);
      pool.learnCgroup(cgroup);
      return {
        // A warm runner waiting in a cgroup beside this one comes in by a rename.
        addProcess: async (pid) => {
          const warm = await pool.takeWarmCgroup(pid);
          await joinCgroup(cgroup, pid, warm, taskSpec.resources, (line) => {
            log.warn(`task ${id}: ${line}`);
          });
        },
        apply: (resources) => cgroup.apply(resources),
        oomKillCount: () => cgroup.oomKillCount(),
        metrics: () => cgroup.metrics(),
        remove: () => cgroup.remove(),
      };
    },
    publish: ([topic, typeName], event) => events.publish(topic, typeName, event),
    writeFile: (path, text) => Deno.writeTextFile(path, text),
    shimPid: Deno.pid,
    cacheDir,
    guestNetwork,
    log: (line) => logLine(line),
    debug: (line) => logLine(line, "debug"),
    cleanedUp: (id, bundle, pid) => {
      try {
        Deno.writeFileSync(bundlePath(bundle, BundleFile.CLEANED), deleteAnswer(pid));
      } catch (err) {
        log.warn(`task ${id}: cannot mark its bundle cleaned: ${(err as Error).message}`);
      }
    },
    tasksChanged: (change, id) => {
      // A task's log was opened at its Create (createGuest above).
      if (change === "added") idle.release(id);
      else {
        logs.remove(id);
        pods.delete(id);
      }
      idle.setTasks(service.size);
    },
  });

  gauge(
    "shim.server.tasks",
    { description: "tasks (containers) this shim server holds" },
    () => service.size,
  );
  const summary = () => `metrics: tasks=${service.size} ${metricsSummary()}`.trimEnd();
  const metricsTimer = flags.debug
    ? setInterval(() => log.debug(summary()), METRICS_LOG_INTERVAL_MS)
    : undefined;
  if (metricsTimer !== undefined) Deno.unrefTimer(metricsTimer);

  const server = new TtrpcServer();
  let exitCode = 0;
  let stopping: Promise<void> | undefined;
  stop = (code: number) => {
    exitCode = code;
    closing = true;
    stopping ??= (async () => {
      log.info(`shim server shutting down; ${summary()}`);
      clearInterval(metricsTimer);
      idle.close();
      // Unlink first: a `start` arriving now starts a new server instead of
      // connecting to this closing one.
      await Deno.remove(flags.socket).catch(() => {});
      service.killAll();
      await pool.close();
      await janitor.close();
      await events.flush();
      events.close();
      await server.close();
    })();
    return stopping;
  };
  const handlers = taskHandlers(service, {
    version: VERSION,
    spans: new RpcSpans({
      namespace: flags.namespace,
      parent: traceContextFromEnv(Deno.env.get(TRACECONTEXT_ENV)),
      debug: (line) => logLine(line, "debug"),
    }),
    // A pod's server goes with its last task; the shared one waits for the idle timer.
    // containerd is done with this id (after a failed Create too): drop its hold.
    shutdownRequested: (id) => {
      idle.release(id);
      if (!service.has(id)) logs.remove(id);
    },
    shutdown: (now) => {
      if (now || idleTimeoutMs === 0) void stop(0);
      else idle.check();
    },
  });
  for (const name of TASK_SERVICES) server.register(name, handlers);
  server.register(GROUP_SERVICE, {
    [HOLD_METHOD]: (payload: Uint8Array) => {
      if (closing) {
        // The group service is the shim's own: its errors are ttrpc's, not the task API's.
        return Promise.reject(
          new RpcError(Code.FAILED_PRECONDITION, "the shim server is shutting down"),
        );
      }
      idle.hold(decodeHold(payload));
      return Promise.resolve(new Uint8Array());
    },
  });

  const onSignal = () => void stop(0);
  Deno.addSignalListener("SIGTERM", onSignal);
  Deno.addSignalListener("SIGINT", onSignal);

  log.info(`shim server for group ${group} listening on ${flags.socket}`);
  const otel = telemetryConfig(Deno.env.toObject());
  if (telemetryOn()) log.info("exporting OpenTelemetry traces, metrics and logs over OTLP");
  else if (otel.enabled) log.warn("OTEL_* variables are set, but this server does not export");
  else if (otel.invalid) log.warn(`no OpenTelemetry export: ${otel.reason}`);
  else log.debug(`no OpenTelemetry export${otel.reason ? ` (${otel.reason})` : ""}`);
  tell(ReadyLine.READY);
  try {
    await server.serve(listener);
  } catch (err) {
    log.error(`serving: ${(err as Error).message}`);
    exitCode = 1;
  }
  await stop(exitCode);
  Deno.removeSignalListener("SIGTERM", onSignal);
  Deno.removeSignalListener("SIGINT", onSignal);
  logs.close();
  // Its sockets and tasks are gone: only the exporter's last flush is left.
  exitWatchdog(SERVER_EXIT_FLUSH_MS);
  return exitCode;
}
