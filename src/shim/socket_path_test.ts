import assert from "node:assert/strict";
import { joinClean, socketPath, stripUnix } from "./socket_path.ts";

Deno.test("joinClean cleans like Go filepath.Join", () => {
  assert.equal(
    joinClean("/run/containerd/containerd.sock", "default", "t1"),
    "/run/containerd/containerd.sock/default/t1",
  );
  assert.equal(joinClean("/a//b/", "./c", "../d"), "/a/b/d");
  assert.equal(joinClean("a", "..", ".."), "..");
  assert.equal(joinClean("/", ".."), "/");
});

Deno.test("socketPath is sha256 of address/ns/group under the socket dir", async () => {
  const p = await socketPath("/run/containerd/containerd.sock", "default", "t1");
  const digest = new Uint8Array(
    await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode("/run/containerd/containerd.sock/default/t1"),
    ),
  );
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  assert.equal(p, `/run/containerd/s/${hex}`);
  await assert.rejects(() => socketPath("/a", "n", "g", "/" + "x".repeat(60)), /over the limit/);
});

Deno.test("stripUnix drops the unix:// scheme", () => {
  assert.equal(stripUnix("unix:///x"), "/x");
  assert.equal(stripUnix("/x"), "/x");
});
