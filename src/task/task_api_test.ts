import assert from "node:assert/strict";
import { Kind, notFound, ShimError } from "../errdefs/errors.ts";
import { Code, RpcError } from "../ttrpc/status.ts";
import { decodeResources, LINUX_RESOURCES_TYPE_URL, taskHandlers, toStatus } from "./task_api.ts";
import type { TaskService } from "./service.ts";

const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

Deno.test("Update resources: OCI LinuxResources JSON under its type URL, or a clear error", () => {
  assert.deepEqual(
    decodeResources({ type_url: LINUX_RESOURCES_TYPE_URL, value: json({ memory: { limit: 1 } }) }),
    { memory: { limit: 1 } },
  );
  assert.deepEqual(decodeResources(undefined), {});
  const invalid = (e: ShimError) => e.kind === Kind.INVALID_ARGUMENT;
  assert.throws(() => decodeResources({ type_url: "x.Y", value: json({}) }), invalid);
  assert.throws(
    () => decodeResources({ type_url: LINUX_RESOURCES_TYPE_URL, value: new Uint8Array([123]) }),
    /update resources are not valid JSON/,
  );
  assert.throws(
    () => decodeResources({ type_url: LINUX_RESOURCES_TYPE_URL, value: json({ cpu: [] }) }),
    /update resources: cpu must be an object/,
  );
});

Deno.test("errors become gRPC codes by their kind; any other error is UNKNOWN", () => {
  assert.deepEqual(toStatus(notFound("task t1")), {
    code: Code.NOT_FOUND,
    message: "task t1: not found",
  });
  assert.deepEqual(toStatus(new RpcError(Code.CANCELLED, "gone")), {
    code: Code.CANCELLED,
    message: "gone",
  });
  // A file the code did not expect to be missing is no NOT_FOUND for containerd.
  assert.deepEqual(toStatus(new Deno.errors.NotFound("open /x")), {
    code: Code.UNKNOWN,
    message: "open /x",
  });
  const codes = Object.values(Kind).map((kind) => toStatus(new ShimError(kind, "x")).code);
  assert.equal(new Set(codes).size, codes.length, "each kind has a code of its own");
});

Deno.test("a request that does not decode is INVALID_ARGUMENT naming its message", async () => {
  const handlers = taskHandlers({} as TaskService, { version: "v", shutdown() {} });
  await assert.rejects(
    async () => await handlers.Create(new Uint8Array([0x0a, 0x05, 0x61]), {} as never),
    (err: RpcError) =>
      err.code === Code.INVALID_ARGUMENT &&
      /cannot decode containerd\.task\.v2\.CreateTaskRequest: length 5/.test(err.message),
  );
  await assert.rejects(
    async () => await handlers.Start(new Uint8Array([0x08, 0x01]), {} as never),
    /cannot decode containerd\.task\.v2\.StartRequest: .*field 1 has wire type 0, want 2/,
  );
});
