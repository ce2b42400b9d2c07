import assert from "node:assert/strict";
import { encodeFrame, MessageType } from "../ttrpc/frame.ts";
import { decode, encode } from "./messages.ts";
import { PROTO_SOURCES } from "./proto_sources.ts";
import { allMessages, resolveFiles } from "../../scripts/gen_proto.ts";
import type {
  ConnectResponse,
  CreateTaskRequest,
  DeleteResponse,
  PidsResponse,
  StateResponse,
  UpdateTaskRequest,
} from "./gen/task.ts";
import type { ForwardRequest } from "./gen/events_service.ts";
import type { RuntimeInfo } from "./gen/types.ts";
import { Status } from "./gen/task_types.ts";

/** Bytes from a doc-style dump: hex pairs and "quoted ASCII". */
function bytesOf(dump: string): Uint8Array {
  const out: number[] = [];
  for (const token of dump.match(/"[^"]*"|[0-9a-f]{2}/gi) ?? []) {
    if (token.startsWith('"')) out.push(...new TextEncoder().encode(token.slice(1, -1)));
    else out.push(parseInt(token, 16));
  }
  return new Uint8Array(out);
}

function frameOf(data: Uint8Array, streamId: number, type: number): Uint8Array {
  return encodeFrame(streamId, type, 0, data);
}

Deno.test("doc §1.7: the Connect request frame", () => {
  const expected = bytesOf(`00 00 00 28  00 00 00 03  01  00
    0a 17 "containerd.task.v2.Task" 12 07 "Connect" 1a 04 0a 02 "t1"`);
  const payload = encode("containerd.task.v2.ConnectRequest", { id: "t1" });
  const request = encode("ttrpc.Request", {
    service: "containerd.task.v2.Task",
    method: "Connect",
    payload,
  });
  assert.deepEqual(frameOf(request, 3, MessageType.REQUEST), expected);
  const decoded = decode<{ service: string; method: string; payload: Uint8Array }>(
    "ttrpc.Request",
    expected.subarray(10),
  );
  assert.equal(decoded.service, "containerd.task.v2.Task");
  assert.equal(decoded.method, "Connect");
  assert.deepEqual(decode("containerd.task.v2.ConnectRequest", decoded.payload), { id: "t1" });
});

Deno.test("doc §1.7: the Connect success response frame carries the payload only", () => {
  const expected = bytesOf(`00 00 00 0f  00 00 00 03  02  00
    12 0d 08 8d 65 10 90 65 1a 05 "probe"`);
  const payload = encode("containerd.task.v2.ConnectResponse", {
    shim_pid: 12941,
    task_pid: 12944,
    version: "probe",
  });
  assert.deepEqual(frameOf(encode("ttrpc.Response", { payload }), 3, 2), expected);
  const response = decode<{ status?: unknown; payload: Uint8Array }>(
    "ttrpc.Response",
    expected.subarray(10),
  );
  assert.equal(response.status, undefined);
  assert.deepEqual(
    decode<ConnectResponse>("containerd.task.v2.ConnectResponse", response.payload),
    {
      shim_pid: 12941,
      task_pid: 12944,
      version: "probe",
    },
  );
});

Deno.test("doc §1.7: the NOT_FOUND error frame", () => {
  const expected = bytesOf(
    `00 00 00 26 00 00 00 05 02 00 0a 24 08 05 12 20 "container not created: not found"`,
  );
  const response = encode("ttrpc.Response", {
    status: { code: 5, message: "container not created: not found" },
  });
  assert.deepEqual(frameOf(response, 5, MessageType.RESPONSE), expected);
  assert.deepEqual(decode("ttrpc.Response", expected.subarray(10)), {
    status: { code: 5, message: "container not created: not found", details: [] },
    payload: new Uint8Array(0),
  });
});

Deno.test("doc §2.9: the delete action's DeleteResponse is exit_status 137, pid 0", () => {
  const bytes = bytesOf("10 89 01 1a 0b 08 a9 cc 92 d8 06 10 b6 99 be 33");
  const res = decode<DeleteResponse>("containerd.task.v2.DeleteResponse", bytes);
  // Field 1 (pid) is absent; `10 89 01` is field 2 (exit_status) = 137.
  assert.deepEqual(res, {
    pid: 0,
    exit_status: 137,
    exited_at: { seconds: 1795466793, nanos: 107973814 },
  });
  assert.deepEqual(encode("containerd.task.v2.DeleteResponse", res), bytes);
});

Deno.test("doc §4.3: the Forward frame of a TaskExit event (203 bytes)", () => {
  const ts = { seconds: 1795466468, nanos: 774000000 };
  const event = encode("containerd.events.TaskExit", {
    container_id: "t1",
    id: "t1",
    pid: 12944,
    exit_status: 7,
    exited_at: ts,
  });
  const forward: ForwardRequest = {
    envelope: {
      timestamp: ts,
      namespace: "probe",
      topic: "/tasks/exit",
      event: { type_url: "containerd.events.TaskExit", value: event },
    },
  };
  const request = encode("ttrpc.Request", {
    service: "containerd.services.events.ttrpc.v1.Events",
    method: "Forward",
    payload: encode("containerd.services.events.ttrpc.v1.ForwardRequest", forward),
    timeout_nano: 5_000_000_000,
    metadata: [{ key: "containerd-namespace-ttrpc", value: "probe" }],
  });
  const frame = frameOf(request, 5, MessageType.REQUEST);
  const timestamp = "0a 0c 08 e4 c9 92 d8 06 10 80 9b 89 f1 02";
  const expected = bytesOf(`00 00 00 c1 00 00 00 05 01 00
    0a 2a "containerd.services.events.ttrpc.v1.Events" 12 07 "Forward"
    1a 5f 0a 5d ${timestamp} 12 05 "probe" 1a 0b "/tasks/exit"
    22 39 0a 1a "containerd.events.TaskExit" 12 1b 0a 02 "t1" 12 02 "t1" 18 90 65 20 07
    2a 0c 08 e4 c9 92 d8 06 10 80 9b 89 f1 02
    20 80 e4 97 d0 12 2a 23 0a 1a "containerd-namespace-ttrpc" 12 05 "probe"`);
  assert.equal(frame.length, 203);
  assert.deepEqual(frame, expected);
  const payload = decode<{ payload: Uint8Array }>("ttrpc.Request", request).payload;
  assert.deepEqual(
    decode<ForwardRequest>("containerd.services.events.ttrpc.v1.ForwardRequest", payload),
    forward,
  );
});

Deno.test("CreateTaskRequest round-trips with mounts and options", () => {
  const req: CreateTaskRequest = {
    id: "demo",
    bundle: "/run/containerd/io.containerd.runtime.v2.task/default/demo",
    rootfs: [
      { type: "bind", source: "/var/lib/snap/1/fs", target: "", options: ["rbind", "rw"] },
      { type: "overlay", source: "overlay", target: "/x", options: ["lowerdir=/a"] },
    ],
    terminal: true,
    stdin: "",
    stdout: "/run/fifo/stdout",
    stderr: "/run/fifo/stderr",
    checkpoint: "",
    parent_checkpoint: "",
    options: { type_url: "io.containerd.wasmtime.v1.Options", value: new Uint8Array([1, 2, 3]) },
  };
  const decoded = decode<CreateTaskRequest>(
    "containerd.task.v2.CreateTaskRequest",
    encode("containerd.task.v2.CreateTaskRequest", req),
  );
  assert.deepEqual(decoded, req);
  assert.ok(Object.getPrototypeOf(decoded.options!.value) === Uint8Array.prototype);
});

Deno.test("field numbers follow the doc (spot checks on the encoded tags)", () => {
  // CreateTaskRequest.options = 10 → tag (10<<3)|2 = 0x52.
  assert.deepEqual(
    encode("containerd.task.v2.CreateTaskRequest", { options: { type_url: "t" } }),
    bytesOf('52 03 0a 01 "t"'),
  );
  // StateResponse: status = 4 (enum varint), exec_id = 11, exited_at = 10.
  assert.deepEqual(
    encode("containerd.task.v2.StateResponse", {
      status: Status.STOPPED,
      exec_id: "e",
      exited_at: { seconds: 1 },
    }),
    bytesOf('20 03 52 02 08 01 5a 01 "e"'),
  );
  // KillRequest: signal = 3, all = 4.
  assert.deepEqual(
    encode("containerd.task.v2.KillRequest", { signal: 9, all: true }),
    bytesOf("18 09 20 01"),
  );
  // TaskCreate.pid = 6, TaskDelete.id = 5, Envelope.event = 4.
  assert.deepEqual(encode("containerd.events.TaskCreate", { pid: 1 }), bytesOf("30 01"));
  assert.deepEqual(encode("containerd.events.TaskDelete", { id: "x" }), bytesOf('2a 01 "x"'));
  assert.deepEqual(
    encode("containerd.services.events.ttrpc.v1.Envelope", { event: {} }),
    bytesOf("22 00"),
  );
  // Request.timeout_nano = 4, metadata = 5.
  assert.deepEqual(
    encode("ttrpc.Request", { timeout_nano: 1, metadata: [{ key: "k" }] }),
    bytesOf('20 01 2a 03 0a 01 "k"'),
  );
});

Deno.test("StateResponse round-trips with enum status and timestamp", () => {
  const res: StateResponse = {
    id: "demo",
    bundle: "/b",
    pid: 4242,
    status: Status.STOPPED,
    stdin: "",
    stdout: "/o",
    stderr: "/e",
    terminal: false,
    exit_status: 7,
    exited_at: { seconds: 1_700_000_000, nanos: 5 },
    exec_id: "",
  };
  assert.deepEqual(
    decode("containerd.task.v2.StateResponse", encode("containerd.task.v2.StateResponse", res)),
    res,
  );
});

Deno.test("decode fills proto3 defaults and leaves absent sub-messages undefined", () => {
  assert.deepEqual(decode("containerd.task.v2.StateResponse", new Uint8Array(0)), {
    id: "",
    bundle: "",
    pid: 0,
    status: 0,
    stdin: "",
    stdout: "",
    stderr: "",
    terminal: false,
    exit_status: 0,
    exec_id: "",
  });
  assert.deepEqual(decode("containerd.task.v2.PidsResponse", new Uint8Array(0)), { processes: [] });
  assert.deepEqual(decode("containerd.task.v2.UpdateTaskRequest", new Uint8Array(0)), {
    id: "",
    annotations: {},
  });
  assert.deepEqual(decode("google.protobuf.Any", new Uint8Array(0)), {
    type_url: "",
    value: new Uint8Array(0),
  });
  assert.deepEqual(decode("google.protobuf.Empty", new Uint8Array(0)), {});
});

Deno.test("encode omits default values (proto3)", () => {
  assert.equal(
    encode("containerd.task.v2.StateResponse", { id: "", pid: 0, terminal: false }).length,
    0,
  );
  assert.equal(
    encode(
      "containerd.task.v2.DeleteResponse",
      decode("containerd.task.v2.DeleteResponse", new Uint8Array()),
    ).length,
    0,
  );
});

Deno.test("64-bit integers decode as numbers, including negatives and > 2^32", () => {
  const req = { timeout_nano: 5_000_000_000 };
  const decoded = decode<{ timeout_nano: number }>(
    "ttrpc.Request",
    encode("ttrpc.Request", req),
  );
  assert.equal(decoded.timeout_nano, 5_000_000_000);
  const ts = decode(
    "google.protobuf.Timestamp",
    encode("google.protobuf.Timestamp", { seconds: -62135596800 }),
  );
  assert.deepEqual(ts, { seconds: -62135596800, nanos: 0 });
});

Deno.test("PidsResponse, UpdateTaskRequest (map) and RuntimeInfo round-trip", () => {
  const pids: PidsResponse = {
    processes: [{ pid: 1 }, { pid: 2, info: { type_url: "x", value: new Uint8Array([9]) } }],
  };
  assert.deepEqual(
    decode("containerd.task.v2.PidsResponse", encode("containerd.task.v2.PidsResponse", pids)),
    pids,
  );
  const update: UpdateTaskRequest = {
    id: "u",
    resources: { type_url: "r", value: new TextEncoder().encode("{}") },
    annotations: { a: "1", b: "" },
  };
  assert.deepEqual(
    decode(
      "containerd.task.v2.UpdateTaskRequest",
      encode("containerd.task.v2.UpdateTaskRequest", update),
    ),
    update,
  );
  const info: RuntimeInfo = {
    name: "io.containerd.wasmtime.v1",
    version: { version: "0.1.0", revision: "abc" },
    annotations: { "containerd.io/runtime-allow-mounts": "bind" },
  };
  assert.deepEqual(
    decode("containerd.types.RuntimeInfo", encode("containerd.types.RuntimeInfo", info)),
    info,
  );
});

Deno.test("every message of proto/ is defined and round-trips an empty message", () => {
  const files = resolveFiles(new Map(Object.entries(PROTO_SOURCES)));
  for (const name of files.flatMap(allMessages).map((m) => m.fullName)) {
    const empty = decode(name, new Uint8Array(0));
    assert.equal(encode(name, empty).length, 0, name);
  }
});

Deno.test("unknown types and malformed bytes throw errors that say what failed", () => {
  assert.throws(
    () => encode("containerd.task.v2.Nope", {}),
    /unknown protobuf message type "containerd.task.v2.Nope"/,
  );
  assert.throws(
    () => decode("containerd.task.v2.StateRequest", new Uint8Array([0x0a, 0x05, 0x61])),
    /cannot decode containerd.task.v2.StateRequest/,
  );
  assert.throws(
    () => encode("containerd.task.v2.DeleteResponse", { exited_at: 5 }),
    /object expected/,
  );
});
