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

/**
 * How one field is encoded. `{ message }` names a message type of {@linkcode SCHEMAS};
 * `string_map` is a `map<string, string>`. Repeated numeric fields are packed (proto3).
 */
type Kind =
  | "string"
  | "uint32"
  | "int32"
  | "int64"
  | "uint64"
  | "bool"
  | "bytes"
  | "string_map"
  | { message: string };

/** The kinds that are varints on the wire (packed when repeated). */
const VARINT_KINDS: ReadonlySet<Kind> = new Set<Kind>([
  "uint32",
  "int32",
  "int64",
  "uint64",
  "bool",
]);

/** One field: number, name, kind, repeated. */
type Field = readonly [number, string, Kind, boolean?];

const TIMESTAMP = { message: "google.protobuf.Timestamp" } as const;
const ANY = { message: "google.protobuf.Any" } as const;
const MOUNT = { message: "containerd.types.Mount" } as const;
const T = "containerd.task.v2";
const E = "containerd.events";
const CG1 = "io.containerd.cgroups.v1";
const CG2 = "io.containerd.cgroups.v2";

/** `uint64` fields named `names`, numbered from `first`. */
function uint64s(first: number, names: readonly string[]): Field[] {
  return names.map((name, i) => [first + i, name, "uint64"] as const);
}

/**
 * The fields of `io.containerd.cgroups.v2.MemoryStat` that are cgroup v2 `memory.stat`
 * keys of the same name, in field order (fields 1..N); the task layer reads them.
 */
export const CGROUPS_V2_MEMORY_STAT_KEYS = [
  "anon",
  "file",
  "kernel_stack",
  "slab",
  "sock",
  "shmem",
  "file_mapped",
  "file_dirty",
  "file_writeback",
  "anon_thp",
  "inactive_anon",
  "active_anon",
  "inactive_file",
  "active_file",
  "unevictable",
  "slab_reclaimable",
  "slab_unreclaimable",
  "pgfault",
  "pgmajfault",
  "workingset_refault",
  "workingset_activate",
  "workingset_nodereclaim",
  "pgrefill",
  "pgscan",
  "pgsteal",
  "pgactivate",
  "pgdeactivate",
  "pglazyfree",
  "pglazyfreed",
  "thp_fault_alloc",
  "thp_collapse_alloc",
] as const;

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
  [`${T}.StatsRequest`]: ID,
  [`${T}.StatsResponse`]: [[1, "stats", ANY]],
  [`${T}.UpdateTaskRequest`]: [
    [1, "id", "string"],
    [2, "resources", ANY],
    [3, "annotations", "string_map"],
  ],
  // Stats payloads: containerd/cgroups stats/v1 and cgroup2/stats metrics.proto (subset).
  [`${CG1}.Metrics`]: [
    [2, "pids", { message: `${CG1}.PidsStat` }],
    [3, "cpu", { message: `${CG1}.CPUStat` }],
    [4, "memory", { message: `${CG1}.MemoryStat` }],
    [9, "memory_oom_control", { message: `${CG1}.MemoryOomControl` }],
  ],
  [`${CG1}.PidsStat`]: uint64s(1, ["current", "limit"]),
  [`${CG1}.CPUStat`]: [
    [1, "usage", { message: `${CG1}.CPUUsage` }],
    [2, "throttling", { message: `${CG1}.Throttle` }],
  ],
  [`${CG1}.CPUUsage`]: [...uint64s(1, ["total", "kernel", "user"]), [4, "per_cpu", "uint64", true]],
  [`${CG1}.Throttle`]: uint64s(1, ["periods", "throttled_periods", "throttled_time"]),
  [`${CG1}.MemoryStat`]: [
    ...uint64s(1, [
      "cache",
      "rss",
      "rss_huge",
      "mapped_file",
      "dirty",
      "writeback",
      "pg_pg_in",
      "pg_pg_out",
      "pg_fault",
      "pg_maj_fault",
      "inactive_anon",
      "active_anon",
      "inactive_file",
      "active_file",
      "unevictable",
      "hierarchical_memory_limit",
      "hierarchical_swap_limit",
      "total_cache",
      "total_rss",
      "total_rss_huge",
      "total_mapped_file",
      "total_dirty",
      "total_writeback",
      "total_pg_pg_in",
      "total_pg_pg_out",
      "total_pg_fault",
      "total_pg_maj_fault",
      "total_inactive_anon",
      "total_active_anon",
      "total_inactive_file",
      "total_active_file",
      "total_unevictable",
    ]),
    [33, "usage", { message: `${CG1}.MemoryEntry` }],
    [34, "swap", { message: `${CG1}.MemoryEntry` }],
    [35, "kernel", { message: `${CG1}.MemoryEntry` }],
    [36, "kernel_tcp", { message: `${CG1}.MemoryEntry` }],
  ],
  [`${CG1}.MemoryEntry`]: uint64s(1, ["limit", "usage", "max", "failcnt"]),
  [`${CG1}.MemoryOomControl`]: uint64s(1, ["oom_kill_disable", "under_oom", "oom_kill"]),
  [`${CG2}.Metrics`]: [
    [1, "pids", { message: `${CG2}.PidsStat` }],
    [2, "cpu", { message: `${CG2}.CPUStat` }],
    [4, "memory", { message: `${CG2}.MemoryStat` }],
    [8, "memory_events", { message: `${CG2}.MemoryEvents` }],
  ],
  [`${CG2}.PidsStat`]: uint64s(1, ["current", "limit"]),
  [`${CG2}.CPUStat`]: uint64s(1, [
    "usage_usec",
    "user_usec",
    "system_usec",
    "nr_periods",
    "nr_throttled",
    "throttled_usec",
  ]),
  [`${CG2}.MemoryStat`]: uint64s(1, [
    ...CGROUPS_V2_MEMORY_STAT_KEYS,
    "usage",
    "usage_limit",
    "swap_usage",
    "swap_limit",
    "max_usage",
    "swap_max_usage",
  ]),
  [`${CG2}.MemoryEvents`]: uint64s(1, ["low", "high", "max", "oom", "oom_kill"]),
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
    case "uint64":
      w.int64(num, uint64Value(num, value));
      return;
    case "bool":
      w.bool(num, value as boolean);
      return;
    case "string_map":
      for (const [k, v] of Object.entries(value as Record<string, string>)) {
        // Map entries carry both key and value, even when empty (as protobufjs and Go).
        const entry = new ProtoWriter().message(1, utf8.encode(k)).message(2, utf8.encode(v));
        w.message(num, entry.finish());
      }
      return;
  }
}

/** The largest uint64. */
const UINT64_MAX = (1n << 64n) - 1n;

/** A uint64 value (number or bigint), checked. */
function uint64Value(num: number, value: unknown): number | bigint {
  const ok = typeof value === "bigint"
    ? value >= 0n && value <= UINT64_MAX
    : Number.isSafeInteger(value) && (value as number) >= 0;
  if (!ok) throw new RangeError(`uint64 field ${num}: ${value} is outside 0..2^64-1`);
  return value as number | bigint;
}

/** The varint bytes of one value (negative numbers as 64-bit two's complement). */
function varintBytes(value: number | bigint | boolean, out: number[]): void {
  let big = BigInt.asUintN(64, BigInt(value));
  while (big > 0x7fn) {
    out.push(Number(big & 0x7fn) | 0x80);
    big >>= 7n;
  }
  out.push(Number(big));
}

/** Reads the packed varints of `bytes` as `kind` values. */
function unpack(bytes: Uint8Array, kind: Kind): unknown[] {
  const out: unknown[] = [];
  let big = 0n;
  let shift = 0n;
  for (const b of bytes) {
    big |= BigInt(b & 0x7f) << shift;
    shift += 7n;
    if (b & 0x80) {
      if (shift >= 70n) throw new Error("packed varint longer than 10 bytes");
      continue;
    }
    const u = BigInt.asUintN(64, big);
    switch (kind) {
      case "bool":
        out.push(u !== 0n);
        break;
      case "uint32":
        out.push(Number(BigInt.asUintN(32, u)));
        break;
      case "int32":
        out.push(Number(BigInt.asIntN(32, u)));
        break;
      case "int64":
        out.push(Number(BigInt.asIntN(64, u)));
        break;
      default:
        out.push(Number(u));
    }
    big = 0n;
    shift = 0n;
  }
  if (shift !== 0n) throw new Error("truncated packed varint");
  return out;
}

/** Encodes `obj` as the message `typeName` (proto3: default values are omitted). */
export function encodeMessage(typeName: string, obj: Record<string, unknown>): Uint8Array {
  const w = new ProtoWriter();
  for (const [num, name, kind, repeated] of schema(typeName)) {
    const value = obj?.[name];
    if (value === undefined || value === null) continue;
    if (repeated && VARINT_KINDS.has(kind)) {
      const items = value as (number | bigint | boolean)[];
      if (items.length === 0) continue;
      const packed: number[] = [];
      for (const item of items) {
        varintBytes(kind === "uint64" ? uint64Value(num, item) : item, packed);
      }
      w.message(num, new Uint8Array(packed));
    } else if (repeated) {
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
    case "string_map":
      return {};
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
  const expected = kind === "string" || kind === "bytes" || kind === "string_map"
    ? WireType.LEN
    : WireType.VARINT;
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
    case "uint64":
      return r.uint64();
    case "bool":
      return r.bool();
    case "string_map":
      return readMapEntry(r.bytes());
  }
}

/** Reads one `map<string, string>` entry. */
function readMapEntry(bytes: Uint8Array): [string, string] {
  const r = new ProtoReader(bytes);
  let key = "";
  let value = "";
  for (let tag = r.next(); tag !== undefined; tag = r.next()) {
    if (tag.field === 1 && tag.wireType === WireType.LEN) key = r.string();
    else if (tag.field === 2 && tag.wireType === WireType.LEN) value = r.string();
    else r.skip(tag.wireType);
  }
  return [key, value];
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
      if (repeated && VARINT_KINDS.has(kind) && tag.wireType === WireType.LEN) {
        (out[name] as unknown[]).push(...unpack(r.bytes(), kind));
        continue;
      }
      const value = readOne(r, kind, tag.wireType);
      if (kind === "string_map") {
        const [k, v] = value as [string, string];
        (out[name] as Record<string, string>)[k] = v;
      } else if (repeated) (out[name] as unknown[]).push(value);
      else out[name] = value;
    }
  } catch (err) {
    throw new Error(`cannot decode ${typeName}: ${(err as Error).message}`);
  }
  return out as T;
}
