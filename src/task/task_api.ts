/**
 * The ttrpc binding of the task service: decodes each request, calls the plain
 * function in `service.ts`, encodes the response. This is the one place where
 * errors become gRPC status codes ({@linkcode toStatus}): every layer below reports
 * an error's kind (`src/errdefs`), and the code chosen here decides how `ctr`, CRI
 * and containerd react (containerd's `errdefs.FromGRPC`).
 *
 * @module
 */

import type { Handler } from "../ttrpc/server.ts";
import { decodeMessage, encodeMessage } from "../proto/task_codec.ts";
import {
  describeError,
  type ErrorKind,
  invalidArgument,
  Kind,
  ShimError,
  unimplemented,
} from "../errdefs/errors.ts";
import { Code, RpcError, type StatusCode } from "../ttrpc/status.ts";
import type { Any } from "../proto/wire.ts";
import type { CreateRequest, KillRequest, ProcessRef, TaskService } from "./service.ts";
import { type LinuxResources, parseLinuxResources } from "../oci/spec.ts";

/** The service names containerd uses for the task API (v3 is wire-identical to v2). */
export const TASK_SERVICES = ["containerd.task.v2.Task", "containerd.task.v3.Task"] as const;

/** The package the task messages are defined in. */
const PKG = "containerd.task.v2";

const EMPTY = new Uint8Array(0);

/** `type_url` of `UpdateTaskRequest.resources`: the OCI `LinuxResources` as JSON. */
export const LINUX_RESOURCES_TYPE_URL =
  "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/** UpdateTaskRequest, as decoded. */
interface UpdateRequest {
  id: string;
  resources?: Any;
  annotations: Record<string, string>;
}

/**
 * Reads `UpdateTaskRequest.resources`.
 *
 * @throws {ShimError} INVALID_ARGUMENT for another type, or JSON that is not LinuxResources
 */
export function decodeResources(any: Any | undefined): LinuxResources {
  if (any === undefined) return {};
  if (any.type_url !== LINUX_RESOURCES_TYPE_URL) {
    throw invalidArgument(
      `update resources of type "${any.type_url}"; expected ${LINUX_RESOURCES_TYPE_URL}`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(any.value));
  } catch (err) {
    throw invalidArgument(`update resources are not valid JSON: ${(err as Error).message}`);
  }
  return parseLinuxResources(raw, "update resources");
}

/** Callbacks the binding needs from the server. */
export interface TaskApiHooks {
  /** Version string returned by Connect. */
  version: string;
  /** Called after Shutdown was answered, when no task remains (or `now` is set). */
  shutdown(now: boolean): void;
  /** Called at every Shutdown, with the id containerd sent (the task it is done with). */
  shutdownRequested?(id: string): void;
}

/** The gRPC code of each kind of error (containerd's `errdefs.ToGRPC`). */
const CODE_OF_KIND: Readonly<Record<ErrorKind, StatusCode>> = {
  [Kind.UNKNOWN]: Code.UNKNOWN,
  [Kind.CANCELLED]: Code.CANCELLED,
  [Kind.INVALID_ARGUMENT]: Code.INVALID_ARGUMENT,
  [Kind.DEADLINE_EXCEEDED]: Code.DEADLINE_EXCEEDED,
  [Kind.NOT_FOUND]: Code.NOT_FOUND,
  [Kind.ALREADY_EXISTS]: Code.ALREADY_EXISTS,
  [Kind.RESOURCE_EXHAUSTED]: Code.RESOURCE_EXHAUSTED,
  [Kind.FAILED_PRECONDITION]: Code.FAILED_PRECONDITION,
  [Kind.UNIMPLEMENTED]: Code.UNIMPLEMENTED,
  [Kind.INTERNAL]: Code.INTERNAL,
  [Kind.UNAVAILABLE]: Code.UNAVAILABLE,
  [Kind.DATA_LOSS]: Code.DATA_LOSS,
};

/**
 * The status a task request that failed with `err` is answered with: a
 * {@linkcode ShimError}'s kind decides the code; an {@linkcode RpcError} (the
 * server's own: a cancelled call, a deadline) keeps its code; anything else — a
 * stray `Deno.errors.NotFound` included — is UNKNOWN with its message, never a code
 * containerd would act on.
 */
export function toStatus(err: unknown): { code: StatusCode; message: string } {
  if (err instanceof ShimError) return { code: CODE_OF_KIND[err.kind], message: err.message };
  if (err instanceof RpcError) return { code: err.code, message: err.message };
  return { code: Code.UNKNOWN, message: describeError(err) };
}

/** `handler` with its errors answered as {@linkcode toStatus} says. */
function withStatus(handler: Handler): Handler {
  return async (payload, context) => {
    try {
      return await handler(payload, context);
    } catch (err) {
      const { code, message } = toStatus(err);
      throw new RpcError(code, message);
    }
  };
}

/** The handlers for one task service name. */
export function taskHandlers(service: TaskService, hooks: TaskApiHooks): Record<string, Handler> {
  const unary = <Req, Res>(
    reqType: string,
    resType: string | null,
    fn: (req: Req) => Res | Promise<Res>,
  ): Handler =>
  async (payload) => {
    let req: Req;
    try {
      req = decodeMessage<Req>(`${PKG}.${reqType}`, payload);
    } catch (err) {
      throw invalidArgument((err as Error).message);
    }
    const res = await fn(req);
    return resType === null
      ? EMPTY
      : encodeMessage(`${PKG}.${resType}`, res as Record<string, unknown>);
  };
  const notSupported = (name: string): Handler => () => {
    throw unimplemented(`${name} is not supported by the wasm shim`);
  };

  const handlers: Record<string, Handler> = {
    Create: unary<CreateRequest, { pid: number }>(
      "CreateTaskRequest",
      "CreateTaskResponse",
      (req) => service.create(req),
    ),
    Start: unary<ProcessRef, { pid: number }>(
      "StartRequest",
      "StartResponse",
      (req) => service.start(req),
    ),
    State: unary<ProcessRef, unknown>("StateRequest", "StateResponse", (req) => service.state(req)),
    Wait: unary<ProcessRef, unknown>("WaitRequest", "WaitResponse", (req) => service.wait(req)),
    Kill: unary<KillRequest, void>("KillRequest", null, (req) => service.kill(req)),
    Delete: unary<ProcessRef, unknown>(
      "DeleteRequest",
      "DeleteResponse",
      (req) => service.delete(req),
    ),
    Pids: unary<{ id: string }, unknown>(
      "PidsRequest",
      "PidsResponse",
      (req) => service.listPids(req),
    ),
    Pause: unary<{ id: string }, void>("PauseRequest", null, (req) => service.pause(req)),
    Resume: unary<{ id: string }, void>("ResumeRequest", null, (req) => service.resume(req)),
    CloseIO: unary<ProcessRef & { stdin: boolean }, void>(
      "CloseIORequest",
      null,
      (req) => service.closeIO(req),
    ),
    Connect: unary<{ id: string }, unknown>(
      "ConnectRequest",
      "ConnectResponse",
      (req) => ({ ...service.connect(req), version: hooks.version }),
    ),
    Shutdown: unary<{ id: string; now: boolean }, void>("ShutdownRequest", null, (req) => {
      hooks.shutdownRequested?.(req.id);
      if (req.now || service.size === 0) setTimeout(() => hooks.shutdown(req.now), 0);
    }),
    Exec: notSupported("Exec"),
    ResizePty: notSupported("ResizePty (no terminal)"),
    Update: unary<UpdateRequest, void>(
      "UpdateTaskRequest",
      null,
      (req) => service.update(req, decodeResources(req.resources)),
    ),
    Checkpoint: notSupported("Checkpoint"),
    Stats: unary<{ id: string }, unknown>("StatsRequest", "StatsResponse", async (req) => {
      const { typeName, metrics } = await service.stats(req);
      // Bare full name as type URL, as the runc shim's typeurl.MarshalAny writes it.
      return { stats: { type_url: typeName, value: encodeMessage(typeName, metrics) } };
    }),
  };
  return Object.fromEntries(
    Object.entries(handlers).map(([name, handler]) => [name, withStatus(handler)]),
  );
}
