import assert from "node:assert/strict";
/**
 * The task API's messages, events and Stats payloads through the generated codecs
 * (`gen/`), against protobufjs: samples as containerd sends and reads them.
 */
import { decode, encode } from "./messages.ts";
import * as cgroupsV1 from "./gen/cgroups_v1_metrics.ts";
import * as cgroupsV2 from "./gen/cgroups_v2_metrics.ts";
import * as events from "./gen/events.ts";
import * as eventsService from "./gen/events_service.ts";
import * as task from "./gen/task.ts";
import * as wellKnown from "./gen/well_known.ts";
import { ProtoDecodeError } from "./wire.ts";

/** The generated module of each package these samples use. */
const MODULES: Record<string, Record<string, unknown>> = {
  "containerd.task.v2": task,
  "containerd.events": events,
  "containerd.services.events.ttrpc.v1": eventsService,
  "google.protobuf": wellKnown,
  "io.containerd.cgroups.v1": cgroupsV1,
  "io.containerd.cgroups.v2": cgroupsV2,
};

/** The generated encoder and decoder of the message `typeName`, e.g. `containerd.events.TaskExit`. */
function codec(typeName: string) {
  const dot = typeName.lastIndexOf(".");
  const mod = MODULES[typeName.slice(0, dot)] ?? {};
  const name = typeName.slice(dot + 1);
  return {
    encode: mod[`encode${name}`] as ((message: unknown) => Uint8Array) | undefined,
    decode: mod[`decode${name}`] as (<T>(bytes: Uint8Array) => T) | undefined,
  };
}

function encodeMessage(typeName: string, message: unknown): Uint8Array {
  return codec(typeName).encode!(message);
}

function decodeMessage<T = Record<string, unknown>>(typeName: string, bytes: Uint8Array): T {
  return codec(typeName).decode!<T>(bytes);
}

const ts = { seconds: 1795466792, nanos: 960819959 };
const mount = { type: "overlay", source: "overlay", target: "", options: ["lowerdir=/a", ""] };
const any = { type_url: "containerd.events.TaskExit", value: new Uint8Array([1, 2, 3]) };

/** A sample with a non-default value in every field, per message. */
const SAMPLES: Record<string, Record<string, unknown>> = {
  "containerd.task.v2.CreateTaskRequest": {
    id: "t1",
    bundle: "/b",
    rootfs: [mount, { type: "bind", source: "/s", target: "x", options: ["rbind", "rw"] }],
    terminal: true,
    stdin: "/i",
    stdout: "/o",
    stderr: "/e",
    checkpoint: "c",
    parent_checkpoint: "p",
    options: any,
  },
  "containerd.task.v2.CreateTaskResponse": { pid: 4294967295 },
  "containerd.task.v2.StartRequest": { id: "t1", exec_id: "e" },
  "containerd.task.v2.StartResponse": { pid: 12 },
  "containerd.task.v2.StateRequest": { id: "t1", exec_id: "e" },
  "containerd.task.v2.StateResponse": {
    id: "t1",
    bundle: "/b",
    pid: 9,
    status: 3,
    stdin: "i",
    stdout: "o",
    stderr: "e",
    terminal: true,
    exit_status: 137,
    exited_at: ts,
    exec_id: "x",
  },
  "containerd.task.v2.WaitRequest": { id: "t1", exec_id: "" },
  "containerd.task.v2.WaitResponse": { exit_status: 7, exited_at: ts },
  "containerd.task.v2.KillRequest": { id: "t1", exec_id: "e", signal: 9, all: true },
  "containerd.task.v2.DeleteRequest": { id: "t1", exec_id: "e" },
  "containerd.task.v2.DeleteResponse": { pid: 137, exit_status: 137, exited_at: ts },
  "containerd.task.v2.PidsRequest": { id: "t1" },
  "containerd.task.v2.PidsResponse": { processes: [{ pid: 1, info: any }, { pid: 2 }] },
  "containerd.task.v2.PauseRequest": { id: "t1" },
  "containerd.task.v2.ResumeRequest": { id: "t1" },
  "containerd.task.v2.CloseIORequest": { id: "t1", exec_id: "e", stdin: true },
  "containerd.task.v2.ConnectRequest": { id: "t1" },
  "containerd.task.v2.ConnectResponse": { shim_pid: 1, task_pid: 2, version: "v" },
  "containerd.task.v2.ShutdownRequest": { id: "t1", now: true },
  "containerd.events.TaskCreate": {
    container_id: "c",
    bundle: "/b",
    rootfs: [mount],
    io: { stdin: "i", stdout: "o", stderr: "e", terminal: true },
    checkpoint: "k",
    pid: 3,
  },
  "containerd.events.TaskStart": { container_id: "c", pid: 3 },
  "containerd.events.TaskExit": {
    container_id: "c",
    id: "c",
    pid: 3,
    exit_status: 42,
    exited_at: ts,
  },
  "containerd.events.TaskDelete": {
    container_id: "c",
    pid: 3,
    exit_status: 42,
    exited_at: ts,
    id: "e",
  },
  "containerd.events.TaskOOM": { container_id: "c" },
  "containerd.events.TaskPaused": { container_id: "c" },
  "containerd.events.TaskResumed": { container_id: "c" },
  "containerd.services.events.ttrpc.v1.ForwardRequest": {
    envelope: { timestamp: ts, namespace: "ns", topic: "/tasks/exit", event: any },
  },
  "google.protobuf.Timestamp": { seconds: -5, nanos: 1 },
  "containerd.task.v2.StatsRequest": { id: "t1" },
  "containerd.task.v2.StatsResponse": { stats: any },
  "containerd.task.v2.UpdateTaskRequest": {
    id: "t1",
    resources: { type_url: "types.containerd.io/x", value: new Uint8Array([123, 125]) },
    annotations: { a: "1", "": "", b: "" },
  },
  "io.containerd.cgroups.v1.Metrics": {
    pids: { current: 3, limit: 100 },
    cpu: {
      usage: { total: 2 ** 40, kernel: 10, user: 20, per_cpu: [1, 0, 2 ** 35] },
      throttling: { periods: 1, throttled_periods: 2, throttled_time: 3 },
    },
    memory: {
      cache: 1,
      rss: 2,
      pg_maj_fault: 10,
      total_unevictable: 32,
      usage: { limit: 67108864, usage: 4096, max: 8192, failcnt: 7 },
      swap: { limit: 1, usage: 2, max: 3, failcnt: 4 },
      kernel: { limit: 0, usage: 5, max: 0, failcnt: 0 },
      kernel_tcp: {},
    },
    memory_oom_control: { oom_kill_disable: 0, under_oom: 1, oom_kill: 2 },
  },
  "io.containerd.cgroups.v2.Metrics": {
    pids: { current: 1, limit: 2 },
    cpu: {
      usage_usec: 1,
      user_usec: 2,
      system_usec: 3,
      nr_periods: 4,
      nr_throttled: 5,
      throttled_usec: 6,
    },
    memory: { anon: 1, thp_collapse_alloc: 31, usage: 32, usage_limit: 33, swap_max_usage: 37 },
    memory_events: { low: 1, high: 2, max: 3, oom: 4, oom_kill: 5 },
  },
};

for (const [type, sample] of Object.entries(SAMPLES)) {
  Deno.test(`generated ${type}: same bytes as protobufjs, same decoded object`, () => {
    assert.ok(codec(type).encode !== undefined && codec(type).decode !== undefined, type);
    const ours = encodeMessage(type, sample);
    const reference = encode(type, sample);
    assert.deepEqual(ours, reference);
    assert.deepEqual(decodeMessage(type, reference), decode(type, reference));
    // All defaults: empty bytes, and defaults filled the same way.
    assert.deepEqual(encodeMessage(type, {}), encode(type, {}));
    assert.deepEqual(decodeMessage(type, new Uint8Array()), decode(type, new Uint8Array()));
  });
}

Deno.test("generated codecs: malformed bytes are clear errors", () => {
  assert.throws(
    () => task.decodeCreateTaskRequest(new Uint8Array([0x0a, 0x05, 0x61])),
    (err: Error) =>
      err instanceof ProtoDecodeError &&
      /length 5 at offset 1 runs past the end of the 3-byte message/.test(err.message),
  );
  assert.throws(
    () => task.decodeStartRequest(new Uint8Array([0x08, 0x01])),
    /containerd\.task\.v2\.StartRequest field 1 has wire type 0, want 2/,
  );
  // Unknown fields are skipped.
  assert.deepEqual(
    decodeMessage(
      "containerd.task.v2.ConnectRequest",
      new Uint8Array([0x0a, 0x01, 0x61, 0x50, 0x01]),
    ),
    { id: "a" },
  );
});

Deno.test("generated codecs: uint64 takes bigints up to 2^64-1; packed repeated fields decode both ways", () => {
  const max = (1n << 64n) - 1n;
  const bytes = encodeMessage("io.containerd.cgroups.v2.PidsStat", { current: 5n, limit: max });
  assert.deepEqual(bytes, new Uint8Array([0x08, 5, 0x10, ...Array(9).fill(0xff), 0x01]));
  // protobufjs (from the .proto) reads the same value (as a number: 2^64 rounded).
  assert.deepEqual(decode("io.containerd.cgroups.v2.PidsStat", bytes), {
    current: 5,
    limit: 2 ** 64,
  });
  assert.throws(
    () => encodeMessage("io.containerd.cgroups.v2.PidsStat", { current: -1 }),
    /uint64 field 1: -1 is outside/,
  );
  assert.throws(
    () => encodeMessage("io.containerd.cgroups.v2.PidsStat", { current: max + 1n }),
    /uint64 field 1/,
  );
  // per_cpu is packed; an unpacked encoding (older writers) decodes the same.
  const type = "io.containerd.cgroups.v1.CPUUsage";
  const packed = encodeMessage(type, { per_cpu: [1n, 300n] });
  assert.deepEqual(packed, new Uint8Array([0x22, 3, 1, 0xac, 0x02]));
  const unpacked = new Uint8Array([0x20, 1, 0x20, 0xac, 0x02]);
  assert.deepEqual(decodeMessage(type, unpacked), decodeMessage(type, packed));
  assert.deepEqual(decodeMessage<{ per_cpu: number[] }>(type, packed).per_cpu, [1, 300]);
});
