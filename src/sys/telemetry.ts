/**
 * OpenTelemetry for the shim: which processes export, and a small API over the
 * exporter Deno has built in.
 *
 * Deno exports traces, metrics and logs over OTLP when `OTEL_DENO=true` is in a
 * process's environment when it starts (it then installs the OpenTelemetry JS API's
 * global providers, which {@linkcode telemetryOn} looks for). containerd starts the
 * shim with its own environment, where an operator sets the standard variables
 * ({@linkcode OtelEnv}); {@linkcode telemetryConfig} reads them as runwasi does and
 * says what the server and its runners get.
 *
 * Everything here is a no-op when telemetry is off: no span, no metric, no cost
 * beyond one property lookup.
 *
 * @module
 */

/** The standard OpenTelemetry variables the shim reads, and Deno's own switch. */
export const OtelEnv = {
  ENDPOINT: "OTEL_EXPORTER_OTLP_ENDPOINT",
  TRACES_ENDPOINT: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  METRICS_ENDPOINT: "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
  LOGS_ENDPOINT: "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
  PROTOCOL: "OTEL_EXPORTER_OTLP_PROTOCOL",
  TRACES_PROTOCOL: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
  SAMPLER: "OTEL_TRACES_SAMPLER",
  TIMEOUT: "OTEL_EXPORTER_OTLP_TIMEOUT",
  SDK_DISABLED: "OTEL_SDK_DISABLED",
  SERVICE_NAME: "OTEL_SERVICE_NAME",
  RESOURCE_ATTRIBUTES: "OTEL_RESOURCE_ATTRIBUTES",
  /** Deno's switch: its exporter starts only when this is `true` at process start. */
  DENO: "OTEL_DENO",
  /** Deno's choice for `console`: `capture` (print and export) or `replace` (export only). */
  DENO_CONSOLE: "OTEL_DENO_CONSOLE",
} as const;

/**
 * The variable runwasi's `start` passes its trace context to its server in (a JSON
 * object of W3C headers, `{"traceparent":"00-…"}`); read here too when containerd or
 * an operator sets it, so that the server's spans join that trace.
 */
export const TRACECONTEXT_ENV = "TRACECONTEXT";

/** The service name of everything the shim exports. */
export const DEFAULT_SERVICE_NAME = "containerd-shim-wasmtime-v1";

/**
 * The longest a runner's exporter waits for the receiver, in ms. Deno flushes what
 * is left when a process exits, one signal after the other, each up to the export
 * timeout (10 s by default): with a receiver that accepts and never answers, a
 * guest's exit (which containerd sees when its runner exits) would come ~20 s late.
 * Capped, it comes at most 3 × this late; a receiver that is down costs nothing.
 */
export const RUNNER_EXPORT_TIMEOUT_MS = 100;

/** Prefix of every OpenTelemetry variable passed on to the processes that export. */
const OTEL_PREFIX = "OTEL_";

/** What the shim's environment says about telemetry. */
export interface TelemetryConfig {
  /** True when the server and runners export. */
  enabled: boolean;
  /** Why telemetry is off, for the log ("" when on, or off because nothing is set). */
  reason: string;
  /** Off because a variable has a value Deno would refuse to start with (log a warning). */
  invalid?: boolean;
  /** The variables a process that exports starts with (empty when off). */
  env: Record<string, string>;
}

/** Variables whose unknown values stop Deno at start, with the values it takes. */
const FATAL_IF_UNKNOWN: readonly (readonly [string, readonly string[]])[] = [
  [OtelEnv.PROTOCOL, ["http/protobuf", "http/json", "grpc"]],
  [OtelEnv.SAMPLER, [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
  ]],
];

/**
 * Reads the standard variables from `env` (the shim's environment): telemetry is on
 * when an OTLP endpoint is set (all signals, or traces, metrics or logs alone) and
 * `OTEL_SDK_DISABLED` is not `true`. When it is on, every `OTEL_*` variable is passed
 * on, with `OTEL_DENO=true` and the shim's service name.
 */
export function telemetryConfig(env: Record<string, string | undefined>): TelemetryConfig {
  const off = (reason: string): TelemetryConfig => ({ enabled: false, reason, env: {} });
  if ((env[OtelEnv.SDK_DISABLED] ?? "").trim().toLowerCase() === "true") {
    return off(`${OtelEnv.SDK_DISABLED}=true`);
  }
  const endpoints = [
    OtelEnv.ENDPOINT,
    OtelEnv.TRACES_ENDPOINT,
    OtelEnv.METRICS_ENDPOINT,
    OtelEnv.LOGS_ENDPOINT,
  ];
  if (!endpoints.some((name) => (env[name] ?? "") !== "")) return off("");
  // Deno refuses to start at all with either of these set to something it does not
  // know: every server and runner would fail, so telemetry goes off instead.
  for (const [name, known] of FATAL_IF_UNKNOWN) {
    const value = env[name];
    if (value !== undefined && value !== "" && !known.includes(value)) {
      return {
        ...off(`${name}=${JSON.stringify(value)} is not one of ${known.join(", ")}`),
        invalid: true,
      };
    }
  }
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (name.startsWith(OTEL_PREFIX) && value !== undefined) out[name] = value;
  }
  out[OtelEnv.DENO] = "true";
  // The shim's own name, always: an inherited OTEL_SERVICE_NAME names containerd
  // (containerd 2.x sets it to "containerd" in its own environment).
  out[OtelEnv.SERVICE_NAME] = DEFAULT_SERVICE_NAME;
  return { enabled: true, reason: "", env: out };
}

/**
 * `env` with a `service.instance.id` of its own added to `OTEL_RESOURCE_ATTRIBUTES`:
 * every process (the server, each runner) exports metrics of the same names, and a
 * backend adds them up only if each process is a series of its own.
 */
export function withInstanceId(env: Record<string, string>): Record<string, string> {
  const own = `service.instance.id=${crypto.randomUUID()}`;
  const given = env[OtelEnv.RESOURCE_ATTRIBUTES];
  return { ...env, [OtelEnv.RESOURCE_ATTRIBUTES]: given ? `${given},${own}` : own };
}

/**
 * The variables of a server that exports: `config.env`, with its `console` lines
 * exported only (its stdout is closed once it is ready; its log is the FIFO's).
 */
export function serverTelemetryEnv(config: TelemetryConfig): Record<string, string> {
  if (!config.enabled) return {};
  return withInstanceId({ ...config.env, [OtelEnv.DENO_CONSOLE]: "replace" });
}

/**
 * The variables of a runner that exports: `config.env` with the export timeout
 * capped at {@linkcode RUNNER_EXPORT_TIMEOUT_MS} (each runner then adds its
 * {@linkcode withInstanceId}).
 */
export function runnerTelemetryEnv(config: TelemetryConfig): Record<string, string> {
  if (!config.enabled) return {};
  const asked = Number(config.env[OtelEnv.TIMEOUT]);
  const timeout = Number.isFinite(asked) && asked > 0
    ? Math.min(asked, RUNNER_EXPORT_TIMEOUT_MS)
    : RUNNER_EXPORT_TIMEOUT_MS;
  return { ...config.env, [OtelEnv.TIMEOUT]: String(timeout) };
}

/**
 * The code of {@linkcode exitWatchdog}'s thread: a timer on a thread of its own, which
 * runs while the main thread is blocked in Deno's exit-time flush.
 */
const WATCHDOG_SOURCE =
  `self.onmessage = (e) => setTimeout(() => Deno.kill(e.data.pid, "SIGKILL"), e.data.ms);`;

/**
 * When this process exports, makes sure that it is gone `ms` from now: Deno sends what
 * is left at exit, and waits for a collector that stalls (10 s per signal by default)
 * or, rarely, does not come back at all. Call it right before exiting.
 */
export function exitWatchdog(ms: number): void {
  if (!telemetryOn()) return;
  try {
    const url = URL.createObjectURL(new Blob([WATCHDOG_SOURCE], { type: "text/javascript" }));
    new Worker(url, { type: "module" }).postMessage({ pid: Deno.pid, ms });
  } catch {
    // No worker: the exit then takes as long as the flush does.
  }
}

/** A W3C trace context: which trace and span a span's parent is. */
export interface SpanContext {
  /** 32 lower-case hex digits. */
  traceId: string;
  /** 16 lower-case hex digits. */
  spanId: string;
  /** Bit 0: sampled. */
  traceFlags: number;
  /** True for a context that came from another process. */
  isRemote?: boolean;
}

/** The W3C `traceparent` version this shim writes and reads. */
const TRACEPARENT_VERSION = "00";
const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/**
 * Parses a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`); undefined
 * for anything else, an all-zero id, or version `ff` (which the standard forbids).
 */
export function parseTraceparent(value: string | undefined): SpanContext | undefined {
  const m = TRACEPARENT_RE.exec((value ?? "").trim().toLowerCase());
  if (m === null) return undefined;
  const [, version, traceId, spanId, flags, rest] = m;
  if (version === "ff" || (version === TRACEPARENT_VERSION && rest !== undefined)) {
    return undefined;
  }
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, traceFlags: parseInt(flags, 16), isRemote: true };
}

/** Writes `context` as a W3C `traceparent` header. */
export function formatTraceparent(context: SpanContext): string {
  const flags = (context.traceFlags & 0xff).toString(16).padStart(2, "0");
  return `${TRACEPARENT_VERSION}-${context.traceId}-${context.spanId}-${flags}`;
}

/**
 * Reads the trace context of {@linkcode TRACECONTEXT_ENV}: runwasi's JSON object of
 * headers, or a bare `traceparent`. Undefined when unset or unreadable.
 */
export function traceContextFromEnv(value: string | undefined): SpanContext | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  const text = value.trim();
  if (!text.startsWith("{")) return parseTraceparent(text);
  try {
    const headers = JSON.parse(text) as Record<string, unknown>;
    const traceparent = headers?.traceparent;
    return typeof traceparent === "string" ? parseTraceparent(traceparent) : undefined;
  } catch {
    return undefined;
  }
}

/** Attribute values a span or a metric point carries. */
export type Attributes = Record<string, string | number | boolean>;

/** The part of an OpenTelemetry span the shim uses. */
export interface Span {
  spanContext(): SpanContext;
  setAttribute(key: string, value: string | number | boolean): unknown;
  setAttributes(attributes: Attributes): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  recordException(exception: unknown): unknown;
  end(): void;
  isRecording(): boolean;
}

/** OpenTelemetry's span status codes. */
export const SpanStatus = { UNSET: 0, OK: 1, ERROR: 2 } as const;
/** OpenTelemetry's span kinds. */
export const SpanKind = { INTERNAL: 0, SERVER: 1, CLIENT: 2 } as const;

/** The OpenTelemetry JS API's context: an immutable map. */
interface OtelContext {
  getValue(key: symbol): unknown;
  setValue(key: symbol, value: unknown): OtelContext;
}

/** The OpenTelemetry JS API's global registration, which Deno fills when it exports. */
interface OtelApi {
  trace: {
    getTracer(name: string): {
      startSpan(
        name: string,
        options?: { attributes?: Attributes; kind?: number },
        context?: OtelContext,
      ): Span;
    };
  };
  context: {
    active(): OtelContext;
    with<T>(context: OtelContext, fn: () => T): T;
  };
  metrics: { getMeter(name: string): Meter };
}

/** The part of an OpenTelemetry meter the shim uses. */
interface Meter {
  createCounter(name: string, options?: InstrumentOptions): Counter;
  createUpDownCounter(name: string, options?: InstrumentOptions): Counter;
  createHistogram(name: string, options?: InstrumentOptions): Histogram;
  createObservableGauge(name: string, options?: InstrumentOptions): {
    addCallback(
      cb: (result: { observe(value: number, attributes?: Attributes): void }) => void,
    ): void;
  };
}

/** A metric's description and unit. */
export interface InstrumentOptions {
  description?: string;
  unit?: string;
}

/** A counter (or up-down counter). */
export interface Counter {
  add(value: number, attributes?: Attributes): void;
  /**
   * The series of `attributes`, for a hot path (e.g. per request): its adds are
   * summed here and handed to the exporter in batches (see {@linkcode flushMetrics}),
   * one instrument call per series a batch instead of one per add. Get it once per
   * attribute set and keep it.
   */
  series(attributes: Attributes): CounterSeries;
}

/** One attribute set of a {@linkcode Counter}, whose adds are batched. */
export interface CounterSeries {
  add(value: number): void;
}

/** A histogram. */
export interface Histogram {
  record(value: number, attributes?: Attributes): void;
}

/** Where the OpenTelemetry JS API registers its global providers (API version 1). */
const OTEL_API_KEY = Symbol.for("opentelemetry.js.api.1");
/** The context key of the active span (the JS API's `createContextKey`). */
const SPAN_KEY = Symbol.for("OpenTelemetry Context Key SPAN");
/** The instrumentation scope of every span and metric of the shim. */
export const SCOPE_NAME = "containerd-shim-wasmtime";

/** The JS API as Deno registers it: each part only when its signal is on. */
type RegisteredApi = Partial<OtelApi>;

function api(): RegisteredApi | undefined {
  return (globalThis as Record<symbol, unknown>)[OTEL_API_KEY] as RegisteredApi | undefined;
}

/**
 * The API's trace part, undefined when this process makes no spans: telemetry off, or
 * traces off with `OTEL_DENO_TRACING=false` (Deno then registers no `trace`).
 */
function tracing(): Pick<OtelApi, "trace" | "context"> | undefined {
  const otel = api();
  return otel?.trace && otel.context ? { trace: otel.trace, context: otel.context } : undefined;
}

/** The shim's meter, undefined when metrics are off (or `OTEL_DENO_METRICS=false`). */
function meter(): Meter | undefined {
  return api()?.metrics?.getMeter(SCOPE_NAME);
}

/** True when this process exports telemetry (it started with `OTEL_DENO=true`). */
export function telemetryOn(): boolean {
  return api() !== undefined;
}

/** A parent for a span: a context from elsewhere, or a span of this process. */
export type Parent = SpanContext | Span | undefined;

/** A stand-in for a span of another process, as the JS API's non-recording span. */
function remoteSpan(context: SpanContext): Pick<Span, "spanContext" | "isRecording"> {
  return { spanContext: () => context, isRecording: () => false };
}

function contextWith(otel: Pick<OtelApi, "context">, parent: Parent): OtelContext {
  const active = otel.context.active();
  if (parent === undefined) return active;
  const span = "spanContext" in parent ? parent : remoteSpan(parent);
  return active.setValue(SPAN_KEY, span);
}

/**
 * Starts a span (a child of `parent`, else of the active span); undefined when
 * telemetry is off. The caller ends it.
 */
export function startSpan(
  name: string,
  attributes: Attributes = {},
  parent?: Parent,
  kind: number = SpanKind.INTERNAL,
): Span | undefined {
  const otel = tracing();
  if (otel === undefined) return undefined;
  return otel.trace.getTracer(SCOPE_NAME).startSpan(
    name,
    { attributes, kind },
    contextWith(otel, parent),
  );
}

/** Marks `span` failed with `err` (status ERROR and an exception event). */
export function failSpan(span: Span | undefined, err: unknown): void {
  if (span === undefined) return;
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({
    code: SpanStatus.ERROR,
    message: err instanceof Error ? err.message : String(err),
  });
}

/**
 * Runs `fn` in a new span that is active while it runs (spans started inside become
 * its children, across `await`s too), and ends it when `fn` settles; a throw marks
 * it failed. With telemetry off, just runs `fn` (with no span).
 */
export async function withSpan<T>(
  name: string,
  attributes: Attributes,
  fn: (span: Span | undefined) => T | Promise<T>,
  parent?: Parent,
  kind: number = SpanKind.INTERNAL,
): Promise<T> {
  const otel = tracing();
  if (otel === undefined) return await fn(undefined);
  const span = startSpan(name, attributes, parent, kind)!;
  const context = otel.context.active().setValue(SPAN_KEY, span);
  try {
    return await otel.context.with(context, () => fn(span));
  } catch (err) {
    failSpan(span, err);
    throw err;
  } finally {
    span.end();
  }
}

/** The span active here (e.g. Deno's span of the `Deno.serve` request being served). */
export function activeSpan(): Span | undefined {
  const otel = tracing();
  if (otel === undefined) return undefined;
  const span = otel.context.active().getValue(SPAN_KEY) as Span | undefined;
  return span !== undefined && typeof span.setAttribute === "function" ? span : undefined;
}

/** The active span's context as a `traceparent` header, for another process. */
export function activeTraceparent(): string | undefined {
  const span = activeSpan();
  return span === undefined ? undefined : formatTraceparent(span.spanContext());
}

/** Totals of one metric, kept in the process for {@linkcode metricsSummary}. */
interface Totals {
  kind: "counter" | "histogram";
  count: number;
  sum: number;
  max: number;
}

const totals = new Map<string, Totals>();
const NOOP_COUNTER = { add: (_value: number, _attributes?: Attributes) => {} };

function totalsOf(kind: Totals["kind"], name: string): Totals {
  let t = totals.get(name);
  if (t === undefined) totals.set(name, t = { kind, count: 0, sum: 0, max: -Infinity });
  return t;
}

function keep(t: Totals, value: number): void {
  t.count++;
  t.sum += value;
  if (value > t.max) t.max = value;
}

/**
 * How often batched counter series ({@linkcode Counter.series}) are handed to the
 * exporter, in ms: well under the export interval (60 s by default), so that an
 * export lags the counts by at most this much.
 */
export const METRICS_BATCH_MS = 1_000;

/** A batched series: what was added since the last {@linkcode flushMetrics}. */
interface Batch {
  pending: number;
  attributes: Attributes;
  exported: { add(value: number, attributes?: Attributes): void };
}

const batches: Batch[] = [];
let batchTimer: ReturnType<typeof setInterval> | undefined;

/**
 * Hands what batched counter series summed since the last call to the exporter.
 * Runs every {@linkcode METRICS_BATCH_MS}; call it too before a thread or process that
 * exports ends, so that its last counts are exported.
 */
export function flushMetrics(): void {
  for (const b of batches) {
    if (b.pending === 0) continue;
    const value = b.pending;
    b.pending = 0;
    b.exported.add(value, b.attributes);
  }
}

/**
 * A counter exported as an OpenTelemetry sum (monotonic unless `upDown`), whose total
 * is also kept for {@linkcode metricsSummary} (telemetry on or off).
 */
export function counter(name: string, options: InstrumentOptions = {}, upDown = false): Counter {
  const shimMeter = meter();
  const exported = shimMeter === undefined
    ? NOOP_COUNTER
    : upDown
    ? shimMeter.createUpDownCounter(name, options)
    : shimMeter.createCounter(name, options);
  const t = totalsOf("counter", name);
  return {
    add: (value, attributes) => {
      keep(t, value);
      exported.add(value, attributes);
    },
    series: (attributes) => {
      if (shimMeter === undefined) return { add: (value) => keep(t, value) };
      const batch: Batch = { pending: 0, attributes, exported };
      batches.push(batch);
      if (batchTimer === undefined) {
        batchTimer = setInterval(flushMetrics, METRICS_BATCH_MS);
        Deno.unrefTimer(batchTimer);
      }
      return {
        add: (value) => {
          keep(t, value);
          batch.pending += value;
        },
      };
    },
  };
}

/** A histogram, exported and kept as {@linkcode counter} is. */
export function histogram(name: string, options: InstrumentOptions = {}): Histogram {
  const exported = meter()?.createHistogram(name, options);
  const t = totalsOf("histogram", name);
  return {
    record: (value, attributes) => {
      keep(t, value);
      exported?.record(value, attributes);
    },
  };
}

/** A gauge read when metrics are exported (nothing when telemetry is off). */
export function gauge(
  name: string,
  options: InstrumentOptions,
  read: () => number | undefined,
): void {
  meter()?.createObservableGauge(name, options).addCallback(
    (result) => {
      const value = read();
      if (value !== undefined) result.observe(value);
    },
  );
}

/**
 * One line with every counter and histogram this process counted anything in: `name=sum` for a
 * counter's total, `name=count/avg/max` for a histogram (ms for durations). The
 * numbers an operator finds in the shim's log without a collector.
 */
export function metricsSummary(): string {
  const parts: string[] = [];
  for (const [name, t] of [...totals].sort(([a], [b]) => a < b ? -1 : 1)) {
    if (t.count === 0) continue;
    parts.push(
      t.kind === "counter"
        ? `${name}=${t.sum}`
        : `${name}=${t.count}/${(t.sum / t.count).toFixed(2)}/${t.max.toFixed(2)}`,
    );
  }
  return parts.join(" ");
}
