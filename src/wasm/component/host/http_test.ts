import assert from "node:assert/strict";
import {
  createIncomingCall,
  fetchErrorCode,
  Fields,
  IncomingBody,
  latin1Bytes,
  latin1String,
  OutgoingBody,
  OutgoingResponse,
  ResponseOutparam,
} from "./http.ts";

const encoder = new TextEncoder();

function tagOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { tag?: string } | undefined)?.tag;
  }
  return undefined;
}

Deno.test("Fields validates names and values and refuses hop-by-hop headers", () => {
  const f = new Fields();
  f.append("X-Test", encoder.encode("a"));
  f.append("x-test", encoder.encode("b"));
  assert.deepEqual(f.get("X-TEST").map((v) => new TextDecoder().decode(v)), ["a", "b"]);
  assert.equal(tagOf(() => f.append("bad name", encoder.encode("x"))), "invalid-syntax");
  assert.equal(tagOf(() => f.append("x", encoder.encode("a\r\nb"))), "invalid-syntax");
  assert.equal(tagOf(() => f.set("Connection", [encoder.encode("close")])), "forbidden");
  assert.equal(
    tagOf(() => Fields.fromList([["transfer-encoding", encoder.encode("chunked")]])),
    "forbidden",
  );
  f.delete("x-test");
  assert.equal(f.has("x-test"), false);
});

Deno.test("headers become immutable once part of a response", () => {
  const headers = new Fields();
  const response = new OutgoingResponse(headers);
  assert.equal(tagOf(() => headers.append("a", encoder.encode("b"))), "immutable");
  const copy = response.headers().clone();
  copy.append("a", encoder.encode("b"));
  assert.equal(copy.has("a"), true);
});

Deno.test("header bytes survive the Latin-1 round trip", () => {
  const bytes = new Uint8Array([0x41, 0xe9, 0xff, 0x20]);
  assert.deepEqual(latin1Bytes(latin1String(bytes)), bytes);
});

Deno.test("an incoming request exposes method, path, scheme, authority and headers", () => {
  const call = createIncomingCall(
    new Request("http://example.test:8080/a/b?c=d", {
      method: "PATCH",
      headers: { "x-one": "1", connection: "keep-alive" },
    }),
  );
  const req = call.request;
  assert.deepEqual(req.method(), { tag: "patch" });
  assert.equal(req.pathWithQuery(), "/a/b?c=d");
  assert.deepEqual(req.scheme(), { tag: "HTTP" });
  assert.equal(req.authority(), "example.test:8080");
  assert.equal(req.headers().has("x-one"), true);
  assert.equal(req.headers().has("connection"), false);
  assert.equal(tagOf(() => req.headers().append("y", encoder.encode("z"))), "immutable");
  assert.deepEqual(
    createIncomingCall(new Request("http://h/", { method: "PURGE" })).request.method(),
    { tag: "other", val: "PURGE" },
  );
});

Deno.test("the guest's response streams out as it writes it", async () => {
  const call = createIncomingCall(new Request("http://h/"));
  const headers = Fields.fromList([["content-type", encoder.encode("text/plain")]]);
  const response = new OutgoingResponse(headers);
  response.setStatusCode(201);
  const body = response.body();
  ResponseOutparam.set(call.outparam, { tag: "ok", val: response });
  const result = await call.response;
  assert.equal(result.tag, "ok");
  const fetchResponse = (result.val as OutgoingResponse).toResponse();
  assert.equal(fetchResponse.status, 201);
  assert.equal(fetchResponse.headers.get("content-type"), "text/plain");
  const stream = body.write();
  stream.checkWrite();
  stream.write(encoder.encode("part 1, "));
  await stream.blockingWriteAndFlush(encoder.encode("part 2"));
  stream[Symbol.dispose]();
  OutgoingBody.finish(body);
  assert.equal(await fetchResponse.text(), "part 1, part 2");
});

Deno.test("a body dropped before finish is cut", async () => {
  const response = new OutgoingResponse(new Fields());
  const body = response.body();
  const fetchResponse = response.toResponse();
  body[Symbol.dispose]();
  assert.equal(body.cut, "the component dropped the body before finishing it");
  await assert.rejects(fetchResponse.text());
});

Deno.test("a request body is read through incoming-body", async () => {
  const call = createIncomingCall(new Request("http://h/", { method: "POST", body: "payload" }));
  const body = call.request.consume();
  assert.throws(() => call.request.consume(), (err: unknown) => err === undefined);
  const input = body.stream();
  const chunk = await input.blockingRead(100n);
  assert.equal(new TextDecoder().decode(chunk), "payload");
  const trailers = IncomingBody.finish(body);
  await trailers.subscribe().block();
  assert.deepEqual(trailers.get(), { tag: "ok", val: { tag: "ok", val: undefined } });
});

Deno.test("fetch failures map to wasi:http error codes", () => {
  assert.deepEqual(fetchErrorCode(new Error("x"), true), { tag: "connection-timeout" });
  assert.deepEqual(
    fetchErrorCode(
      new TypeError("error sending request: dns error: failed to lookup address"),
      false,
    ),
    { tag: "DNS-error", val: { rcode: undefined, infoCode: undefined } },
  );
  assert.deepEqual(
    fetchErrorCode(new TypeError("tcp connect error: Connection refused (os error 111)"), false),
    { tag: "connection-refused" },
  );
  assert.deepEqual(fetchErrorCode(new Error("weird"), false), {
    tag: "internal-error",
    val: "weird",
  });
});
