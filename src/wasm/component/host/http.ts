/**
 * `wasi:http@0.2.x` (types, outgoing-handler) over Deno's `Request`/`Response`/`fetch`.
 *
 * Incoming requests ({@linkcode createIncomingCall}) wrap a `Request` from `Deno.serve`;
 * the guest's response becomes a `Response` whose body streams what the guest writes,
 * with backpressure (see {@linkcode BodySink}). Outgoing requests go through `fetch`.
 * Header values are byte strings (Latin-1), as in the Fetch standard, so any byte the
 * guest sends survives the round trip.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import { EMPTY_SOURCE, InputStream, IoError, OutputStream, Pollable } from "./io.ts";
import { BodySink, StreamSource } from "./pipes.ts";

/** Microtask hops {@linkcode OutgoingResponse.ready} waits before an event-loop turn. */
const READY_HOPS = 4;

/** Resolves after `hops` rounds of the microtask queue. */
async function afterMicrotasks(hops: number): Promise<void> {
  for (let i = 0; i < hops; i++) await undefined;
}

/** A `wasi:http/types.error-code` value. */
export interface ErrorCode {
  tag: string;
  val?: unknown;
}

/** A `wasi:http/types.method` value. */
export type Method = { tag: string; val?: string };

/** A `wasi:http/types.scheme` value. */
export type Scheme = { tag: "HTTP" } | { tag: "HTTPS" } | { tag: "other"; val: string };

/** Hop-by-hop and connection-level headers a guest may not set (as wasmtime). */
const FORBIDDEN_HEADERS = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "proxy-authorization",
  "te",
  "transfer-encoding",
  "upgrade",
  "host",
  "http2-settings",
]);
/** RFC 9110 token (header names, methods). */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Methods WASI names; any other is `other(name)`. */
const KNOWN_METHODS = new Set([
  "get",
  "head",
  "post",
  "put",
  "delete",
  "connect",
  "options",
  "trace",
  "patch",
]);
/** Statuses whose responses carry no body. */
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);
/** Default connect and first-byte timeout of outgoing requests (as wasmtime). */
const DEFAULT_OUTGOING_TIMEOUT_NS = 600_000_000_000n;
const NS_PER_MS = 1_000_000n;

/** Bytes of a Latin-1 string (a header value as Fetch gives it). */
export function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

/** The Latin-1 string of `bytes` (a header value as Fetch takes it). */
export function latin1String(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    out += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return out;
}

function validValue(value: Uint8Array): boolean {
  for (const b of value) {
    if ((b < 0x20 && b !== 0x09) || b === 0x7f) return false;
  }
  return true;
}

function checkField(name: string, value?: Uint8Array): string {
  if (!TOKEN.test(name)) throw { tag: "invalid-syntax" };
  if (value !== undefined && !validValue(value)) throw { tag: "invalid-syntax" };
  const lower = name.toLowerCase();
  if (FORBIDDEN_HEADERS.has(lower)) throw { tag: "forbidden" };
  return lower;
}

const LOCK = Symbol("lock");
const ENTRIES = Symbol("entries");

/** The `fields` resource (headers and trailers). Names are kept lower-case. */
export class Fields {
  #entries: [string, Uint8Array][] = [];
  #immutable = false;

  /** The `from-list` static function. */
  static fromList(entries: [string, Uint8Array][]): Fields {
    const fields = new Fields();
    for (const [name, value] of entries) fields.#entries.push([checkField(name, value), value]);
    return fields;
  }

  /** Immutable fields from trusted entries (already lower-case). @internal */
  static [ENTRIES](entries: [string, Uint8Array][]): Fields {
    const fields = new Fields();
    fields.#entries = entries;
    fields.#immutable = true;
    return fields;
  }

  /** Makes these fields immutable (they became part of a request or response). @internal */
  [LOCK](): this {
    this.#immutable = true;
    return this;
  }

  #mutable(): void {
    if (this.#immutable) throw { tag: "immutable" };
  }

  /** The `get` method. */
  get(name: string): Uint8Array[] {
    const lower = name.toLowerCase();
    const out: Uint8Array[] = [];
    for (const [n, v] of this.#entries) if (n === lower) out.push(v.slice());
    return out;
  }

  /** The `has` method. */
  has(name: string): boolean {
    const lower = name.toLowerCase();
    return this.#entries.some(([n]) => n === lower);
  }

  /** The `set` method. */
  set(name: string, values: Uint8Array[]): void {
    this.#mutable();
    const lower = checkField(name);
    for (const v of values) checkField(name, v);
    this.#entries = this.#entries.filter(([n]) => n !== lower);
    for (const v of values) this.#entries.push([lower, v]);
  }

  /** The `delete` method. */
  delete(name: string): void {
    this.#mutable();
    const lower = checkField(name);
    this.#entries = this.#entries.filter(([n]) => n !== lower);
  }

  /** The `get-and-delete` method (0.2.x later minors). */
  getAndDelete(name: string): Uint8Array[] {
    const values = this.get(name);
    this.delete(name);
    return values;
  }

  /** The `append` method. */
  append(name: string, value: Uint8Array): void {
    this.#mutable();
    this.#entries.push([checkField(name, value), value]);
  }

  /** The `entries` method. */
  entries(): [string, Uint8Array][] {
    return this.#entries.map(([n, v]) => [n, v.slice()]);
  }

  /** The `clone` method: a mutable copy. */
  clone(): Fields {
    const fields = new Fields();
    fields.#entries = this.#entries.map(([n, v]) => [n, v]);
    return fields;
  }

  /** As Fetch headers, or undefined if there are none (a `Response` then makes its own). @internal */
  toHeaders(): Headers | undefined {
    if (this.#entries.length === 0) return undefined;
    const headers = new Headers();
    for (const [n, v] of this.#entries) headers.append(n, latin1String(v));
    return headers;
  }
}

/** Immutable fields holding the headers of a Fetch message (minus hop-by-hop ones). */
function fieldsOf(headers: Headers): Fields {
  const entries: [string, Uint8Array][] = [];
  for (const [name, value] of headers) {
    if (name !== "host" && FORBIDDEN_HEADERS.has(name)) continue;
    entries.push([name, latin1Bytes(value)]);
  }
  return Fields[ENTRIES](entries);
}

/** The `future-trailers` resource: trailers are not available from Deno, so always none. */
export class FutureTrailers {
  #body: StreamSource | null;
  #taken = false;

  /** Trailers of a body read through `source` (ready once it is read to the end). */
  constructor(source: StreamSource | null) {
    this.#body = source;
  }

  /** The `subscribe` method. */
  subscribe(): Pollable {
    return new Pollable({
      ready: () => this.#ready(),
      wait: () => this.#body?.whenReadable() ?? Promise.resolve(),
    });
  }

  #ready(): boolean {
    return this.#body === null || this.#body.finished;
  }

  /** The `get` method: `option<result<result<option<trailers>, error-code>>>`. */
  get(): unknown {
    if (!this.#ready()) return undefined;
    if (this.#taken) return { tag: "err", val: undefined };
    this.#taken = true;
    return { tag: "ok", val: { tag: "ok", val: undefined } };
  }
}

/** The `incoming-body` resource. */
export class IncomingBody {
  #stream: InputStream | null;
  #source: StreamSource | null;
  #finished = false;

  /** A body reading `source` (null: empty body). */
  constructor(source: StreamSource | null) {
    this.#source = source;
    this.#stream = new InputStream(source ?? EMPTY_SOURCE);
  }

  /** The `stream` method: the body's bytes, once. */
  stream(): InputStream {
    const stream = this.#stream;
    if (stream === null) throw undefined;
    this.#stream = null;
    return stream;
  }

  /** The `finish` static function. */
  static finish(body: IncomingBody): FutureTrailers {
    body.#finished = true;
    return new FutureTrailers(body.#source);
  }

  /** Resource drop: stops reading. */
  [Symbol.dispose](): void {
    if (!this.#finished) this.#source?.close();
  }
}

/** The `incoming-request` resource, over a Fetch `Request`. */
export class IncomingRequest {
  #request: Request;
  /** The request's URL, read when the guest first asks for a part of it. */
  #url: string | null = null;
  #pathStart = 0;
  #headers: Fields | null = null;
  #body: IncomingBody | null = null;
  #bodyStream: ReadableStream<Uint8Array> | null;
  #consumed = false;

  /**
   * The guest's view of `request`.
   *
   * @param body what the guest reads as the body (default: the request's own), e.g. the
   *   server's size- and time-limited view of it
   */
  constructor(request: Request, body: ReadableStream<Uint8Array> | null = request.body) {
    this.#request = request;
    this.#bodyStream = body;
  }

  #href(): string {
    if (this.#url === null) {
      const url = this.#url = this.#request.url;
      const slash = url.indexOf("/", url.indexOf("://") + 3);
      this.#pathStart = slash < 0 ? url.length : slash;
    }
    return this.#url;
  }

  /** The `method` method. */
  method(): Method {
    return methodOf(this.#request.method);
  }

  /** The `path-with-query` method. */
  pathWithQuery(): string {
    const url = this.#href();
    return this.#pathStart >= url.length ? "/" : url.slice(this.#pathStart);
  }

  /** The `scheme` method. */
  scheme(): Scheme {
    return this.#href().startsWith("https:") ? { tag: "HTTPS" } : { tag: "HTTP" };
  }

  /** The `authority` method. */
  authority(): string {
    const url = this.#href();
    return url.slice(url.indexOf("://") + 3, this.#pathStart);
  }

  /** The `headers` method. */
  headers(): Fields {
    return this.#headers ??= fieldsOf(this.#request.headers);
  }

  /** The `consume` method: the body, once. */
  consume(): IncomingBody {
    if (this.#consumed) throw undefined;
    this.#consumed = true;
    const stream = this.#bodyStream;
    this.#body = new IncomingBody(stream ? new StreamSource(stream, bodyReadError) : null);
    return this.#body;
  }
}

/**
 * A request body the server stopped reading (it grew over the size limit, or the
 * client stopped sending): the guest's read fails with `code`.
 */
export class IncomingBodyError extends Error {
  /** The `error-code` the guest gets from `http-error-code` on the stream error. */
  readonly code: ErrorCode;

  /** The body failed because of `message`; the guest sees `code`. */
  constructor(message: string, code: ErrorCode) {
    super(message);
    this.name = "IncomingBodyError";
    this.code = code;
  }
}

function bodyReadError(err: unknown): IoError {
  const error = new IoError(`reading the request body failed: ${messageOf(err)}`);
  error.code = err instanceof IncomingBodyError ? err.code : { tag: "connection-terminated" };
  return error;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function methodOf(name: string): Method {
  const lower = name.toLowerCase();
  return KNOWN_METHODS.has(lower) && name === name.toUpperCase()
    ? { tag: lower }
    : { tag: "other", val: name };
}

function methodName(method: Method): string {
  return method.tag === "other" ? String(method.val) : method.tag.toUpperCase();
}

/**
 * The error an outgoing body is cut with (the guest trapped, returned or dropped it
 * before finishing it). Whoever cut it has already said why.
 */
export class BodyCut extends Error {
  /** A body cut because of `reason`. */
  constructor(reason: string) {
    super(reason);
    this.name = "BodyCut";
  }
}

/** What an outgoing body does when it ends. */
interface BodyEnd {
  sink: BodySink;
  finished: boolean;
  /** Why the body was cut, if it was. */
  cut: string | null;
}

/** The `outgoing-body` resource: what the guest writes, as a streamed body. */
export class OutgoingBody {
  #end: BodyEnd;
  #stream: OutputStream | null;

  /** A body writing into `sink`. @internal */
  constructor(sink: BodySink) {
    this.#end = { sink, finished: false, cut: null };
    this.#stream = new OutputStream(sink);
  }

  /** The `write` method: the body's output stream, once. */
  write(): OutputStream {
    const stream = this.#stream;
    if (stream === null) throw undefined;
    this.#stream = null;
    return stream;
  }

  /** The `finish` static function: the body is complete (trailers are not supported). */
  static finish(body: OutgoingBody, trailers?: Fields): void {
    if (body.#end.finished) throw { tag: "internal-error", val: "body already finished" };
    body.#end.finished = true;
    if (trailers !== undefined && trailers.entries().length > 0) {
      body.#end.cut = "trailers are not supported by this host";
      body.#end.sink.abort(new BodyCut(body.#end.cut));
      throw { tag: "internal-error", val: "trailers are not supported by this host" };
    }
    body.#end.sink.end();
  }

  /** Resource drop: a body dropped before `finish` is incomplete, and is cut. */
  [Symbol.dispose](): void {
    if (this.#end.finished) return;
    this.#end.finished = true;
    this.#end.cut = "the component dropped the body before finishing it";
    this.#end.sink.abort(new BodyCut(this.#end.cut));
  }

  /** True once finished or dropped. @internal */
  get ended(): boolean {
    return this.#end.finished;
  }

  /** Why the body was cut (dropped unfinished, trailers), or null. @internal */
  get cut(): string | null {
    return this.#end.cut;
  }

  /** Cuts the body if it is still open (its instance trapped or returned). @internal */
  abandon(reason: string): void {
    if (this.#end.finished) return;
    this.#end.finished = true;
    this.#end.cut = reason;
    this.#end.sink.abort(new BodyCut(reason));
  }
}

/** The `outgoing-response` resource. */
export class OutgoingResponse {
  #headers: Fields;
  #status = 200;
  #body: OutgoingBody | null = null;
  #sink: BodySink | null = null;

  /** The `constructor(headers)`: the headers become immutable. */
  constructor(headers: Fields) {
    this.#headers = headers[LOCK]();
  }

  /** The `status-code` method. */
  statusCode(): number {
    return this.#status;
  }

  /** The `set-status-code` method. */
  setStatusCode(status: number): void {
    if (!Number.isInteger(status) || status < 100 || status > 999) throw undefined;
    this.#status = status;
  }

  /** The `headers` method. */
  headers(): Fields {
    return this.#headers;
  }

  /** The `body` method: once. */
  body(): OutgoingBody {
    if (this.#body !== null) throw undefined;
    this.#sink = new BodySink();
    this.#body = new OutgoingBody(this.#sink);
    return this.#body;
  }

  /**
   * True if it is best turned into a `Response` now: it has no body to wait for, or its
   * body has ended (see {@linkcode ready}). @internal
   */
  get complete(): boolean {
    const sink = this.#sink;
    return sink === null || sink.ended || NULL_BODY_STATUSES.has(this.#status);
  }

  /** As a Fetch `Response`: the whole body if it has ended already, else streamed. @internal */
  toResponse(): Response {
    const status = this.#status;
    if (status < 200 || status > 599) {
      throw new Error(`the component answered with status ${status}, which cannot be sent`);
    }
    const sink = NULL_BODY_STATUSES.has(status) ? null : this.#sink;
    const body = sink === null
      ? null
      : (sink.takeWhole() as Uint8Array<ArrayBuffer> | null) ?? sink.stream;
    return new Response(body, { status, headers: this.#headers.toHeaders() });
  }

  /**
   * Resolves when this response is best turned into a `Response`: once its body has
   * ended (then it is sent whole, see `BodySink`), `settled` (the guest's call) has
   * settled, or an event-loop turn has passed (the guest waits for something; its
   * body is streamed). Waiting is never observable: the event loop cannot send the
   * response while the guest runs. @internal
   */
  ready(settled: Promise<unknown>): Promise<void> {
    const sink = this.#sink;
    if (sink === null || NULL_BODY_STATUSES.has(this.#status)) return Promise.resolve();
    return new Promise((resolve) => {
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        resolve();
      };
      sink.whenEnded().then(finish);
      settled.then(finish, finish);
      // A small body ends within the microtasks the guest's last host calls queue (the
      // guest resumes in them); only a guest waiting for I/O needs an event-loop turn,
      // and an immediate costs more than these hops.
      afterMicrotasks(READY_HOPS).then(() => {
        if (!done) setImmediate(finish);
      });
    });
  }

  /** The body, if the guest asked for one. @internal */
  get outgoingBody(): OutgoingBody | null {
    return this.#body;
  }
}

/** How the server learns what the guest answered. */
export interface ResponseTarget {
  /** The guest set its response (ok) or an error code (err). */
  set(result: { tag: "ok"; val: OutgoingResponse } | { tag: "err"; val: ErrorCode }): void;
}

/** The `response-outparam` resource. */
export class ResponseOutparam {
  #target: ResponseTarget;
  #used = false;

  /** An outparam reporting to `target`. @internal */
  constructor(target: ResponseTarget) {
    this.#target = target;
  }

  /** The `set` static function. */
  static set(
    param: ResponseOutparam,
    response: { tag: "ok"; val: OutgoingResponse } | { tag: "err"; val: ErrorCode },
  ): void {
    if (param.#used) throw new Error("response-outparam.set called twice");
    param.#used = true;
    param.#target.set(response);
  }
}

/** The `request-options` resource (durations in nanoseconds). */
export class RequestOptions {
  #connect: bigint | undefined;
  #firstByte: bigint | undefined;
  #betweenBytes: bigint | undefined;

  /** The `connect-timeout` method. */
  connectTimeout(): bigint | undefined {
    return this.#connect;
  }
  /** The `set-connect-timeout` method. */
  setConnectTimeout(duration: bigint | undefined): void {
    this.#connect = duration;
  }
  /** The `first-byte-timeout` method. */
  firstByteTimeout(): bigint | undefined {
    return this.#firstByte;
  }
  /** The `set-first-byte-timeout` method. */
  setFirstByteTimeout(duration: bigint | undefined): void {
    this.#firstByte = duration;
  }
  /** The `between-bytes-timeout` method. */
  betweenBytesTimeout(): bigint | undefined {
    return this.#betweenBytes;
  }
  /** The `set-between-bytes-timeout` method. */
  setBetweenBytesTimeout(duration: bigint | undefined): void {
    this.#betweenBytes = duration;
  }
}

/** The `outgoing-request` resource. */
export class OutgoingRequest {
  #headers: Fields;
  #method: Method = { tag: "get" };
  #scheme: Scheme | undefined;
  #authority: string | undefined;
  #path: string | undefined;
  #body: OutgoingBody | null = null;
  #sink: BodySink | null = null;

  /** The `constructor(headers)`: the headers become immutable. */
  constructor(headers: Fields) {
    this.#headers = headers[LOCK]();
  }

  /** The `body` method: once. */
  body(): OutgoingBody {
    if (this.#body !== null) throw undefined;
    this.#sink = new BodySink();
    this.#body = new OutgoingBody(this.#sink);
    return this.#body;
  }
  /** The `method` method. */
  method(): Method {
    return this.#method;
  }
  /** The `set-method` method. */
  setMethod(method: Method): void {
    if (method.tag === "other" && !TOKEN.test(String(method.val))) throw undefined;
    this.#method = method;
  }
  /** The `path-with-query` method. */
  pathWithQuery(): string | undefined {
    return this.#path;
  }
  /** The `set-path-with-query` method. */
  setPathWithQuery(path: string | undefined): void {
    if (path !== undefined && !/^[\x21-\x7e]*$/.test(path)) throw undefined;
    this.#path = path;
  }
  /** The `scheme` method. */
  scheme(): Scheme | undefined {
    return this.#scheme;
  }
  /** The `set-scheme` method. */
  setScheme(scheme: Scheme | undefined): void {
    if (scheme?.tag === "other" && !/^[A-Za-z][A-Za-z0-9+.-]*$/.test(scheme.val)) throw undefined;
    this.#scheme = scheme;
  }
  /** The `authority` method. */
  authority(): string | undefined {
    return this.#authority;
  }
  /** The `set-authority` method. */
  setAuthority(authority: string | undefined): void {
    if (authority !== undefined && !/^[A-Za-z0-9._~!$&'()*+,;=:%\[\]-]*$/.test(authority)) {
      throw undefined;
    }
    this.#authority = authority;
  }
  /** The `headers` method. */
  headers(): Fields {
    return this.#headers;
  }

  /** Sends the request with fetch. @internal */
  send(options: RequestOptions | undefined): FutureIncomingResponse {
    const scheme = this.#scheme ?? { tag: "HTTPS" };
    const schemeName = scheme.tag === "other" ? scheme.val.toLowerCase() : scheme.tag.toLowerCase();
    if (schemeName !== "http" && schemeName !== "https") throw { tag: "HTTP-protocol-error" };
    if (!this.#authority) throw { tag: "HTTP-request-URI-invalid" };
    let url: string;
    try {
      url = new URL(`${schemeName}://${this.#authority}${this.#path ?? "/"}`).href;
    } catch {
      throw { tag: "HTTP-request-URI-invalid" };
    }
    const method = methodName(this.#method);
    const init: RequestInit = { method, headers: this.#headers.toHeaders(), redirect: "manual" };
    if (this.#sink && method !== "GET" && method !== "HEAD") {
      init.body = this.#sink.stream;
      (init as { duplex?: string }).duplex = "half";
    }
    const connect = options?.connectTimeout() ?? DEFAULT_OUTGOING_TIMEOUT_NS;
    const firstByte = options?.firstByteTimeout() ?? DEFAULT_OUTGOING_TIMEOUT_NS;
    const limit = connect < firstByte ? connect : firstByte;
    return new FutureIncomingResponse(url, init, Number(limit / NS_PER_MS));
  }
}

/** Maps a fetch failure to a wasi:http `error-code`. */
export function fetchErrorCode(err: unknown, timedOut: boolean): ErrorCode {
  if (timedOut) return { tag: "connection-timeout" };
  const message = messageOf(err);
  if (err instanceof Deno.errors.NotCapable || /Requires net access/.test(message)) {
    return { tag: "HTTP-request-denied" };
  }
  if (/dns error|failed to lookup address|Name or service not known/i.test(message)) {
    return { tag: "DNS-error", val: { rcode: undefined, infoCode: undefined } };
  }
  if (/connection refused/i.test(message)) return { tag: "connection-refused" };
  if (/connection reset|connection closed|broken pipe/i.test(message)) {
    return { tag: "connection-terminated" };
  }
  return { tag: "internal-error", val: message };
}

/** The `future-incoming-response` resource: a fetch in flight. */
export class FutureIncomingResponse {
  #result: { tag: "ok"; val: IncomingResponse } | { tag: "err"; val: ErrorCode } | undefined;
  #settled: Promise<void>;
  #taken = false;
  #abort = new AbortController();

  /** Starts `fetch(url, init)`; gives up on the headers after `timeoutMs`. @internal */
  constructor(url: string, init: RequestInit, timeoutMs: number) {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      this.#abort.abort();
    }, Math.min(timeoutMs, 0x7fff_ffff));
    this.#settled = fetch(url, { ...init, signal: this.#abort.signal }).then(
      (response) => {
        this.#result = { tag: "ok", val: new IncomingResponse(response) };
      },
      (err) => {
        this.#result = { tag: "err", val: fetchErrorCode(err, timedOut) };
      },
    ).finally(() => clearTimeout(timer));
  }

  /** The `subscribe` method. */
  subscribe(): Pollable {
    return new Pollable({ ready: () => this.#result !== undefined, wait: () => this.#settled });
  }

  /** The `get` method: `option<result<result<incoming-response, error-code>>>`. */
  get(): unknown {
    if (this.#result === undefined) return undefined;
    if (this.#taken) return { tag: "err", val: undefined };
    this.#taken = true;
    return { tag: "ok", val: this.#result };
  }

  /** Resource drop: a request still waiting for its response is cancelled. */
  [Symbol.dispose](): void {
    if (this.#result === undefined) this.#abort.abort();
  }
}

/** The `incoming-response` resource, over a Fetch `Response`. */
export class IncomingResponse {
  #response: Response;
  #headers: Fields | null = null;
  #consumed = false;

  /** The guest's view of `response`. @internal */
  constructor(response: Response) {
    this.#response = response;
  }

  /** The `status` method. */
  status(): number {
    return this.#response.status;
  }

  /** The `headers` method. */
  headers(): Fields {
    return this.#headers ??= fieldsOf(this.#response.headers);
  }

  /** The `consume` method: the body, once. */
  consume(): IncomingBody {
    if (this.#consumed) throw undefined;
    this.#consumed = true;
    const stream = this.#response.body;
    return new IncomingBody(stream ? new StreamSource(stream, responseReadError) : null);
  }

  /** Resource drop: an unread body is cancelled. */
  [Symbol.dispose](): void {
    if (!this.#consumed) this.#response.body?.cancel().catch(() => {});
  }
}

function responseReadError(err: unknown): IoError {
  const error = new IoError(`reading the response body failed: ${messageOf(err)}`);
  error.code = { tag: "connection-terminated" };
  return error;
}

/** The `http-error-code` function: the wasi:http error behind a stream error, if any. */
function httpErrorCode(err: IoError): ErrorCode | undefined {
  return (err.code as ErrorCode | undefined) ?? undefined;
}

const typesImport = {
  Fields,
  FutureTrailers,
  IncomingBody,
  IncomingRequest,
  IncomingResponse,
  OutgoingBody,
  OutgoingRequest,
  OutgoingResponse,
  RequestOptions,
  ResponseOutparam,
  FutureIncomingResponse,
  httpErrorCode,
};

const outgoingHandlerImport = {
  handle: (request: OutgoingRequest, options?: RequestOptions) => request.send(options),
};

/** The `wasi:http/*` imports (no per-instance state). */
export const httpImports: Record<string, Record<string, unknown>> = {
  "wasi:http/types": typesImport,
  "wasi:http/outgoing-handler": outgoingHandlerImport,
};

/** One request handed to a guest, and what it answered. */
export interface IncomingCall {
  /** The `incoming-request` argument. */
  request: IncomingRequest;
  /** The `response-outparam` argument. */
  outparam: ResponseOutparam;
  /** Settles when the guest calls `response-outparam.set`. */
  response: Promise<{ tag: "ok"; val: OutgoingResponse } | { tag: "err"; val: ErrorCode }>;
}

/**
 * The arguments of `wasi:http/incoming-handler.handle` for a Fetch request: the guest
 * reads `body`, and its answer goes to `target` (as it calls `response-outparam.set`).
 */
export function incomingCallTo(
  request: Request,
  body: ReadableStream<Uint8Array> | null,
  target: ResponseTarget,
): { request: IncomingRequest; outparam: ResponseOutparam } {
  return { request: new IncomingRequest(request, body), outparam: new ResponseOutparam(target) };
}

/**
 * Wraps a Fetch request for `wasi:http/incoming-handler.handle`; the guest reads `body`
 * (default: the request's own body).
 */
export function createIncomingCall(
  request: Request,
  body: ReadableStream<Uint8Array> | null = request.body,
): IncomingCall {
  let resolve!: (
    result: { tag: "ok"; val: OutgoingResponse } | { tag: "err"; val: ErrorCode },
  ) => void;
  const response = new Promise<
    { tag: "ok"; val: OutgoingResponse } | { tag: "err"; val: ErrorCode }
  >((r) => resolve = r);
  return {
    request: new IncomingRequest(request, body),
    outparam: new ResponseOutparam({ set: resolve }),
    response,
  };
}
