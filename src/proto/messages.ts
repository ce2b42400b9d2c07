/**
 * Encoding and decoding of the shim's protobuf messages with protobufjs, from the
 * .proto texts embedded in `proto_sources.ts` (no file reads at run time).
 *
 * Decoded messages are plain objects: snake_case field names, proto3 defaults
 * filled in ("" / 0 / false / [] / empty bytes), sub-messages absent when not
 * on the wire, 64-bit integers as numbers, bytes as `Uint8Array` copies, enums as
 * numbers, maps as plain objects. Encoding omits default values, as proto3 does.
 *
 * The .proto sources are parsed lazily, on the first encode/decode, so importing
 * this module costs only the protobufjs import.
 *
 * @module
 */

import protobuf from "protobufjs";
import { PROTO_SOURCES } from "./proto_sources.ts";
import { Status, type TaskStatus as StatusValue } from "./task_types.ts";
import type { Any, Timestamp } from "./wire.ts";

export type { Any, Timestamp } from "./wire.ts";

/** Full names of the messages defined in `proto/`. */
export const TypeName = {
  Timestamp: "google.protobuf.Timestamp",
  Any: "google.protobuf.Any",
  Empty: "google.protobuf.Empty",
  Status: "google.rpc.Status",
  Request: "ttrpc.Request",
  Response: "ttrpc.Response",
  KeyValue: "ttrpc.KeyValue",
  Mount: "containerd.types.Mount",
  RuntimeInfo: "containerd.types.RuntimeInfo",
  RuntimeVersion: "containerd.types.RuntimeVersion",
  ProcessInfo: "containerd.v1.types.ProcessInfo",
  CreateTaskRequest: "containerd.task.v2.CreateTaskRequest",
  CreateTaskResponse: "containerd.task.v2.CreateTaskResponse",
  DeleteRequest: "containerd.task.v2.DeleteRequest",
  DeleteResponse: "containerd.task.v2.DeleteResponse",
  ExecProcessRequest: "containerd.task.v2.ExecProcessRequest",
  ExecProcessResponse: "containerd.task.v2.ExecProcessResponse",
  ResizePtyRequest: "containerd.task.v2.ResizePtyRequest",
  StateRequest: "containerd.task.v2.StateRequest",
  StateResponse: "containerd.task.v2.StateResponse",
  KillRequest: "containerd.task.v2.KillRequest",
  CloseIORequest: "containerd.task.v2.CloseIORequest",
  PidsRequest: "containerd.task.v2.PidsRequest",
  PidsResponse: "containerd.task.v2.PidsResponse",
  CheckpointTaskRequest: "containerd.task.v2.CheckpointTaskRequest",
  UpdateTaskRequest: "containerd.task.v2.UpdateTaskRequest",
  StartRequest: "containerd.task.v2.StartRequest",
  StartResponse: "containerd.task.v2.StartResponse",
  WaitRequest: "containerd.task.v2.WaitRequest",
  WaitResponse: "containerd.task.v2.WaitResponse",
  StatsRequest: "containerd.task.v2.StatsRequest",
  StatsResponse: "containerd.task.v2.StatsResponse",
  ConnectRequest: "containerd.task.v2.ConnectRequest",
  ConnectResponse: "containerd.task.v2.ConnectResponse",
  ShutdownRequest: "containerd.task.v2.ShutdownRequest",
  PauseRequest: "containerd.task.v2.PauseRequest",
  ResumeRequest: "containerd.task.v2.ResumeRequest",
  TaskCreate: "containerd.events.TaskCreate",
  TaskStart: "containerd.events.TaskStart",
  TaskDelete: "containerd.events.TaskDelete",
  TaskIO: "containerd.events.TaskIO",
  TaskExit: "containerd.events.TaskExit",
  TaskOOM: "containerd.events.TaskOOM",
  TaskExecAdded: "containerd.events.TaskExecAdded",
  TaskExecStarted: "containerd.events.TaskExecStarted",
  TaskPaused: "containerd.events.TaskPaused",
  TaskResumed: "containerd.events.TaskResumed",
  TaskCheckpointed: "containerd.events.TaskCheckpointed",
  Envelope: "containerd.services.events.ttrpc.v1.Envelope",
  ForwardRequest: "containerd.services.events.ttrpc.v1.ForwardRequest",
} as const;

/** `containerd.v1.types.Status`: the state of a process in {@linkcode StateResponse}. */
export const TaskStatus = Status;

/** One of the {@linkcode TaskStatus} values. */
export type TaskStatusValue = StatusValue;

/** `containerd.types.Mount`. */
export interface Mount {
  type: string;
  source: string;
  /** Empty from containerd 1.6. */
  target: string;
  options: string[];
}

/** `containerd.v1.types.ProcessInfo`. */
export interface ProcessInfo {
  pid: number;
  info?: Any;
}

/** `containerd.types.RuntimeVersion`. */
export interface RuntimeVersion {
  version: string;
  revision: string;
}

/** `containerd.types.RuntimeInfo` (the `-info` action's output). */
export interface RuntimeInfo {
  name: string;
  version?: RuntimeVersion;
  options?: Any;
  features?: Any;
  annotations: Record<string, string>;
}

/** `containerd.task.v2.CreateTaskRequest`. */
export interface CreateTaskRequest {
  id: string;
  /** Absolute bundle path. */
  bundle: string;
  rootfs: Mount[];
  terminal: boolean;
  /** FIFO path or URI; empty = none. */
  stdin: string;
  stdout: string;
  stderr: string;
  checkpoint: string;
  parent_checkpoint: string;
  /** Absent for a plain `ctr run`. */
  options?: Any;
}

/** `containerd.task.v2.CreateTaskResponse`. */
export interface CreateTaskResponse {
  pid: number;
}

/** `containerd.task.v2.DeleteRequest`. */
export interface DeleteRequest {
  id: string;
  exec_id: string;
}

/** `containerd.task.v2.DeleteResponse`. */
export interface DeleteResponse {
  pid: number;
  exit_status: number;
  exited_at?: Timestamp;
}

/** `containerd.task.v2.ExecProcessRequest`. */
export interface ExecProcessRequest {
  id: string;
  exec_id: string;
  terminal: boolean;
  stdin: string;
  stdout: string;
  stderr: string;
  /** OCI `Process` as JSON, type_url `types.containerd.io/opencontainers/runtime-spec/1/Process`. */
  spec?: Any;
}

/** `containerd.task.v2.ExecProcessResponse` (empty). */
export type ExecProcessResponse = Record<string, never>;

/** `containerd.task.v2.ResizePtyRequest`. */
export interface ResizePtyRequest {
  id: string;
  exec_id: string;
  width: number;
  height: number;
}

/** `containerd.task.v2.StateRequest`. */
export interface StateRequest {
  id: string;
  exec_id: string;
}

/** `containerd.task.v2.StateResponse`. */
export interface StateResponse {
  /** Container id for init, exec id for execs. */
  id: string;
  bundle: string;
  pid: number;
  status: TaskStatusValue | number;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  exit_status: number;
  exited_at?: Timestamp;
  exec_id: string;
}

/** `containerd.task.v2.KillRequest`. */
export interface KillRequest {
  id: string;
  exec_id: string;
  signal: number;
  /** Signal every process of the container. */
  all: boolean;
}

/** `containerd.task.v2.CloseIORequest`. */
export interface CloseIORequest {
  id: string;
  exec_id: string;
  stdin: boolean;
}

/** `containerd.task.v2.PidsRequest`. */
export interface PidsRequest {
  id: string;
}

/** `containerd.task.v2.PidsResponse`. */
export interface PidsResponse {
  processes: ProcessInfo[];
}

/** `containerd.task.v2.CheckpointTaskRequest`. */
export interface CheckpointTaskRequest {
  id: string;
  path: string;
  options?: Any;
}

/** `containerd.task.v2.UpdateTaskRequest`. */
export interface UpdateTaskRequest {
  id: string;
  /** OCI `LinuxResources` as JSON. */
  resources?: Any;
  annotations: Record<string, string>;
}

/** `containerd.task.v2.StartRequest`. */
export interface StartRequest {
  id: string;
  exec_id: string;
}

/** `containerd.task.v2.StartResponse`. */
export interface StartResponse {
  pid: number;
}

/** `containerd.task.v2.WaitRequest`. */
export interface WaitRequest {
  id: string;
  exec_id: string;
}

/** `containerd.task.v2.WaitResponse`. */
export interface WaitResponse {
  exit_status: number;
  exited_at?: Timestamp;
}

/** `containerd.task.v2.StatsRequest`. */
export interface StatsRequest {
  id: string;
}

/** `containerd.task.v2.StatsResponse`. */
export interface StatsResponse {
  stats?: Any;
}

/** `containerd.task.v2.ConnectRequest`. */
export interface ConnectRequest {
  id: string;
}

/** `containerd.task.v2.ConnectResponse`. */
export interface ConnectResponse {
  shim_pid: number;
  task_pid: number;
  version: string;
}

/** `containerd.task.v2.ShutdownRequest`. */
export interface ShutdownRequest {
  id: string;
  now: boolean;
}

/** `containerd.task.v2.PauseRequest`. */
export interface PauseRequest {
  id: string;
}

/** `containerd.task.v2.ResumeRequest`. */
export interface ResumeRequest {
  id: string;
}

/** `containerd.events.TaskIO`. */
export interface TaskIO {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

/** `containerd.events.TaskCreate` (topic `/tasks/create`). */
export interface TaskCreate {
  container_id: string;
  bundle: string;
  rootfs: Mount[];
  io?: TaskIO;
  checkpoint: string;
  pid: number;
}

/** `containerd.events.TaskStart` (topic `/tasks/start`). */
export interface TaskStart {
  container_id: string;
  pid: number;
}

/** `containerd.events.TaskDelete` (topic `/tasks/delete`). */
export interface TaskDelete {
  container_id: string;
  pid: number;
  exit_status: number;
  exited_at?: Timestamp;
  /** Exec id; empty for init. */
  id: string;
}

/** `containerd.events.TaskExit` (topic `/tasks/exit`). */
export interface TaskExit {
  container_id: string;
  /** Equal to container_id for init, the exec id for execs. */
  id: string;
  pid: number;
  exit_status: number;
  exited_at?: Timestamp;
}

/** `containerd.events.TaskOOM` (topic `/tasks/oom`). */
export interface TaskOOM {
  container_id: string;
}

/** `containerd.events.TaskExecAdded` (topic `/tasks/exec-added`). */
export interface TaskExecAdded {
  container_id: string;
  exec_id: string;
}

/** `containerd.events.TaskExecStarted` (topic `/tasks/exec-started`). */
export interface TaskExecStarted {
  container_id: string;
  exec_id: string;
  pid: number;
}

/** `containerd.events.TaskPaused` (topic `/tasks/paused`). */
export interface TaskPaused {
  container_id: string;
}

/** `containerd.events.TaskResumed` (topic `/tasks/resumed`). */
export interface TaskResumed {
  container_id: string;
}

/** `containerd.events.TaskCheckpointed` (topic `/tasks/checkpointed`). */
export interface TaskCheckpointed {
  container_id: string;
  checkpoint: string;
}

/** `containerd.services.events.ttrpc.v1.Envelope`. */
export interface Envelope {
  /** Required by containerd. */
  timestamp?: Timestamp;
  namespace: string;
  /** Must start with `/`. */
  topic: string;
  /** type_url = bare full name, e.g. `containerd.events.TaskExit`. */
  event?: Any;
}

/** `containerd.services.events.ttrpc.v1.ForwardRequest`. */
export interface ForwardRequest {
  envelope?: Envelope;
}

let root: protobuf.Root | undefined;
const types = new Map<string, protobuf.Type>();

/** Parses the embedded .proto sources into one root (once). */
function loadRoot(): protobuf.Root {
  if (root) return root;
  const parsed = new protobuf.Root();
  for (const [file, text] of Object.entries(PROTO_SOURCES)) {
    try {
      protobuf.parse(text, parsed, { keepCase: true });
    } catch (err) {
      throw new Error(`cannot parse embedded proto/${file}: ${(err as Error).message}`);
    }
  }
  parsed.resolveAll();
  root = parsed;
  return root;
}

/** Looks up a message type by full name, e.g. `containerd.task.v2.StateResponse`. */
function lookup(typeName: string): protobuf.Type {
  let type = types.get(typeName);
  if (type) return type;
  try {
    type = loadRoot().lookupType(typeName);
  } catch {
    throw new Error(`unknown protobuf message type "${typeName}": not defined in proto/*.proto`);
  }
  types.set(typeName, type);
  return type;
}

/** protobufjs scalar type names that are 64-bit. */
const LONG_TYPES = new Set(["int64", "uint64", "sint64", "fixed64", "sfixed64"]);

/** The proto3 default of a scalar or enum field. */
function scalarDefault(field: protobuf.Field): unknown {
  if (field.resolvedType instanceof protobuf.Enum) return 0;
  switch (field.type) {
    case "string":
      return "";
    case "bool":
      return false;
    case "bytes":
      return new Uint8Array(0);
    default:
      return 0;
  }
}

/** Converts one decoded (non-repeated) value to its plain form. */
function plainValue(field: protobuf.Field, value: unknown): unknown {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return toPlain(resolved, value as protobuf.Message);
  if (LONG_TYPES.has(field.type) && typeof value !== "number") {
    const long = value as protobuf.Long;
    return protobuf.util.LongBits.from(long).toNumber(long.unsigned);
  }
  if (field.type === "bytes") return new Uint8Array(value as Uint8Array);
  return value;
}

/** Converts a decoded protobufjs message into a plain object with proto3 defaults. */
function toPlain(type: protobuf.Type, message: protobuf.Message): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = message as unknown as Record<string, unknown>;
  for (const field of type.fieldsArray) {
    const name = field.name;
    const present = Object.hasOwn(fields, name) && fields[name] != null;
    const value = present ? fields[name] : undefined;
    if (field.map) {
      const map: Record<string, unknown> = {};
      for (const [k, v] of Object.entries((value ?? {}) as Record<string, unknown>)) {
        map[k] = plainValue(field, v);
      }
      out[name] = map;
    } else if (field.repeated) {
      out[name] = ((value ?? []) as unknown[]).map((v) => plainValue(field, v));
    } else if (value !== undefined) {
      out[name] = plainValue(field, value);
    } else if (!(field.resolvedType instanceof protobuf.Type)) {
      out[name] = scalarDefault(field);
    }
  }
  return out;
}

/**
 * Encodes a plain object (snake_case fields, as {@linkcode decode} returns) as the
 * message `typeName`. Throws for an unknown type or a value of the wrong shape.
 */
export function encode(typeName: string, obj: object): Uint8Array {
  const type = lookup(typeName);
  const message = type.fromObject(obj as Record<string, unknown>);
  // An explicit Writer (not Writer.create) yields a plain Uint8Array, never a Node Buffer.
  return type.encode(message, new protobuf.Writer()).finish();
}

/**
 * Decodes `bytes` as the message `typeName` into a plain object (see the module
 * doc). Throws for an unknown type or malformed bytes.
 */
export function decode<T = Record<string, unknown>>(typeName: string, bytes: Uint8Array): T {
  const type = lookup(typeName);
  let message: protobuf.Message;
  try {
    message = type.decode(new protobuf.Reader(bytes));
  } catch (err) {
    throw new Error(`cannot decode ${typeName}: ${(err as Error).message}`);
  }
  return toPlain(type, message) as T;
}
