/**
 * A span per task API call, and the calls' metrics.
 *
 * Which trace a call joins: the W3C `traceparent` containerd sent in the request's
 * ttrpc metadata (containerd 2.x, with tracing on), else the trace of the task's
 * Create (so that one container's calls, from Create to Delete, are one trace), else
 * the trace context the server was started with ({@linkcode TRACECONTEXT_ENV}), else
 * a new trace.
 *
 * @module
 */

import type { CallContext } from "../ttrpc/server.ts";
import {
  type Attributes,
  counter,
  histogram,
  parseTraceparent,
  type SpanContext,
  SpanKind,
  withSpan,
} from "../sys/telemetry.ts";

/** The ttrpc metadata key of a W3C trace context (otelttrpc's, as HTTP's header). */
export const TRACEPARENT_METADATA = "traceparent";

const calls = counter("shim.rpc.calls", { description: "task API calls answered" });
const errors = counter("shim.rpc.errors", { description: "task API calls answered with an error" });
const duration = histogram("shim.rpc.duration", {
  description: "time to answer a task API call",
  unit: "ms",
});

/** Options of {@linkcode RpcSpans}. */
export interface RpcSpansOptions {
  /** The containerd namespace the server serves (an attribute of every span). */
  namespace?: string;
  /** The trace context the server was started with, if any. */
  parent?: SpanContext;
  /** A debug line per call (method, id, time, outcome). */
  debug?: (line: string) => void;
}

/** Starts and ends the span of each call; remembers each task's Create span. */
export class RpcSpans {
  #options: RpcSpansOptions;
  /** The context of each live task's Create span, the parent of its later calls. */
  #tasks = new Map<string, SpanContext>();

  constructor(options: RpcSpansOptions = {}) {
    this.#options = options;
  }

  /** The parent a call about task `id` joins (see the module documentation). */
  parentOf(ctx: Pick<CallContext, "metadata" | "method">, id: string): SpanContext | undefined {
    const sent = parseTraceparent(ctx.metadata.get(TRACEPARENT_METADATA)?.[0]);
    if (sent !== undefined) return sent;
    if (ctx.method !== "Create") {
      const task = this.#tasks.get(id);
      if (task !== undefined) return task;
    }
    return this.#options.parent;
  }

  /**
   * Runs `fn`, the answer to a call about task `id`, in the call's span; `codeOf` gives
   * the gRPC status code a failure is answered with.
   */
  async around<T>(
    ctx: Pick<CallContext, "metadata" | "method" | "service">,
    id: string,
    fn: () => T | Promise<T>,
    codeOf: (err: unknown) => number,
  ): Promise<T> {
    const started = performance.now();
    const labels: Attributes = { "rpc.method": ctx.method };
    const attributes: Attributes = {
      "rpc.system": "ttrpc",
      "rpc.service": ctx.service,
      "rpc.method": ctx.method,
      "container.id": id,
    };
    if (this.#options.namespace) attributes["containerd.namespace"] = this.#options.namespace;
    let outcome = "ok";
    try {
      return await withSpan(
        `${ctx.service}/${ctx.method}`,
        attributes,
        async (span) => {
          try {
            const result = await fn();
            if (span && ctx.method === "Create") this.#tasks.set(id, span.spanContext());
            return result;
          } catch (err) {
            const code = codeOf(err);
            span?.setAttribute("rpc.grpc.status_code", code);
            outcome = `error code ${code}: ${err instanceof Error ? err.message : String(err)}`;
            errors.add(1, { ...labels, "rpc.grpc.status_code": code });
            throw err;
          } finally {
            if (ctx.method === "Delete") this.#tasks.delete(id);
          }
        },
        this.parentOf(ctx, id),
        SpanKind.SERVER,
      );
    } finally {
      const ms = performance.now() - started;
      calls.add(1, labels);
      duration.record(ms, labels);
      this.#options.debug?.(`task ${id}: ${ctx.method} ${outcome} in ${ms.toFixed(1)} ms`);
    }
  }
}
