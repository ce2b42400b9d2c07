/**
 * The task service: containerd's task API as plain functions over a registry of
 * tasks, free of any transport, so that the lifecycle can be tested without a
 * server. The ttrpc binding lives in `task_api.ts`.
 *
 * One shim server may hold several tasks (the containers of one pod share it); each
 * has its own state. Every task is one guest (see `guest.ts`): a wasm guest
 * runner process, or a native container run by runc (`src/native/runc_guest.ts`).
 *
 * @module
 */

import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  notFound,
  ShimError,
  unimplemented,
} from "../errdefs/errors.ts";
import type { Guest, GuestConfig } from "./guest.ts";
import {
  containerLimits,
  guestNetworkAllowed,
  type LinuxResources,
  type OciSpec,
} from "../oci/spec.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";
import type { MountSpec } from "../sys/mount.ts";
import { Status, type TaskStatus, transition } from "./state.ts";
import type * as api from "../proto/gen/task.ts";
import type { Timestamp } from "../proto/gen/well_known.ts";
import { withSpan } from "../sys/telemetry.ts";

/** Converts a time to a Timestamp. */
export function toTimestamp(date: Date): Timestamp {
  const ms = date.getTime();
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: (ms - seconds * 1000) * 1_000_000 };
}

/** Event topics and their message types (`containerd.events.*`). */
export const Topic = {
  CREATE: ["/tasks/create", "containerd.events.TaskCreate"],
  START: ["/tasks/start", "containerd.events.TaskStart"],
  EXIT: ["/tasks/exit", "containerd.events.TaskExit"],
  DELETE: ["/tasks/delete", "containerd.events.TaskDelete"],
  PAUSED: ["/tasks/paused", "containerd.events.TaskPaused"],
  RESUMED: ["/tasks/resumed", "containerd.events.TaskResumed"],
  OOM: ["/tasks/oom", "containerd.events.TaskOOM"],
} as const;

/** One topic/type pair of {@linkcode Topic}. */
export type EventTopic = typeof Topic[keyof typeof Topic];

/** A task's cgroup as the service uses it (`cgroup.ts` has the real one). */
export interface TaskCgroupHandle {
  /** Moves the guest's process in. */
  addProcess(pid: number): Promise<void>;
  /** Applies changed limits (Update). */
  apply(resources: LinuxResources): Promise<void>;
  /** How many processes the kernel's OOM killer has killed in it. */
  oomKillCount(): Promise<number>;
  /** Its metrics: a message type name (the Any type URL) and the message's fields. */
  metrics(): Promise<{ typeName: string; metrics: Record<string, unknown> }>;
  /** Removes it, once its processes are gone. */
  remove(): Promise<void>;
}

/** What the service needs from the outside world; tests pass their own. */
export interface TaskDeps {
  /** Reads `<bundle>/config.json`. */
  readSpec(bundle: string): Promise<OciSpec>;
  /** Mounts the rootfs mounts onto `target`. */
  mountRootfs(mounts: readonly MountSpec[], target: string): void;
  /** Unmounts everything on `target`. */
  unmountRootfs(target: string): void;
  /** Prepares a guest (fails if it cannot run). */
  createGuest(config: GuestConfig): Promise<Guest>;
  /**
   * Creates task `id`'s cgroup from the spec (`cgroupsPath`, `resources`); without
   * it, tasks get no cgroup (no limits, no Stats, no Update).
   */
  createCgroup?(id: string, spec: OciSpec): Promise<TaskCgroupHandle>;
  /** Queues an event for containerd, in order. */
  publish(topic: EventTopic, event: Record<string, unknown>): void;
  /** Writes a small file in the bundle (the init pid, for the `delete` action). */
  writeFile(path: string, text: string): Promise<void>;
  /** The shim server's own pid. */
  shimPid: number;
  /** Directory for the guests' caches. */
  cacheDir?: string;
  /**
   * The operator's opt-in (`WASMTIME_SHIM_GUEST_NETWORK`): guests whose spec asks for a
   * network namespace of their own reach the network too (see `guestNetworkAllowed`).
   */
  guestNetwork?: boolean;
  /** Writes a line to the shim's log. */
  log(line: string): void;
  /** Writes a debug line (the server's `-debug`); default: none. */
  debug?(line: string): void;
  /** Told when a task joins (Create succeeded) or leaves (Delete) the registry. */
  tasksChanged?(change: "added" | "removed", id: string, bundle: string): void;
  /**
   * Told after a Delete that released everything the task held (guest, rootfs
   * mount, cgroup, runtime state), so the `delete` action has nothing left to do.
   */
  cleanedUp?(id: string, bundle: string, pid: number): void;
}

/**
 * What Create reads of a `CreateTaskRequest` (checkpoints and runtime options are not
 * supported); `rootfs` as the mounts it makes (a decoded `containerd.types.Mount` is one).
 */
export type CreateRequest =
  & Pick<
    api.CreateTaskRequest,
    "id" | "bundle" | "terminal" | "stdin" | "stdout" | "stderr" | "checkpoint"
  >
  & { rootfs: MountSpec[] };

/** The identity of a process in most requests. */
export type ProcessRef = Pick<api.StateRequest, "id" | "exec_id">;

/** `KillRequest`. */
export type KillRequest = api.KillRequest;

/** `StateResponse`. */
export type StateResponse = api.StateResponse;

/** The exit of a task: the fields of `WaitResponse` and `DeleteResponse`, all set. */
export type ExitInfo = Required<Pick<api.DeleteResponse, "pid" | "exit_status" | "exited_at">>;

/** SIGSTOP and SIGCONT, used for Pause and Resume; SIGKILL. */
const SIGSTOP = 19;
const SIGCONT = 18;
const SIGKILL = 9;

/** One container's task. */
class Task {
  readonly id: string;
  readonly bundle: string;
  readonly rootfs: string;
  readonly io: { stdin: string; stdout: string; stderr: string };
  readonly guest: Guest;
  status: TaskStatus = Status.CREATED;
  exitStatus = 0;
  exitedAt?: Timestamp;
  /** Resolves once the task has stopped and its exit is recorded. */
  readonly stopped: Promise<void>;
  /** Set when Delete removes a task that never started: no TaskExit for it. */
  deleting = false;
  /** Resolves once TaskStart is queued (or Start failed), so TaskExit comes after it. */
  startQueued: Promise<void> = Promise.resolve();
  /** The task's cgroup, if it has one. */
  cgroup?: TaskCgroupHandle;
  /** The cgroup's OOM kill count before the guest joined it. */
  oomBaseline = 0;

  #markStopped!: () => void;

  constructor(
    id: string,
    bundle: string,
    rootfs: string,
    io: { stdin: string; stdout: string; stderr: string },
    guest: Guest,
  ) {
    this.id = id;
    this.bundle = bundle;
    this.rootfs = rootfs;
    this.io = io;
    this.guest = guest;
    this.stopped = new Promise((resolve) => this.#markStopped = resolve);
  }

  get pid(): number {
    return this.guest.pid;
  }

  /** Records the exit; called once. */
  recordExit(status: number, at: Date): void {
    this.status = transition(this.id, this.status, "exit") as TaskStatus;
    this.exitStatus = status;
    this.exitedAt = toTimestamp(at);
    this.#markStopped();
  }

  exitInfo(): ExitInfo {
    return {
      pid: this.pid,
      exit_status: this.exitStatus,
      exited_at: this.exitedAt ?? toTimestamp(new Date(0)),
    };
  }
}

/** The task API over a registry of tasks. */
export class TaskService {
  #deps: TaskDeps;
  #tasks = new Map<string, Task>();
  /** Ids being created, so that two Creates for one id cannot race. */
  #creating = new Set<string>();
  #emptied: (() => void) | undefined;

  /** Creates a service that uses `deps` for everything outside the process. */
  constructor(deps: TaskDeps) {
    this.#deps = deps;
  }

  /** True if task `id` is in the registry. */
  has(id: string): boolean {
    return this.#tasks.has(id);
  }

  /** Number of tasks held (created and not yet deleted). */
  get size(): number {
    return this.#tasks.size + this.#creating.size;
  }

  /** The pids of all live guests (for cleanup on server exit). */
  pids(): number[] {
    return [...this.#tasks.values()].filter((t) => t.status !== Status.STOPPED).map((t) => t.pid);
  }

  #get(ref: { id: string; exec_id?: string }): Task {
    const task = this.#tasks.get(ref.id);
    if (task === undefined) throw notFound(`task ${ref.id} not created`);
    if (ref.exec_id) throw notFound(`exec ${ref.exec_id} of task ${ref.id}`);
    return task;
  }

  /** Create: mounts the rootfs, prepares the guest, publishes TaskCreate. */
  async create(req: CreateRequest): Promise<{ pid: number }> {
    if (req.id === "") throw invalidArgument("task id is empty");
    if (this.#tasks.has(req.id) || this.#creating.has(req.id)) {
      throw alreadyExists(`task ${req.id}`);
    }
    if (req.terminal) {
      throw invalidArgument(`task ${req.id}: a terminal (tty) is not supported for wasm guests`);
    }
    if (req.checkpoint) throw unimplemented(`task ${req.id}: restoring from a checkpoint`);
    this.#creating.add(req.id);
    try {
      const spec = await this.#deps.readSpec(req.bundle);
      const rootfs = spec.root.path.startsWith("/")
        ? spec.root.path
        : `${req.bundle}/${spec.root.path}`;
      const attrs = { "container.id": req.id };
      this.#deps.debug?.(
        `task ${req.id}: create: args ${JSON.stringify(spec.process.args)}, ` +
          `${req.rootfs.length} rootfs mount(s) onto ${rootfs}, ` +
          `cgroup ${spec.cgroupsPath || "none"}, netns ${spec.netns ?? "the node's"}`,
      );
      const cgroup = await withSpan("create cgroup", attrs, () => this.#createCgroup(req.id, spec));
      const dropCgroup = () =>
        cgroup?.remove().catch((err) =>
          this.#deps.log(`task ${req.id}: removing its cgroup: ${(err as Error).message}`)
        );
      try {
        if (req.rootfs.length > 0) {
          await withSpan(
            "mount rootfs",
            { ...attrs, "rootfs.mounts": req.rootfs.length },
            () => this.#deps.mountRootfs(req.rootfs, rootfs),
          );
        }
      } catch (err) {
        await dropCgroup();
        throw err;
      }
      let guest: Guest;
      let oomBaseline = 0;
      // The guest's process joins the cgroup while its runner gets ready.
      let joining: Promise<void> | undefined;
      const onPid = cgroup && ((pid: number) => {
        joining = cgroup.addProcess(pid);
        joining.catch(() => {}); // awaited below, unless Create fails first
      });
      try {
        guest = await withSpan("create guest", attrs, () =>
          this.#deps.createGuest({
            id: req.id,
            rootfs,
            bundle: req.bundle,
            args: spec.process.args,
            env: spec.process.env,
            cwd: spec.process.cwd,
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            netns: spec.netns,
            network: guestNetworkAllowed(spec, this.#deps.guestNetwork === true),
            mounts: spec.mounts,
            user: spec.user,
            readonlyRoot: spec.root.readonly,
            maskedPaths: spec.maskedPaths,
            readonlyPaths: spec.readonlyPaths,
            seccomp: spec.seccomp,
            limits: containerLimits(spec.resources),
            cacheDir: this.#deps.cacheDir,
            onPid,
          }));
        if (cgroup !== undefined) {
          try {
            // runc (a native container) has put its init there already.
            if (!guest.ownCgroup) {
              await withSpan("join cgroup", attrs, () => joining ?? cgroup.addProcess(guest.pid));
            }
            oomBaseline = await cgroup.oomKillCount();
          } catch (err) {
            guest.kill(SIGKILL);
            await guest.exited;
            await this.#destroy(req.id, guest);
            throw failedPrecondition(`task ${req.id}: ${(err as Error).message}`);
          }
        }
      } catch (err) {
        if (req.rootfs.length > 0) this.#deps.unmountRootfs(rootfs);
        await dropCgroup();
        throw err;
      }
      const io = { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr };
      const task = new Task(req.id, req.bundle, rootfs, io, guest);
      task.cgroup = cgroup;
      task.oomBaseline = oomBaseline;
      this.#tasks.set(req.id, task);
      this.#deps.tasksChanged?.("added", req.id, req.bundle);
      await this.#deps.writeFile(bundlePath(req.bundle, BundleFile.INIT_PID), String(guest.pid))
        .catch((err) =>
          this.#deps.log(`task ${req.id}: cannot write ${BundleFile.INIT_PID}: ${err.message}`)
        );
      this.#deps.publish(Topic.CREATE, {
        container_id: req.id,
        bundle: req.bundle,
        rootfs: req.rootfs,
        io: { ...io, terminal: false },
        pid: guest.pid,
      });
      guest.exited.then((status) => this.#onExit(task, status));
      return { pid: guest.pid };
    } finally {
      this.#creating.delete(req.id);
    }
  }

  /**
   * Frees what a guest's runtime keeps after its exit (runc's state); logs failures.
   * Resolves false if something could not be freed.
   */
  async #destroy(id: string, guest: Guest): Promise<boolean> {
    try {
      await guest.destroy?.();
      return true;
    } catch (err) {
      this.#deps.log(`task ${id}: ${(err as Error).message}`);
      return false;
    }
  }

  /** Creates the task's cgroup, if the service manages cgroups. */
  async #createCgroup(id: string, spec: OciSpec): Promise<TaskCgroupHandle | undefined> {
    if (this.#deps.createCgroup === undefined) return undefined;
    try {
      return await this.#deps.createCgroup(id, spec);
    } catch (err) {
      if (err instanceof ShimError) throw err;
      throw failedPrecondition(`task ${id}: ${(err as Error).message}`);
    }
  }

  /** True if the kernel's OOM killer killed a process of the task's cgroup. */
  async #oomKilled(task: Task): Promise<boolean> {
    if (task.cgroup === undefined) return false;
    try {
      return (await task.cgroup.oomKillCount()) > task.oomBaseline;
    } catch (err) {
      this.#deps.log(`task ${task.id}: reading its OOM count: ${(err as Error).message}`);
      return false;
    }
  }

  async #onExit(task: Task, status: number): Promise<void> {
    await task.startQueued;
    // Read before the exit is recorded: TaskOOM goes out before TaskExit.
    const oom = !task.deleting && await this.#oomKilled(task);
    task.recordExit(status, new Date());
    this.#deps.log(`task ${task.id}: exited with status ${status}${oom ? " (OOM killed)" : ""}`);
    if (task.deleting) return;
    if (oom) this.#deps.publish(Topic.OOM, { container_id: task.id });
    this.#deps.publish(Topic.EXIT, {
      container_id: task.id,
      id: task.id,
      pid: task.pid,
      exit_status: task.exitStatus,
      exited_at: task.exitedAt,
    });
  }

  /** Start: lets the guest run; TaskStart is queued before this returns. */
  async start(ref: ProcessRef): Promise<{ pid: number }> {
    const task = this.#get(ref);
    task.status = transition(task.id, task.status, "start") as TaskStatus;
    let queued!: () => void;
    task.startQueued = new Promise((resolve) => queued = resolve);
    try {
      await task.guest.start();
      this.#deps.publish(Topic.START, { container_id: task.id, pid: task.pid });
    } finally {
      queued();
    }
    return { pid: task.pid };
  }

  /** State of a task. */
  state(ref: ProcessRef): StateResponse {
    const task = this.#get(ref);
    return {
      id: task.id,
      bundle: task.bundle,
      pid: task.pid,
      status: task.status,
      ...task.io,
      terminal: false,
      exit_status: task.exitStatus,
      exited_at: task.exitedAt,
      exec_id: "",
    };
  }

  /** Wait: resolves when the task has stopped. */
  async wait(ref: ProcessRef): Promise<{ exit_status: number; exited_at: Timestamp }> {
    const task = this.#get(ref);
    await task.stopped;
    const { exit_status, exited_at } = task.exitInfo();
    return { exit_status, exited_at };
  }

  /**
   * Kill: signals the guest; with `all`, every process of its container. A stopped
   * task answers NOT_FOUND, as runc does.
   */
  async kill(req: KillRequest): Promise<void> {
    const task = this.#get(req);
    if (task.status === Status.STOPPED) {
      throw notFound(`task ${task.id}: process already finished`);
    }
    this.#deps.debug?.(`task ${task.id}: kill: signal ${req.signal}${req.all ? ", all" : ""}`);
    // A guest without killAll is one process: signalling it reaches all of it.
    if (req.all && task.guest.killAll) await task.guest.killAll(req.signal);
    else task.guest.kill(req.signal);
  }

  /** Delete: removes a created or stopped task and returns its exit. */
  async delete(ref: ProcessRef): Promise<ExitInfo> {
    const task = this.#get(ref);
    transition(task.id, task.status, "delete");
    this.#tasks.delete(task.id);
    if (task.status === Status.CREATED) {
      // Never started: end the waiting guest; containerd expects no TaskExit then.
      task.deleting = true;
      task.guest.kill(SIGKILL);
      await task.stopped;
    }
    let clean = await this.#destroy(task.id, task.guest);
    try {
      this.#deps.unmountRootfs(task.rootfs);
    } catch (err) {
      clean = false;
      this.#deps.log(`task ${task.id}: unmounting ${task.rootfs}: ${(err as Error).message}`);
    }
    await task.cgroup?.remove().catch((err) => {
      clean = false;
      this.#deps.log(`task ${task.id}: removing its cgroup: ${(err as Error).message}`);
    });
    const info = task.exitInfo();
    this.#deps.publish(Topic.DELETE, {
      container_id: task.id,
      pid: info.pid,
      exit_status: info.exit_status,
      exited_at: info.exited_at,
      id: "",
    });
    this.#deps.debug?.(
      `task ${task.id}: deleted (exit status ${info.exit_status}); ` +
        (clean ? "everything freed" : "something could not be freed (logged above)"),
    );
    if (clean) this.#deps.cleanedUp?.(task.id, task.bundle, info.pid);
    this.#deps.tasksChanged?.("removed", task.id, task.bundle);
    if (this.size === 0) this.#emptied?.();
    return info;
  }

  /**
   * Stats: the task's cgroup metrics (`io.containerd.cgroups.v1.Metrics` or `.v2.`).
   * NOT_FOUND for a task without a cgroup, as the runc shim answers.
   */
  async stats(
    ref: { id: string },
  ): Promise<{ typeName: string; metrics: Record<string, unknown> }> {
    const task = this.#get({ id: ref.id, exec_id: "" });
    if (task.cgroup === undefined) throw notFound(`task ${task.id}: cgroup`);
    try {
      return await task.cgroup.metrics();
    } catch (err) {
      throw failedPrecondition(`task ${task.id}: reading its cgroup: ${(err as Error).message}`);
    }
  }

  /** Update: applies changed resource limits to a live task's cgroup. */
  async update(ref: { id: string }, resources: LinuxResources): Promise<void> {
    const task = this.#get({ id: ref.id, exec_id: "" });
    if (task.status === Status.STOPPED) {
      throw failedPrecondition(`task ${task.id}: cannot update a stopped task`);
    }
    if (task.cgroup === undefined) {
      throw failedPrecondition(`task ${task.id} has no cgroup to update`);
    }
    try {
      await task.cgroup.apply(resources);
    } catch (err) {
      if (err instanceof ShimError) throw err;
      throw failedPrecondition(`task ${task.id}: ${(err as Error).message}`);
    }
  }

  /** Pids: the one process of a wasm task; every process of a native one. */
  async listPids(ref: { id: string }): Promise<{ processes: { pid: number }[] }> {
    const task = this.#get({ id: ref.id, exec_id: "" });
    if (task.status === Status.STOPPED) return { processes: [] };
    const pids = task.guest.pids ? await task.guest.pids() : [task.pid];
    return { processes: pids.map((pid) => ({ pid })) };
  }

  /** Pause: stops the guest (its own pause, else SIGSTOP to its process). */
  async pause(ref: { id: string }): Promise<void> {
    const task = this.#get({ id: ref.id, exec_id: "" });
    const before = task.status;
    const next = transition(task.id, before, "pause") as TaskStatus;
    if (task.guest.pause) await task.guest.pause();
    else task.guest.kill(SIGSTOP);
    if (task.status !== before) return; // it exited meanwhile: that stands
    task.status = next;
    this.#deps.publish(Topic.PAUSED, { container_id: task.id });
  }

  /** Resume: continues a paused guest (its own resume, else SIGCONT). */
  async resume(ref: { id: string }): Promise<void> {
    const task = this.#get({ id: ref.id, exec_id: "" });
    const before = task.status;
    const next = transition(task.id, before, "resume") as TaskStatus;
    if (task.guest.resume) await task.guest.resume();
    else task.guest.kill(SIGCONT);
    if (task.status !== before) return;
    task.status = next;
    this.#deps.publish(Topic.RESUMED, { container_id: task.id });
  }

  /** CloseIO: ends the guest's stdin (ctr sends it when its own stdin reaches EOF). */
  closeIO(ref: ProcessRef & { stdin: boolean }): void {
    const task = this.#get(ref);
    if (ref.stdin) task.guest.closeStdin();
  }

  /** Connect: the shim's pid and the task's. */
  connect(ref: { id: string }): { shim_pid: number; task_pid: number } {
    const task = this.#tasks.get(ref.id);
    return { shim_pid: this.#deps.shimPid, task_pid: task?.pid ?? 0 };
  }

  /** Resolves when the last task is deleted (immediately if there is none). */
  whenEmpty(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#emptied = resolve);
  }

  /** Kills every guest still running (server exit). */
  killAll(): void {
    for (const task of this.#tasks.values()) {
      if (task.status !== Status.STOPPED) task.guest.kill(SIGKILL);
    }
  }
}
