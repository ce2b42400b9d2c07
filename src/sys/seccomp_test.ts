import assert from "node:assert/strict";
import { DENIED_SYSCALLS, guestRunnerFilter } from "./seccomp.ts";

Deno.test("the filter: one instruction per denied call and a few more, for both architectures", () => {
  for (const [arch, column] of [["x86_64", 0], ["aarch64", 1]] as const) {
    const filter = guestRunnerFilter(arch);
    assert.equal(filter.length % 8, 0);
    const denied = Object.values(DENIED_SYSCALLS).filter((n) => n[column] !== null).length;
    // arch check (2), nr load, x32 check (x86-64), clone3, clone (4), three returns.
    assert.equal(filter.length / 8, denied + (arch === "x86_64" ? 11 : 10));
    const view = new DataView(filter.buffer);
    // The last three instructions are returns (BPF_RET|BPF_K): allow, EPERM, ENOSYS.
    const rets = [3, 2, 1].map((back) => filter.length / 8 - back);
    assert.deepEqual(rets.map((pc) => view.getUint16(pc * 8, true)), [6, 6, 6]);
    assert.deepEqual(rets.map((pc) => view.getUint32(pc * 8 + 4, true)), [
      0x7fff0000,
      0x00050001,
      0x00050026,
    ]);
  }
});

/**
 * A process (in a mount namespace of its own) that mounts a tmpfs, starts a Worker
 * (another thread), installs the filter, then tries again from both threads and
 * checks that what a runner does still works. Prints one JSON line.
 */
const PROBE = `
import { installGuestRunnerFilter } from ${
  JSON.stringify(new URL("./seccomp.ts", import.meta.url).href)
};
const SYMBOLS = {
  mount: { parameters: ["buffer", "buffer", "buffer", "usize", "buffer"], result: "i32" },
  unshare: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
};
const c = (s) => new TextEncoder().encode(s + "\\0");
const lib = Deno.dlopen("libc.so.6", SYMBOLS);
const errno = () => new Deno.UnsafePointerView(lib.symbols.__errno_location()).getInt32();
const tryMount = () => lib.symbols.mount(c("none"), c(dir), c("tmpfs"), 0n, null) === 0 ? 0 : errno();
const dir = Deno.makeTempDirSync();
const out = { before: tryMount() };
const workerSrc = \`
  const lib = Deno.dlopen("libc.so.6", ${"${JSON.stringify(SYMBOLS)}"});
  const c = (s) => new TextEncoder().encode(s + "\\\\0");
  self.onmessage = (e) => {
    const r = lib.symbols.mount(c("none"), c(e.data), c("tmpfs"), 0n, null);
    self.postMessage(r === 0 ? 0 : new Deno.UnsafePointerView(lib.symbols.__errno_location()).getInt32());
  };\`;
const url = URL.createObjectURL(new Blob([workerSrc], { type: "text/javascript" }));
const ask = (w) => new Promise((res) => { w.onmessage = (e) => res(e.data); w.postMessage(dir); });
const early = new Worker(url, { type: "module" });
out.otherThreadBefore = await ask(early);
installGuestRunnerFilter();
out.after = tryMount();
out.otherThread = await ask(early);
out.unshare = lib.symbols.unshare(0x20000) === 0 ? 0 : errno();
const late = new Worker(url, { type: "module" });
out.newThread = await ask(late);
early.terminate(); late.terminate();
out.command = (await new Deno.Command("true").output()).code;
const f = Deno.makeTempFileSync(); Deno.writeTextFileSync(f, "x"); out.file = Deno.readTextFileSync(f);
out.seccomp = [...Deno.readDirSync("/proc/self/task")].map((t) =>
  Deno.readTextFileSync("/proc/self/task/" + t.name + "/status").match(/^Seccomp:\\s+(\\d)/m)[1]);
console.log(JSON.stringify(out));
`;

Deno.test({
  name: "the filter: on every thread, old and new; mounts and namespaces refused, the rest works",
  ignore: Deno.build.os !== "linux",
  async fn() {
    const probe = await Deno.makeTempFile({ suffix: ".js" });
    try {
      await Deno.writeTextFile(probe, PROBE);
      const out = await new Deno.Command("unshare", {
        args: ["--mount", "--propagation", "private", Deno.execPath(), "run", "-A", probe],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      const r = JSON.parse(text);
      const EPERM = 1;
      assert.equal(r.before, 0, "mount before the filter (root, own namespace) works");
      assert.equal(r.otherThreadBefore, 0, "so it does from another thread");
      assert.equal(r.after, EPERM);
      assert.equal(r.otherThread, EPERM, "a thread started before the filter has it too");
      assert.equal(r.newThread, EPERM, "a thread started after it inherits it");
      assert.equal(r.unshare, EPERM);
      assert.equal(r.command, 0, "processes still start");
      assert.equal(r.file, "x");
      assert.ok(r.seccomp.length > 1 && r.seccomp.every((s: string) => s === "2"), text);
    } finally {
      await Deno.remove(probe);
    }
  },
});
