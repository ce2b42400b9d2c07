/**
 * The ttrpc binding of the task service: decodes each request, calls the plain
 * function in `service.ts`, encodes the response. Errors pass through as thrown
 * (`RpcError` keeps its code; the server turns anything else into UNKNOWN).
 *
 * @module
 */

import type { Handler } from "../protocol/server.ts";
import { decodeMessage, encodeMessage } from "../protocol/task_codec.ts";
import { invalidArgument, unimplemented } from "../protocol/status.ts";
import type { CreateRequest, KillRequest, ProcessRef, TaskService } from "./service.ts";

/** The service names containerd uses for the task API (v3 is wire-identical to v2). */
export const TASK_SERVICES = ["containerd.task.v2.Task", "containerd.task.v3.Task"] as const;

/** The package the task messages are defined in. */
const PKG = "containerd.task.v2";

const EMPTY = new Uint8Array(0);

/** Callbacks the binding needs from the server. */
export interface TaskApiHooks {
  /** Version string returned by Connect. */
  version: string;
  /** Called after Shutdown was answered, when no task remains (or `now` is set). */
  shutdown(now: boolean): void;
  /** Called at every Shutdown, with the id containerd sent (the task it is done with). */
  shutdownRequested?(id: string): void;
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

  return {
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
    Update: notSupported("Update"),
    Checkpoint: notSupported("Checkpoint"),
    Stats: notSupported("Stats"),
  };
}
