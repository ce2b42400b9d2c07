/**
 * A test OTLP receiver: OTLP/HTTP with protobuf payloads on 127.0.0.1, decoded with
 * protobufjs from the OTLP `.proto` files in `proto/otlp/`. It keeps every span,
 * metric data point and log record it was sent, flattened for assertions, and can
 * stall (accept requests and never answer) to play a slow collector.
 *
 * @module
 */

import protobuf from "protobufjs";

const PROTO_DIR = new URL("../../proto/otlp/", import.meta.url);
/** The .proto files, each after those it imports. */
const PROTO_FILES = [
  "common.proto",
  "resource.proto",
  "trace.proto",
  "metrics.proto",
  "logs.proto",
];

/** OTLP/HTTP paths (the exporter appends them to `OTEL_EXPORTER_OTLP_ENDPOINT`). */
export const OtlpPath = {
  TRACES: "/v1/traces",
  METRICS: "/v1/metrics",
  LOGS: "/v1/logs",
} as const;

/** The request message of each path. */
const REQUEST_TYPE: Record<string, string> = {
  [OtlpPath.TRACES]: "opentelemetry.proto.trace.v1.ExportTraceServiceRequest",
  [OtlpPath.METRICS]: "opentelemetry.proto.metrics.v1.ExportMetricsServiceRequest",
  [OtlpPath.LOGS]: "opentelemetry.proto.logs.v1.ExportLogsServiceRequest",
};

let root: protobuf.Root | undefined;

/** Parses the OTLP .proto files once. */
export function otlpRoot(): protobuf.Root {
  if (root) return root;
  const parsed = new protobuf.Root();
  for (const file of PROTO_FILES) {
    protobuf.parse(Deno.readTextFileSync(new URL(file, PROTO_DIR)), parsed, { keepCase: true });
  }
  parsed.resolveAll();
  root = parsed;
  return root;
}

/** An attribute value as decoded (`AnyValue` with one field set). */
type AnyValue = Record<string, unknown>;
type KeyValue = { key: string; value?: AnyValue };

/** Reads an `AnyValue` as a plain value. */
export function anyValue(value: AnyValue | undefined): unknown {
  if (value === undefined) return undefined;
  for (const [k, v] of Object.entries(value)) {
    if (k === "array_value") {
      return ((v as { values?: AnyValue[] }).values ?? []).map(anyValue);
    }
    if (k === "int_value") return Number(v);
    return v;
  }
  return undefined;
}

/** Attributes as a plain object. */
export function attributesOf(list: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map(({ key, value }) => [key, anyValue(value)]));
}

const hex = (bytes: Uint8Array | undefined) =>
  bytes === undefined ? "" : [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");

/** One span, flattened. */
export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  /** OTLP's kind: 1 internal, 2 server, 3 client. */
  kind: number;
  /** Start, in ns since the epoch. */
  startNs: number;
  /** Duration in ms. */
  durationMs: number;
  attributes: Record<string, unknown>;
  /** OTLP's status code: 0 unset, 1 ok, 2 error. */
  statusCode: number;
  scope: string;
  resource: Record<string, unknown>;
}

/** One metric data point, flattened (a histogram's `value` is its sum). */
export interface ReceivedPoint {
  metric: string;
  type: "gauge" | "sum" | "histogram";
  value: number;
  /** A histogram's count (1 otherwise). */
  count: number;
  attributes: Record<string, unknown>;
  resource: Record<string, unknown>;
}

/** One log record, flattened. */
export interface ReceivedLog {
  body: unknown;
  severity: number;
  attributes: Record<string, unknown>;
  traceId: string;
  resource: Record<string, unknown>;
}

/** A running receiver. */
export interface OtlpReceiver {
  /** `http://127.0.0.1:<port>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  endpoint: string;
  port: number;
  spans: ReceivedSpan[];
  points: ReceivedPoint[];
  logs: ReceivedLog[];
  /** Requests received, by path (stalled ones included). */
  requests: Map<string, number>;
  /** Payloads that did not decode (each with why). */
  errors: string[];
  /** While true, requests are held unanswered until {@linkcode close}. */
  stalled: boolean;
  /** Stops listening; stalled requests are answered 503. */
  close(): Promise<void>;
}

/**
 * Starts a receiver on 127.0.0.1 (`port` 0: any free port). With `decode` false it
 * only counts requests (a benchmark's receiver, which must not take the CPU the
 * measured processes need).
 *
 * @throws {Deno.errors.AddrInUse} if `port` is taken
 */
export function startReceiver(port = 0, decode = true): OtlpReceiver {
  const types = otlpRoot();
  const released = Promise.withResolvers<void>();
  const receiver: OtlpReceiver = {
    endpoint: "",
    port: 0,
    spans: [],
    points: [],
    logs: [],
    requests: new Map(),
    errors: [],
    stalled: false,
    close: async () => {
      released.resolve();
      await server.shutdown();
    },
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    receiver.requests.set(path, (receiver.requests.get(path) ?? 0) + 1);
    const bytes = new Uint8Array(await req.arrayBuffer());
    if (receiver.stalled) {
      await released.promise;
      return new Response(null, { status: 503 });
    }
    const typeName = REQUEST_TYPE[path];
    if (typeName === undefined) return new Response(null, { status: 404 });
    if (!decode) return new Response(new Uint8Array(0));
    try {
      const message = types.lookupType(typeName).toObject(
        types.lookupType(typeName).decode(bytes),
        { longs: Number },
      );
      collect(receiver, path, message);
    } catch (err) {
      receiver.errors.push(`${path}: ${(err as Error).message}`);
      return new Response(null, { status: 400 });
    }
    // An empty Export*ServiceResponse: everything accepted.
    return new Response(new Uint8Array(0), {
      headers: { "content-type": "application/x-protobuf" },
    });
  });
  receiver.port = server.addr.port;
  receiver.endpoint = `http://127.0.0.1:${server.addr.port}`;
  return receiver;
}

// deno-lint-ignore no-explicit-any
type Decoded = any;

function collect(receiver: OtlpReceiver, path: string, message: Decoded): void {
  if (path === OtlpPath.TRACES) {
    for (const rs of message.resource_spans ?? []) {
      const resource = attributesOf(rs.resource?.attributes);
      for (const ss of rs.scope_spans ?? []) {
        for (const s of ss.spans ?? []) {
          receiver.spans.push({
            traceId: hex(s.trace_id),
            spanId: hex(s.span_id),
            parentSpanId: hex(s.parent_span_id),
            name: s.name,
            kind: s.kind ?? 0,
            startNs: Number(s.start_time_unix_nano),
            durationMs: (Number(s.end_time_unix_nano) - Number(s.start_time_unix_nano)) / 1e6,
            attributes: attributesOf(s.attributes),
            statusCode: s.status?.code ?? 0,
            scope: ss.scope?.name ?? "",
            resource,
          });
        }
      }
    }
  } else if (path === OtlpPath.METRICS) {
    for (const rm of message.resource_metrics ?? []) {
      const resource = attributesOf(rm.resource?.attributes);
      for (const sm of rm.scope_metrics ?? []) {
        for (const m of sm.metrics ?? []) {
          const type = m.gauge ? "gauge" : m.sum ? "sum" : m.histogram ? "histogram" : undefined;
          if (type === undefined) continue;
          for (const p of m[type].data_points ?? []) {
            const value = type === "histogram"
              ? Number(p.sum ?? 0)
              : Number(p.as_double ?? p.as_int ?? 0);
            receiver.points.push({
              metric: m.name,
              type,
              value,
              count: type === "histogram" ? Number(p.count ?? 0) : 1,
              attributes: attributesOf(p.attributes),
              resource,
            });
          }
        }
      }
    }
  } else {
    for (const rl of message.resource_logs ?? []) {
      const resource = attributesOf(rl.resource?.attributes);
      for (const sl of rl.scope_logs ?? []) {
        for (const l of sl.log_records ?? []) {
          receiver.logs.push({
            body: anyValue(l.body),
            severity: l.severity_number ?? 0,
            attributes: attributesOf(l.attributes),
            traceId: hex(l.trace_id),
            resource,
          });
        }
      }
    }
  }
}
