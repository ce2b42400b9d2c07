import assert from "node:assert/strict";
import { decode, encode } from "./messages.ts";
import { decodeMessage, encodeMessage, hasMessage } from "./task_codec.ts";

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
};

for (const [type, sample] of Object.entries(SAMPLES)) {
  Deno.test(`task codec ${type}: same bytes as protobufjs, same decoded object`, () => {
    assert.ok(hasMessage(type));
    const ours = encodeMessage(type, sample);
    const reference = encode(type, sample);
    assert.deepEqual(ours, reference);
    assert.deepEqual(decodeMessage(type, reference), decode(type, reference));
    // All defaults: empty bytes, and defaults filled the same way.
    assert.deepEqual(encodeMessage(type, {}), encode(type, {}));
    assert.deepEqual(decodeMessage(type, new Uint8Array()), decode(type, new Uint8Array()));
  });
}

Deno.test("task codec: unknown types and malformed bytes are clear errors", () => {
  assert.throws(() => encodeMessage("x.Y", {}), /unknown message type x\.Y/);
  assert.throws(
    () => decodeMessage("containerd.task.v2.CreateTaskRequest", new Uint8Array([0x0a, 0x05, 0x61])),
    /cannot decode containerd\.task\.v2\.CreateTaskRequest/,
  );
  assert.throws(
    () => decodeMessage("containerd.task.v2.StartRequest", new Uint8Array([0x08, 0x01])),
    /cannot decode .*wire type 0 for a string field/,
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
