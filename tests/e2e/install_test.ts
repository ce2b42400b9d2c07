/** scripts/install.sh into a temp PREFIX: idempotent, a working shim, and --uninstall. */

import assert from "node:assert/strict";
import { runInstall } from "./shim_install.ts";

Deno.test("install.sh installs a working shim, is idempotent, and --uninstall removes it", async () => {
  const prefix = await Deno.makeTempDir({ prefix: "shim-install-" });
  try {
    await runInstall(prefix);
    const again = await runInstall(prefix);
    assert.match(again, /installed (launcher|compiled)/);
    const shim = `${prefix}/bin/containerd-shim-wasmtime-v1`;
    const v = await new Deno.Command(shim, { args: ["-v"], stdout: "piped" }).output();
    assert.equal(v.code, 0);
    assert.match(new TextDecoder().decode(v.stdout), /containerd-shim-wasmtime-v1:\n.*Version: /s);
    const info = await new Deno.Command(shim, { args: ["-info"], stdout: "piped" }).output();
    assert.equal(info.code, 0);
    assert.ok(new TextDecoder().decode(info.stdout).includes("io.containerd.wasmtime.v1"));
    const builder = await new Deno.Command(`${prefix}/bin/oci-tar-builder`, {
      args: ["--help"],
      stdout: "piped",
    }).output();
    assert.equal(builder.code, 0);
    const bad = await new Deno.Command(shim, { args: ["-nope"], stderr: "piped" }).output();
    assert.equal(bad.code, 2);
    assert.match(new TextDecoder().decode(bad.stderr), /flag provided but not defined: -nope/);
    await runInstall(prefix, ["--uninstall"]);
    const left = [];
    for await (const e of Deno.readDir(`${prefix}/bin`)) left.push(e.name);
    assert.deepEqual(left, []);
    await assert.rejects(() => Deno.stat(`${prefix}/lib/containerd-shim-wasmtime`));
  } finally {
    await Deno.remove(prefix, { recursive: true });
  }
});
