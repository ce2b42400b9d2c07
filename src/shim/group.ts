/**
 * Sharing one shim server among containers.
 *
 * containerd starts the shim binary's `start` action for every container; `start`
 * answers the address of the server of the container's *group*. A pod's containers
 * (the `io.kubernetes.cri.sandbox-id` annotation) always share their pod's server.
 * Other containers share one server per containerd namespace by default
 * (`WASMTIME_SHIM_GROUPING=namespace`), so that a container does not wait for a
 * server to boot; `WASMTIME_SHIM_GROUPING=container` gives every container its own
 * server, as the runc shim does.
 *
 * A shared server stays up for an idle period after its last task is gone
 * (`WASMTIME_SHIM_IDLE_TIMEOUT_MS`). To close the race between `start` finding a
 * live server and containerd connecting to it, `start` first *holds* the server:
 * the private ttrpc method `Group/Hold` keeps it from going idle until the
 * container's Create arrives (or the hold expires).
 *
 * @module
 */

import { ProtoReader, ProtoWriter, WireType } from "../proto/wire.ts";

/** The private ttrpc service `start` talks to. */
export const GROUP_SERVICE = "containerd.shim.wasmtime.v1.Group";
/** Its one method: keep the server for a container about to be created. */
export const HOLD_METHOD = "Hold";
/** Field number of the container id in a HoldRequest. */
const HOLD_ID_FIELD = 1;

/** How long a hold keeps an otherwise idle server up, waiting for Create. */
export const HOLD_TTL_MS = 30_000;
/** How long a shared server stays up without tasks, by default. */
export const DEFAULT_IDLE_TIMEOUT_MS = 60_000;
/** The group of containers that do not belong to a pod. */
export const SHARED_GROUP = "wasmtime-shared";

/** How containers are grouped into servers. */
export type Grouping = "namespace" | "container";

/** Reads `WASMTIME_SHIM_GROUPING`. @throws {Error} for an unknown value */
export function groupingFromEnv(value: string | undefined): Grouping {
  if (value === undefined || value === "" || value === "namespace") return "namespace";
  if (value === "container") return "container";
  throw new Error(
    `WASMTIME_SHIM_GROUPING=${JSON.stringify(value)} is not valid: use "namespace" or "container"`,
  );
}

/** Reads `WASMTIME_SHIM_IDLE_TIMEOUT_MS`. @throws {Error} for a value that is not a count */
export function idleTimeoutFromEnv(value: string | undefined): number {
  if (value === undefined || value === "") return DEFAULT_IDLE_TIMEOUT_MS;
  const ms = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(ms)) {
    throw new Error(
      `WASMTIME_SHIM_IDLE_TIMEOUT_MS=${
        JSON.stringify(value)
      } is not valid: give a whole number of milliseconds`,
    );
  }
  return ms;
}

/** The grouping id of a container: its pod, else the shared group or itself. */
export function groupOf(
  id: string,
  annotations: Record<string, string> | undefined,
  grouping: Grouping,
  sandboxAnnotation: string,
): string {
  const pod = annotations?.[sandboxAnnotation];
  if (pod) return pod;
  return grouping === "namespace" ? SHARED_GROUP : id;
}

/** Encodes a HoldRequest. */
export function encodeHold(id: string): Uint8Array {
  return new ProtoWriter().string(HOLD_ID_FIELD, id).finish();
}

/** Decodes a HoldRequest; unknown fields are skipped. */
export function decodeHold(bytes: Uint8Array): string {
  const reader = new ProtoReader(bytes);
  let id = "";
  for (let tag = reader.next(); tag !== undefined; tag = reader.next()) {
    if (tag.field === HOLD_ID_FIELD && tag.wireType === WireType.LEN) id = reader.string();
    else reader.skip(tag.wireType);
  }
  return id;
}

/**
 * When a server may exit: it counts its tasks and holds, and calls `onIdle` once
 * nothing has been there for the idle period.
 */
export class IdleTracker {
  #timeoutMs: number;
  #onIdle: () => void;
  #holds = new Map<string, ReturnType<typeof setTimeout>>();
  #tasks = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Tracks nothing yet; call {@linkcode check} once the server is up. */
  constructor(timeoutMs: number, onIdle: () => void) {
    this.#timeoutMs = timeoutMs;
    this.#onIdle = onIdle;
  }

  /** Keeps the server for container `id` for up to `ttlMs`. */
  hold(id: string, ttlMs = HOLD_TTL_MS): void {
    clearTimeout(this.#holds.get(id));
    this.#holds.set(
      id,
      setTimeout(() => {
        this.#holds.delete(id);
        this.check();
      }, ttlMs),
    );
    this.check();
  }

  /** Create for `id` arrived: its hold is done. */
  release(id: string): void {
    const timer = this.#holds.get(id);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#holds.delete(id);
    this.check();
  }

  /** Sets the number of tasks the server holds. */
  setTasks(count: number): void {
    this.#tasks = count;
    this.check();
  }

  /** True while tasks or holds keep the server. */
  get busy(): boolean {
    return this.#tasks > 0 || this.#holds.size > 0;
  }

  /** (Re)arms or disarms the idle timer. */
  check(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.busy) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.busy) this.#onIdle();
    }, this.#timeoutMs);
  }

  /** Clears every timer. */
  close(): void {
    clearTimeout(this.#timer);
    for (const t of this.#holds.values()) clearTimeout(t);
    this.#holds.clear();
  }
}
