import assert from "node:assert/strict";
import { Code, type RpcError } from "../ttrpc/status.ts";
import { decodeResources, LINUX_RESOURCES_TYPE_URL } from "./task_api.ts";

const json = (v: unknown) => new TextEncoder().encode(JSON.stringify(v));

Deno.test("Update resources: OCI LinuxResources JSON under its type URL, or a clear error", () => {
  assert.deepEqual(
    decodeResources({ type_url: LINUX_RESOURCES_TYPE_URL, value: json({ memory: { limit: 1 } }) }),
    { memory: { limit: 1 } },
  );
  assert.deepEqual(decodeResources(undefined), {});
  const invalid = (e: RpcError) => e.code === Code.INVALID_ARGUMENT;
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
