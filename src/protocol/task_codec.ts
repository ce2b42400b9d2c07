/**
 * A hand-written protobuf codec for the messages the shim server uses on its hot
 * path (the task API and task events), on top of `wire.ts`.
 *
 * Loading protobufjs costs about 90 ms per server process (measured), which every
 * container's Create would wait for; this codec costs nothing to load. It keeps the
 * semantics of `messages.ts` (same type names, snake_case plain objects, proto3
 * defaults filled on decode) and is checked against protobufjs byte for byte in
 * `task_codec_test.ts`.
 *
 * @module
 */

import { ProtoReader, ProtoWriter, WireType } from "./wire.ts";

/** How one field is encoded. A string names a message type of {@linkcode SCHEMAS}. */
type Kind = "string" | "uint32" | "int32" | "int64" | "bool" | "bytes" | { message: string };

/** One field: number, name, kind, repeated. */
type Field = readonly [number, string, Kind, boolean?];

const TIMESTAMP = { message: "google.protobuf.Timestamp" } as const;
const ANY = { message: "google.protobuf.Any" } as const;
const MOUNT = { message: "containerd.types.Mount" } as const;
const T = "containerd.task.v2";
const E = "containerd.events";

const ID_EXEC: readonly Field[] = [[1, "id", "string"], [2, "exec_id", "string"]];
const ID: readonly Field[] = [[1, "id", "string"]];

/** The messages this codec knows, by full name. */
const SCHEMAS: Record<string, readonly Field[]> = {
  "google.protobuf.Timestamp": [[1, "seconds", "int64"], [2, "nanos", "int32"]],
  "google.protobuf.Any": [[1, "type_url", "string"], [2, "value", "bytes"]],
  "google.protobuf.Empty": [],
  "containerd.types.Mount": [
    [1, "type", "string"],
    [2, "source", "string"],
    [3, "target", "string"],
    [4, "options", "string", true],
  ],
  "containerd.v1.types.ProcessInfo": [[1, "pid", "uint32"], [2, "info", ANY]],
  [`${T}.CreateTaskRequest`]: [
    [1, "id", "string"],
    [2, "bundle", "string"],
    [3, "rootfs", MOUNT, true],
    [4, "terminal", "bool"],
    [5, "stdin", "string"],
    [6, "stdout", "string"],
    [7, "stderr", "string"],
    [8, "checkpoint", "string"],
    [9, "parent_checkpoint", "string"],
    [10, "options", ANY],
  ],
  [`${T}.CreateTaskResponse`]: [[1, "pid", "uint32"]],
  [`${T}.StartRequest`]: ID_EXEC,
  [`${T}.StartResponse`]: [[1, "pid", "uint32"]],
  [`${T}.StateRequest`]: ID_EXEC,
  [`${T}.StateResponse`]: [
    [1, "id", "string"],
    [2, "bundle", "string"],
    [3, "pid", "uint32"],
    [4, "status", "int32"],
    [5, "stdin", "string"],
    [6, "stdout", "string"],
    [7, "stderr", "string"],
    [8, "terminal", "bool"],
    [9, "exit_status", "uint32"],
    [10, "exited_at", TIMESTAMP],
    [11, "exec_id", "string"],
  ],
  [`${T}.WaitRequest`]: ID_EXEC,
  [`${T}.WaitResponse`]: [[1, "exit_status", "uint32"], [2, "exited_at", TIMESTAMP]],
  [`${T}.KillRequest`]: [
    [1, "id", "string"],
    [2, "exec_id", "string"],
    [3, "signal", "uint32"],
    [4, "all", "bool"],
  ],
  [`${T}.DeleteRequest`]: ID_EXEC,
  [`${T}.DeleteResponse`]: [
    [1, "pid", "uint32"],
    [2, "exit_status", "uint32"],
    [3, "exited_at", TIMESTAMP],
  ],
  [`${T}.PidsRequest`]: ID,
  [`${T}.PidsResponse`]: [[1, "processes", { message: "containerd.v1.types.ProcessInfo" }, true]],
  [`${T}.PauseRequest`]: ID,
  [`${T}.ResumeRequest`]: ID,
  [`${T}.CloseIORequest`]: [[1, "id", "string"], [2, "exec_id", "string"], [3, "stdin", "bool"]],
  [`${T}.ConnectRequest`]: ID,
  [`${T}.ConnectResponse`]: [
    [1, "shim_pid", "uint32"],
    [2, "task_pid", "uint32"],
    [3, "version", "string"],
  ],
  [`${T}.ShutdownRequest`]: [[1, "id", "string"], [2, "now", "bool"]],
  [`${E}.TaskIO`]: [
    [1, "stdin", "string"],
    [2, "stdout", "string"],
    [3, "stderr", "string"],
    [4, "terminal", "bool"],
  ],
  [`${E}.TaskCreate`]: [
    [1, "container_id", "string"],
    [2, "bundle", "string"],
    [3, "rootfs", MOUNT, true],
    [4, "io", { message: `${E}.TaskIO` }],
    [5, "checkpoint", "string"],
    [6, "pid", "uint32"],
  ],
  [`${E}.TaskStart`]: [[1, "container_id", "string"], [2, "pid", "uint32"]],
  [`${E}.TaskExit`]: [
    [1, "container_id", "string"],
    [2, "id", "string"],
    [3, "pid", "uint32"],
    [4, "exit_status", "uint32"],
    [5, "exited_at", TIMESTAMP],
  ],
  [`${E}.TaskDelete`]: [
    [1, "container_id", "string"],
    [2, "pid", "uint32"],
    [3, "exit_status", "uint32"],
    [4, "exited_at", TIMESTAMP],
    [5, "id", "string"],
  ],
  [`${E}.TaskOOM`]: [[1, "container_id", "string"]],
  [`${E}.TaskPaused`]: [[1, "container_id", "string"]],
  [`${E}.TaskResumed`]: [[1, "container_id", "string"]],
  "containerd.services.events.ttrpc.v1.Envelope": [
    [1, "timestamp", TIMESTAMP],
    [2, "namespace", "string"],
    [3, "topic", "string"],
    [4, "event", ANY],
  ],
  "containerd.services.events.ttrpc.v1.ForwardRequest": [
    [1, "envelope", { message: "containerd.services.events.ttrpc.v1.Envelope" }],
  ],
};

const utf8 = new TextEncoder();

function schema(typeName: string): readonly Field[] {
  const fields = SCHEMAS[typeName];
  if (fields === undefined) throw new Error(`task codec: unknown message type ${typeName}`);
  return fields;
}

/** True if the codec knows `typeName`. */
export function hasMessage(typeName: string): boolean {
  return typeName in SCHEMAS;
}

function writeOne(w: ProtoWriter, num: number, kind: Kind, value: unknown, always: boolean) {
  if (typeof kind === "object") {
    w.message(num, encodeMessage(kind.message, value as Record<string, unknown>));
    return;
  }
  switch (kind) {
    case "string":
      if (always) w.message(num, utf8.encode(value as string));
      else w.string(num, value as string);
      return;
    case "bytes":
      if (always) w.message(num, value as Uint8Array);
      else w.bytes(num, value as Uint8Array);
      return;
    case "uint32":
      w.uint32(num, value as number);
      return;
    case "int32":
      w.int32(num, value as number);
      return;
    case "int64":
      w.int64(num, value as number);
      return;
    case "bool":
      w.bool(num, value as boolean);
      return;
  }
}

/** Encodes `obj` as the message `typeName` (proto3: default values are omitted). */
export function encodeMessage(typeName: string, obj: Record<string, unknown>): Uint8Array {
  const w = new ProtoWriter();
  for (const [num, name, kind, repeated] of schema(typeName)) {
    const value = obj?.[name];
    if (value === undefined || value === null) continue;
    if (repeated) {
      for (const item of value as unknown[]) writeOne(w, num, kind, item, true);
    } else {
      writeOne(w, num, kind, value, false);
    }
  }
  return w.finish();
}

function defaultOf(kind: Kind, repeated: boolean | undefined): unknown {
  if (repeated) return [];
  if (typeof kind === "object") return undefined;
  switch (kind) {
    case "string":
      return "";
    case "bytes":
      return new Uint8Array(0);
    case "bool":
      return false;
    default:
      return 0;
  }
}

function readOne(r: ProtoReader, kind: Kind, wireType: number): unknown {
  if (typeof kind === "object") {
    if (wireType !== WireType.LEN) throw new Error("expected a length-delimited message");
    return decodeMessage(kind.message, r.bytes());
  }
  const expected = kind === "string" || kind === "bytes" ? WireType.LEN : WireType.VARINT;
  if (wireType !== expected) throw new Error(`wire type ${wireType} for a ${kind} field`);
  switch (kind) {
    case "string":
      return r.string();
    case "bytes":
      return r.bytes().slice();
    case "uint32":
      return r.uint32();
    case "int32":
      return r.int32();
    case "int64":
      return r.int64();
    case "bool":
      return r.bool();
  }
}

/**
 * Decodes `bytes` as the message `typeName` into a plain object with every field
 * present (proto3 defaults; sub-messages stay undefined when absent). Unknown
 * fields are skipped.
 *
 * @throws {Error} naming the message and the field when the bytes are malformed
 */
export function decodeMessage<T = Record<string, unknown>>(typeName: string, bytes: Uint8Array): T {
  const fields = schema(typeName);
  const out: Record<string, unknown> = {};
  for (const [, name, kind, repeated] of fields) {
    const value = defaultOf(kind, repeated);
    if (value !== undefined) out[name] = value;
  }
  const r = new ProtoReader(bytes);
  try {
    for (let tag = r.next(); tag !== undefined; tag = r.next()) {
      const field = fields.find((f) => f[0] === tag.field);
      if (field === undefined) {
        r.skip(tag.wireType);
        continue;
      }
      const [, name, kind, repeated] = field;
      const value = readOne(r, kind, tag.wireType);
      if (repeated) (out[name] as unknown[]).push(value);
      else out[name] = value;
    }
  } catch (err) {
    throw new Error(`cannot decode ${typeName}: ${(err as Error).message}`);
  }
  return out as T;
}
