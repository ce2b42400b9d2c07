/**
 * A deterministic fuzz of {@linkcode TtrpcServer} over a real Unix socket: a seeded PRNG
 * drives connections that send random bytes, truncated frames, oversize and garbage
 * headers, zero-length and unknown frames, and interleaved valid and invalid requests
 * to real handlers (the task API over a `TaskService` with fake deps, and an echo).
 *
 * Each batch on a live connection is checked against a model of the server: every
 * Request frame (and every oversize frame) gets exactly one Response on its stream,
 * with the status the protocol prescribes; Data and unknown frames get none. After the
 * run: a fresh connection is served, every accepted connection was closed, and memory
 * stayed bounded.
 *
 * `TTRPC_FUZZ_SEED` and `TTRPC_FUZZ_ITERATIONS` replay or extend a run; a failure
 * names the seed and the iteration.
 *
 * @module
 */

import assert from "node:assert/strict";
import { TaskService } from "../task/service.ts";
import { TASK_SERVICES, taskHandlers } from "../task/task_api.ts";
import type { Guest } from "../task/guest.ts";
import { TtrpcClient } from "./client.ts";
import {
  type DecodedFrame,
  encodeFrame,
  FrameDecoder,
  HEADER_LENGTH,
  MESSAGE_LENGTH_MAX,
  MessageType,
} from "./frame.ts";
import { TtrpcServer } from "./server.ts";
import { Code } from "./status.ts";
import * as api from "../proto/gen/task.ts";
import { decodeResponse, encodeRequest, type KeyValue, type TtrpcResponse } from "./envelope.ts";
import { concatBytes as concat } from "../sys/bytes.ts";

const SEED = Number(Deno.env.get("TTRPC_FUZZ_SEED") ?? 0x5eed_7a5c);
const ITERATIONS = Number(Deno.env.get("TTRPC_FUZZ_ITERATIONS") ?? 2000);
/** How long a batch may take to be answered before the server counts as stuck. */
const ANSWER_TIMEOUT_MS = 10_000;
/** Memory growth allowed between the warm-up and the end (generous: no GC is forced). */
const MAX_HEAP_GROWTH = 64 << 20;
const MAX_RSS_GROWTH = 256 << 20;

const ECHO = "fuzz.v1.Echo";
const TASK = TASK_SERVICES[0];
const ERR_EVEN = "StreamID must be odd for client initiated streams";
const ERR_REUSED = "StreamID cannot be re-used and must increment";
const STREAM_ID_MAX = 0xffff_ffff;
/** Lengths with the first header byte set: garbage, the server closes the connection. */
const GARBAGE_LENGTH_MIN = 1 << 24;

/** mulberry32: small, fast, and the same sequence on every machine for one seed. */
class Rng {
  #state: number;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** A uint32. */
  next(): number {
    let t = this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.next() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() / 0x1_0000_0000 < p;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.next() & 0xff;
    return out;
  }

  /** Short random strings, mostly from a small set so that calls meet the same tasks. */
  id(): string {
    return this.chance(0.8) ? this.pick(["a", "b", "c", "d"]) : String.fromCharCode(
      ...Array.from({ length: this.int(12) }, () => this.range(0x20, 0x7e)),
    );
  }
}

function header(length: number, streamId: number, type: number, flags = 0): Uint8Array {
  const h = new Uint8Array(HEADER_LENGTH);
  const view = new DataView(h.buffer);
  view.setUint32(0, length);
  view.setUint32(4, streamId);
  h[8] = type;
  h[9] = flags;
  return h;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------
// The server under test: the real task API over a TaskService with fake deps, and echo.

/** A guest that exits on its own a little later (so that Wait always answers). */
class FakeGuest implements Guest {
  readonly pid: number;
  readonly exited: Promise<number>;
  #exit!: (status: number) => void;

  constructor(pid: number, exitAfterMs: number) {
    this.pid = pid;
    this.exited = new Promise((resolve) => this.#exit = resolve);
    setTimeout(() => this.#exit(0), exitAfterMs);
  }
  start(): Promise<void> {
    return Promise.resolve();
  }
  closeStdin(): void {}
  kill(signal: number): void {
    if (signal === 9 || signal === 15) this.#exit(128 + signal);
  }
}

function startServer(rng: Rng, dir: string) {
  let pid = 1000;
  const service = new TaskService({
    readSpec: () =>
      Promise.resolve({
        process: { args: ["/app.wasm"], env: [], cwd: "/", terminal: false },
        root: { path: "rootfs", readonly: false },
        annotations: {},
        network: "new",
      }),
    mountRootfs: () => {},
    unmountRootfs: () => {},
    createGuest: () => Promise.resolve(new FakeGuest(pid++, rng.int(20))),
    publish: () => {},
    writeFile: () => Promise.resolve(),
    shimPid: 42,
    log: () => {},
  });
  const counts = { closed: 0 };
  const server = new TtrpcServer({ onConnectionClosed: () => counts.closed++ });
  const hooks = { version: "fuzz", shutdown: () => {} };
  for (const name of TASK_SERVICES) server.register(name, taskHandlers(service, hooks));
  server.register(ECHO, { Echo: (payload) => Promise.resolve(payload.slice()) });
  const path = `${dir}/fuzz.sock`;
  const serving = server.serve(Deno.listen({ transport: "unix", path }));
  return { server, service, path, serving, counts };
}

// ---------------------------------------------------------------------------------------
// Requests and what the server must answer to them

/** Accepts (true) or not the response to one stream. */
type Expectation = (res: TtrpcResponse) => boolean;

/** Codes the task API answers with for arbitrary input (never UNKNOWN: that is a bug). */
const TASK_CODES = new Set<number>([
  Code.INVALID_ARGUMENT,
  Code.NOT_FOUND,
  Code.ALREADY_EXISTS,
  Code.FAILED_PRECONDITION,
  Code.UNIMPLEMENTED,
]);

const status = (code: number, message?: string): Expectation => (res) =>
  res.status?.code === code && (message === undefined || res.status.message === message);

const TASK_METHODS: [string, string, (rng: Rng) => Record<string, unknown>][] = [
  ["Create", "CreateTaskRequest", (r) => ({
    id: r.id(),
    bundle: `/b/${r.id()}`,
    rootfs: r.chance(0.5) ? [] : [{ type: "bind", source: "/s", target: "", options: ["rbind"] }],
    terminal: r.chance(0.1),
    stdin: "",
    stdout: "/o",
    stderr: "/e",
    checkpoint: r.chance(0.1) ? "/cp" : "",
  })],
  ["Start", "StartRequest", (r) => ({ id: r.id(), exec_id: r.chance(0.1) ? "x" : "" })],
  ["State", "StateRequest", (r) => ({ id: r.id(), exec_id: "" })],
  ["Wait", "WaitRequest", (r) => ({ id: r.id(), exec_id: "" })],
  ["Kill", "KillRequest", (r) => ({
    id: r.id(),
    exec_id: "",
    signal: r.pick([0, 1, 9, 15, 19, 18, 0xffff_ffff]),
    all: r.chance(0.5),
  })],
  ["Delete", "DeleteRequest", (r) => ({ id: r.id(), exec_id: "" })],
  ["Pids", "PidsRequest", (r) => ({ id: r.id() })],
  ["Pause", "PauseRequest", (r) => ({ id: r.id() })],
  ["Resume", "ResumeRequest", (r) => ({ id: r.id() })],
  ["CloseIO", "CloseIORequest", (r) => ({ id: r.id(), exec_id: "", stdin: r.chance(0.5) })],
  ["Connect", "ConnectRequest", (r) => ({ id: r.id() })],
  ["Shutdown", "ShutdownRequest", (r) => ({ id: r.id(), now: false })],
  ["Stats", "StatsRequest", (r) => ({ id: r.id() })],
];

/** One Request frame's data and what must answer it. */
interface Call {
  data: Uint8Array;
  expect: Expectation;
}

/** The generated encoder of the task API message `type` (e.g. `KillRequest`), by name. */
function encodeByName(type: string, message: Record<string, unknown>): Uint8Array {
  const encode = (api as Record<string, unknown>)[`encode${type}`];
  if (typeof encode !== "function") throw new Error(`no generated encoder for ${type}`);
  return encode(message);
}

function requestData(
  rng: Rng,
  service: string,
  method: string,
  payload: Uint8Array,
): Uint8Array {
  const metadata: KeyValue[] = [];
  for (let i = rng.int(3); i > 0; i--) metadata.push({ key: rng.id(), value: rng.id() });
  const timeout = rng.pick([0, 0, 0, 1, 1_000_000, 2 ** 53 - 1, -5]);
  return encodeRequest({ service, method, payload, timeout_nano: timeout, metadata });
}

function randomCall(rng: Rng): Call {
  switch (rng.int(8)) {
    case 0:
    case 1: {
      const payload = rng.bytes(rng.chance(0.05) ? rng.int(200_000) : rng.int(600));
      return {
        data: requestData(rng, ECHO, "Echo", payload),
        expect: (res) =>
          res.status === undefined && res.payload.length === payload.length &&
          res.payload.every((b, i) => b === payload[i]),
      };
    }
    case 2:
    case 3: {
      // A well-formed task API request, often mutated (flipped bytes, cut short).
      const [method, type, make] = rng.pick(TASK_METHODS);
      let payload = type === "StatsRequest" ? rng.bytes(rng.int(8)) : encodeByName(type, make(rng));
      if (rng.chance(0.3) && payload.length > 0) {
        payload = payload.slice(0, rng.int(payload.length + 1));
        for (let i = rng.int(3); i > 0 && payload.length > 0; i--) {
          payload[rng.int(payload.length)] = rng.next() & 0xff;
        }
      }
      return {
        data: requestData(rng, rng.pick(TASK_SERVICES), method, payload),
        expect: (res) =>
          res.status === undefined ||
          (TASK_CODES.has(res.status.code) && res.status.message !== ERR_REUSED &&
            res.status.message !== ERR_EVEN),
      };
    }
    case 4: {
      const service = rng.pick(["", "nope.v1.Nope", TASK + "x", "containerd.task.v2"]);
      return {
        data: requestData(rng, service, rng.id(), rng.bytes(rng.int(20))),
        expect: status(Code.UNIMPLEMENTED, `service ${service}`),
      };
    }
    case 5: {
      const method = rng.pick(["", "Nope", "echo", "Create "]);
      return {
        data: requestData(rng, rng.pick([ECHO, TASK]), method, new Uint8Array(0)),
        expect: status(Code.UNIMPLEMENTED, `method ${method}`),
      };
    }
    case 6:
      // Zero-length Request data: an empty ttrpc.Request, service "".
      return { data: new Uint8Array(0), expect: status(Code.UNIMPLEMENTED, "service ") };
    default: {
      // Random bytes as Request data: either not a Request, or one for no service.
      return {
        data: rng.bytes(rng.range(1, 64)),
        expect: (res) =>
          (res.status?.code === Code.INVALID_ARGUMENT &&
            res.status.message.startsWith("unmarshal request error: ")) ||
          res.status?.code === Code.UNIMPLEMENTED,
      };
    }
  }
}

// ---------------------------------------------------------------------------------------
// Connections

/** A raw connection: writes bytes, reads frames. */
class Peer {
  readonly conn: Deno.UnixConn;
  readonly #decoder = new FrameDecoder();
  readonly #frames: DecodedFrame[] = [];
  readonly #buf = new Uint8Array(64 * 1024);
  closed = false;

  constructor(conn: Deno.UnixConn) {
    this.conn = conn;
  }

  /** Writes `bytes` in `pieces` writes (the frames' boundaries fall anywhere). */
  async write(bytes: Uint8Array, rng: Rng, pieces = 1): Promise<void> {
    let at = 0;
    for (let i = 0; i < pieces && at < bytes.length; i++) {
      const end = i === pieces - 1 ? bytes.length : rng.range(at, bytes.length);
      let n = at;
      while (n < end) n += await this.conn.write(bytes.subarray(n, end));
      at = end;
    }
    while (at < bytes.length) at += await this.conn.write(bytes.subarray(at));
  }

  /** The next `count` frames; null if the server closed the connection first. */
  async frames(count: number): Promise<DecodedFrame[] | null> {
    while (this.#frames.length < count) {
      let n: number | null;
      try {
        n = await this.conn.read(this.#buf);
      } catch (err) {
        if (err instanceof Deno.errors.ConnectionReset) return null;
        throw err;
      }
      if (n === null) return null;
      this.#frames.push(...this.#decoder.push(this.#buf.subarray(0, n)));
    }
    return this.#frames.splice(0, count);
  }

  /** Resolves true once the server has closed the connection (reads end). */
  async closedByServer(): Promise<boolean> {
    return (await this.frames(Infinity)) === null;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.conn.close();
    } catch {
      // closed already
    }
  }
}

/** A long-lived connection whose stream ids the fuzz keeps track of. */
interface Session {
  peer: Peer;
  /** The server's last accepted stream id on it. */
  last: number;
}

/**
 * Checks `responses` against `expected` (stream id → what must answer it): every
 * expectation met exactly once, nothing else answered.
 */
function match(frames: DecodedFrame[], expected: Map<number, Expectation[]>, where: string) {
  for (const frame of frames) {
    assert.ok(!frame.oversize, `${where}: the server sent an oversize frame`);
    assert.equal(frame.type, MessageType.RESPONSE, `${where}: frame type`);
    assert.equal(frame.flags, 0, `${where}: frame flags`);
    const res = decodeResponse(frame.data);
    const candidates = expected.get(frame.streamId) ?? [];
    const at = candidates.findIndex((accepts) => accepts(res));
    assert.ok(
      at >= 0,
      `${where}: unexpected response on stream ${frame.streamId}: ` +
        JSON.stringify({ status: res.status, payloadLength: res.payload.length }),
    );
    candidates.splice(at, 1);
    if (candidates.length === 0) expected.delete(frame.streamId);
  }
  assert.equal(expected.size, 0, `${where}: unanswered streams ${[...expected.keys()]}`);
}

Deno.test("ttrpc server fuzz: seeded random frames and connections", async () => {
  const rng = new Rng(SEED);
  const dir = await Deno.makeTempDir({ prefix: "ttrpc-fuzz-" });
  const { server, path, serving, counts } = startServer(rng, dir);
  let opened = 0;
  const connect = async () => {
    const peer = new Peer(await Deno.connect({ transport: "unix", path }));
    opened++;
    return peer;
  };
  const sessions: (Session | null)[] = [null, null, null, null];
  const stats: Record<string, number> = {};
  let baseline: Deno.MemoryUsage | undefined;
  let iteration = 0;

  /** A batch of interleaved frames on a live connection, answered and checked. */
  async function batch(session: Session, where: string): Promise<void> {
    const frames: Uint8Array[] = [];
    const expected = new Map<number, Expectation[]>();
    const expect = (id: number, e: Expectation) => {
      const list = expected.get(id) ?? [];
      list.push(e);
      expected.set(id, list);
    };
    let oversized = false; // at most one 4 MiB frame per batch
    for (let n = rng.range(1, 10); n > 0; n--) {
      const kind = rng.int(10);
      if (kind <= 5) {
        // A valid stream id: odd and above the last (sometimes far above).
        const gap = rng.chance(0.05) ? rng.int(1 << 30) * 2 + 2 : 2 * rng.range(1, 3);
        const id = (session.last % 2 === 0 ? session.last + 1 : session.last + gap) >>> 0;
        if (id <= session.last || id > STREAM_ID_MAX - 2) continue;
        const call = randomCall(rng);
        frames.push(
          encodeFrame(id, MessageType.REQUEST, rng.chance(0.1) ? rng.int(256) : 0, call.data),
        );
        expect(id, call.expect);
        session.last = id;
      } else if (kind === 6) {
        // An even or re-used stream id: refused on that stream only.
        const even = session.last === 0 || rng.chance(0.5);
        const id = even
          ? 2 * rng.int(1 << 20)
          : session.last - 2 * rng.int(Math.ceil(session.last / 2));
        frames.push(encodeFrame(id, MessageType.REQUEST, 0, randomCall(rng).data));
        expect(id, status(Code.INVALID_ARGUMENT, id % 2 === 0 ? ERR_EVEN : ERR_REUSED));
      } else if (kind === 7) {
        // Data frames and unknown types, any stream, often empty: ignored.
        const type = rng.pick([MessageType.DATA, MessageType.RESPONSE, 0, 4, 0x7f, 0xff]);
        frames.push(
          encodeFrame(
            rng.next(),
            type,
            rng.int(256),
            rng.bytes(rng.chance(0.5) ? 0 : rng.int(100)),
          ),
        );
      } else if (kind === 8 && !oversized && rng.chance(0.05)) {
        oversized = true;
        // An oversize frame announced and its (small) excess sent: RESOURCE_EXHAUSTED.
        const id = rng.next();
        const length = MESSAGE_LENGTH_MAX + rng.range(1, 4096);
        frames.push(header(length, id, rng.pick([MessageType.REQUEST, MessageType.DATA])));
        frames.push(new Uint8Array(length));
        expect(
          id,
          status(
            Code.RESOURCE_EXHAUSTED,
            `message length ${length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`,
          ),
        );
        stats.oversizeSent = (stats.oversizeSent ?? 0) + 1;
      } else if (kind >= 8) {
        // Zero-length Request on a fresh stream.
        const id = session.last % 2 === 0 ? session.last + 1 : session.last + 2;
        if (id > STREAM_ID_MAX - 2) continue;
        frames.push(encodeFrame(id, MessageType.REQUEST, 0));
        expect(id, status(Code.UNIMPLEMENTED, "service "));
        session.last = id;
      }
    }
    const bytes = concat(frames);
    await session.peer.write(bytes, rng, rng.range(1, 4));
    const count = [...expected.values()].reduce((n, l) => n + l.length, 0);
    const answers = await withTimeout(session.peer.frames(count), ANSWER_TIMEOUT_MS, where);
    assert.ok(answers, `${where}: the server closed a connection that sent valid frames`);
    match(answers, expected, where);
  }

  try {
    for (iteration = 0; iteration < ITERATIONS; iteration++) {
      const where = `seed ${SEED} iteration ${iteration}`;
      if (iteration === Math.min(200, ITERATIONS >> 1)) baseline = Deno.memoryUsage();
      const op = rng.int(100);
      const kind = op < 55
        ? "batch"
        : op < 62
        ? "closeSession"
        : op < 72
        ? "randomBytes"
        : op < 80
        ? "truncated"
        : op < 85
        ? "oversizeThenClose"
        : op < 90
        ? "garbageHeader"
        : op < 96
        ? "closeMidFrame"
        : "connectAndClose";
      stats[kind] = (stats[kind] ?? 0) + 1;
      switch (kind) {
        case "batch": {
          const slot = rng.int(sessions.length);
          sessions[slot] ??= { peer: await connect(), last: 0 };
          await batch(sessions[slot]!, where);
          break;
        }
        case "closeSession": {
          const slot = rng.int(sessions.length);
          sessions[slot]?.peer.close();
          sessions[slot] = null;
          break;
        }
        case "randomBytes": {
          // Anything at all; a first byte other than 0 makes a garbage header.
          const peer = await connect();
          const bytes = rng.bytes(rng.range(1, 300));
          await peer.write(bytes, rng, rng.range(1, 3)).catch(() => {});
          if (bytes[0] !== 0 && bytes.length >= HEADER_LENGTH) {
            assert.ok(
              await withTimeout(peer.closedByServer(), ANSWER_TIMEOUT_MS, where),
              `${where}: a garbage header must close the connection`,
            );
          }
          peer.close();
          break;
        }
        case "truncated": {
          // A valid frame cut short, then the client goes away.
          const peer = await connect();
          const frame = encodeFrame(1, MessageType.REQUEST, 0, randomCall(rng).data);
          await peer.write(frame.subarray(0, rng.int(frame.length)), rng, rng.range(1, 3));
          peer.close();
          break;
        }
        case "oversizeThenClose": {
          // Answered at once from the header; the client leaves mid-body.
          const peer = await connect();
          const id = rng.next();
          const length = rng.range(MESSAGE_LENGTH_MAX + 1, GARBAGE_LENGTH_MIN - 1);
          await peer.write(
            concat([header(length, id, rng.int(256)), rng.bytes(rng.int(5000))]),
            rng,
          );
          const [frame] = (await withTimeout(peer.frames(1), ANSWER_TIMEOUT_MS, where))!;
          match(
            [frame],
            new Map([[id, [status(Code.RESOURCE_EXHAUSTED)]]]),
            where,
          );
          peer.close();
          break;
        }
        case "garbageHeader": {
          const peer = await connect();
          const length = rng.range(GARBAGE_LENGTH_MIN, STREAM_ID_MAX);
          await peer.write(header(length, rng.next(), MessageType.REQUEST), rng, rng.range(1, 3));
          assert.ok(
            await withTimeout(peer.closedByServer(), ANSWER_TIMEOUT_MS, where),
            `${where}: a garbage header must close the connection`,
          );
          peer.close();
          break;
        }
        case "closeMidFrame": {
          // A live session sends some frames and half of another, and is gone.
          const slot = rng.int(sessions.length);
          const session = sessions[slot] ?? { peer: await connect(), last: 0 };
          sessions[slot] = null;
          const id = session.last % 2 === 0 ? session.last + 1 : session.last + 2;
          const frame = encodeFrame(
            id >>> 0,
            MessageType.REQUEST,
            0,
            requestData(
              rng,
              TASK,
              "Wait",
              api.encodeWaitRequest({
                id: rng.id(),
                exec_id: "",
              }),
            ),
          );
          const cut = rng.range(1, frame.length - 1);
          await session.peer.write(
            concat([frame, frame.subarray(0, cut)]),
            rng,
            rng.range(1, 3),
          ).catch(() => {});
          session.peer.close();
          break;
        }
        default: {
          const peer = await connect();
          peer.close();
        }
      }
    }
  } catch (err) {
    throw new Error(`ttrpc fuzz failed at seed ${SEED} iteration ${iteration}`, { cause: err });
  } finally {
    for (const s of sessions) s?.peer.close();
  }

  // Still serving: a fresh connection gets answers from both services.
  const client = await TtrpcClient.connect(path);
  opened++;
  const hello = new TextEncoder().encode("still here");
  assert.deepEqual(await client.call(ECHO, "Echo", hello), hello);
  const connected = await client.call(
    TASK,
    "Connect",
    api.encodeConnectRequest({ id: "" }),
  );
  assert.ok(connected.length > 0);
  client.close();
  await client.closed;

  // No connection the server accepted is left open.
  for (let i = 0; i < 500 && (server.connections > 0 || counts.closed < opened); i++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.equal(server.connections, 0, "connections still open on the server");
  assert.equal(counts.closed, opened, "every accepted connection was closed");

  // Memory stayed bounded.
  const end = Deno.memoryUsage();
  if (baseline) {
    const heap = end.heapUsed - baseline.heapUsed;
    const rss = end.rss - baseline.rss;
    assert.ok(heap < MAX_HEAP_GROWTH, `heap grew by ${heap} bytes`);
    assert.ok(rss < MAX_RSS_GROWTH, `rss grew by ${rss} bytes`);
  }
  console.log(
    `seed ${SEED}: ${ITERATIONS} iterations, ${opened} connections; ` +
      Object.entries(stats).map(([k, v]) => `${k} ${v}`).join(", ") +
      (baseline
        ? `; heap ${((end.heapUsed - baseline.heapUsed) / 1048576).toFixed(1)} MiB, rss ${
          ((end.rss - baseline.rss) / 1048576).toFixed(1)
        } MiB since iteration 200`
        : ""),
  );

  await server.close();
  await serving;
  await Deno.remove(dir, { recursive: true });
});
