/**
 * The ttrpc binding of the task service: decodes each request, calls the plain
 * function in `service.ts`, encodes the response. This is the one place where
 * errors become gRPC status codes ({@linkcode toStatus}): every layer below reports
 * an error's kind (`src/errdefs`), and the code chosen here decides how `ctr`, CRI
 * and containerd react (containerd's `errdefs.FromGRPC`).
 *
 * @module
 */

import type { CallContext, Handler } from "../ttrpc/server.ts";
import * as api from "../proto/gen/task.ts";
import * as cgroupsV1 from "../proto/gen/cgroups_v1_metrics.ts";
import * as cgroupsV2 from "../proto/gen/cgroups_v2_metrics.ts";
import type { Any } from "../proto/gen/well_known.ts";
import {
  describeError,
  type ErrorKind,
  invalidArgument,
  Kind,
  ShimError,
  unimplemented,
} from "../errdefs/errors.ts";
import { Code, RpcError, type StatusCode } from "../ttrpc/status.ts";
import type { TaskService } from "./service.ts";
import { type LinuxResources, parseLinuxResources } from "../oci/spec.ts";
import { RpcSpans } from "./rpc_spans.ts";

/** The service names containerd uses for the task API (v3 is wire-identical to v2). */
export const TASK_SERVICES = ["containerd.task.v2.Task", "containerd.task.v3.Task"] as const;

/** The package the task messages are defined in. */
const PKG = "containerd.task.v2";

const EMPTY = new Uint8Array(0);

/** `type_url` of `UpdateTaskRequest.resources`: the OCI `LinuxResources` as JSON. */
export const LINUX_RESOURCES_TYPE_URL =
  "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

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
  /** Spans of the calls (telemetry); default: spans with no namespace attribute. */
  spans?: RpcSpans;
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

/**
 * The Stats payload: a cgroup's metrics encoded as the message their type name (also the
 * Any's type URL) says.
 */
function encodeMetrics(typeName: string, metrics: Record<string, unknown>): Uint8Array {
  // The cgroup layer builds the message from keyed files, so its fields are named at run
  // time; the generated encoder checks each value as it writes it.
  switch (typeName) {
    case "io.containerd.cgroups.v1.Metrics":
      return cgroupsV1.encodeMetrics(metrics);
    case "io.containerd.cgroups.v2.Metrics":
      return cgroupsV2.encodeMetrics(metrics);
    default:
      throw new Error(`Stats: no encoder for metrics of type ${typeName}`);
  }
}

/** The handlers for one task service name. */
export function taskHandlers(service: TaskService, hooks: TaskApiHooks): Record<string, Handler> {
  /**
   * A method: `decode` reads the request (its failure is INVALID_ARGUMENT naming
   * `reqType`), `fn` answers it, `encode` writes the answer (`null`: `google.protobuf.Empty`).
   */
  const spans = hooks.spans ?? new RpcSpans();
  const unary = <Req extends { id: string }, Res>(
    reqType: string,
    decode: (bytes: Uint8Array) => Req,
    encode: ((res: Res) => Uint8Array) | null,
    fn: (req: Req) => Res | Promise<Res>,
  ): Handler =>
  async (payload, ctx: CallContext) => {
    let req: Req;
    try {
      req = decode(payload);
    } catch (err) {
      throw invalidArgument(`cannot decode ${PKG}.${reqType}: ${(err as Error).message}`);
    }
    const res = await spans.around(ctx, req.id, () => fn(req), (err) => toStatus(err).code);
    return encode === null ? EMPTY : encode(res);
  };
  const notSupported = (name: string): Handler => () => {
    throw unimplemented(`${name} is not supported by the wasm shim`);
  };

  const handlers: Record<string, Handler> = {
    Create: unary(
      "CreateTaskRequest",
      api.decodeCreateTaskRequest,
      api.encodeCreateTaskResponse,
      (req) => service.create(req),
    ),
    Start: unary(
      "StartRequest",
      api.decodeStartRequest,
      api.encodeStartResponse,
      (req) => service.start(req),
    ),
    State: unary(
      "StateRequest",
      api.decodeStateRequest,
      api.encodeStateResponse,
      (req) => service.state(req),
    ),
    Wait: unary(
      "WaitRequest",
      api.decodeWaitRequest,
      api.encodeWaitResponse,
      (req) => service.wait(req),
    ),
    Kill: unary("KillRequest", api.decodeKillRequest, null, (req) => service.kill(req)),
    Delete: unary(
      "DeleteRequest",
      api.decodeDeleteRequest,
      api.encodeDeleteResponse,
      (req) => service.delete(req),
    ),
    Pids: unary(
      "PidsRequest",
      api.decodePidsRequest,
      api.encodePidsResponse,
      (req) => service.listPids(req),
    ),
    Pause: unary("PauseRequest", api.decodePauseRequest, null, (req) => service.pause(req)),
    Resume: unary("ResumeRequest", api.decodeResumeRequest, null, (req) => service.resume(req)),
    CloseIO: unary("CloseIORequest", api.decodeCloseIORequest, null, (req) => service.closeIO(req)),
    Connect: unary(
      "ConnectRequest",
      api.decodeConnectRequest,
      api.encodeConnectResponse,
      (req) => ({ ...service.connect(req), version: hooks.version }),
    ),
    Shutdown: unary("ShutdownRequest", api.decodeShutdownRequest, null, (req) => {
      hooks.shutdownRequested?.(req.id);
      if (req.now || service.size === 0) setTimeout(() => hooks.shutdown(req.now), 0);
    }),
    Exec: notSupported("Exec"),
    ResizePty: notSupported("ResizePty (no terminal)"),
    Update: unary(
      "UpdateTaskRequest",
      api.decodeUpdateTaskRequest,
      null,
      (req) => service.update(req, decodeResources(req.resources)),
    ),
    Checkpoint: notSupported("Checkpoint"),
    Stats: unary("StatsRequest", api.decodeStatsRequest, api.encodeStatsResponse, async (req) => {
      const { typeName, metrics } = await service.stats(req);
      // Bare full name as type URL, as the runc shim's typeurl.MarshalAny writes it.
      return { stats: { type_url: typeName, value: encodeMetrics(typeName, metrics) } };
    }),
  };
  return Object.fromEntries(
    Object.entries(handlers).map(([name, handler]) => [name, withStatus(handler)]),
  );
}
