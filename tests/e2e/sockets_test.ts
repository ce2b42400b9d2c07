/**
 * End to end: wasi:sockets for a wasi:cli command component under a private containerd
 * (`tests/fixtures/src/sockets.c`). Where a container may reach the network — a network
 * namespace it joins (as a pod's), or the node's (`--net-host`) — it connects over TCP
 * and resolves names with the container's own `/etc/hosts`; in a namespace of its own
 * (plain `ctr run`, which the shim does not create) every socket is `access-denied`.
 * Socket options reach the kernel's sockets from a runner of a non-root guest.
 */

import assert from "node:assert/strict";
import { type Containerd } from "./harness.ts";
import { fixture } from "./shim_install.ts";
import { assertNothingLeft } from "./ctr_util.ts";
import { startSuite } from "./suite.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const opts = { sanitizeOps: false, sanitizeResources: false };
/** The echo server's port, in the test's network namespace and on the node. */
const PORT = 19_000 + Math.floor(Math.random() * 1000);
/**
 * Reads a connection to its end, answers `<label> echo:` and what it read, closes;
 * forever. The label tells which network namespace answered.
 */
const ECHO_SERVER = `
  const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.args[0]) });
  console.log("ready");
  for await (const conn of listener) {
    (async () => {
      const buf = new Uint8Array(1024);
      let text = "";
      for (let n; (n = await conn.read(buf)) !== null;) text += new TextDecoder().decode(buf.subarray(0, n));
      await conn.write(new TextEncoder().encode(Deno.args[1] + " echo:" + text));
      conn.close();
    })().catch(() => {});
  }
`;

interface Env {
  cd: Containerd;
  image: string;
  tmp: string;
  netns: string;
  servers: Deno.ChildProcess[];
}

let env: Promise<Env> | undefined;

/** Starts the echo server (in network namespace `netns`, if given); resolves once it listens. */
async function startEcho(label: string, netns?: string): Promise<Deno.ChildProcess> {
  const deno = [Deno.execPath(), "eval", ECHO_SERVER, String(PORT), label];
  const [cmd, ...args] = netns ? ["ip", "netns", "exec", netns, ...deno] : deno;
  const child = new Deno.Command(cmd, { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const first = await reader.read();
  reader.releaseLock();
  if (first.value?.trim() !== "ready") {
    child.kill();
    throw new Error(`the echo server did not start: ${first.value}`);
  }
  return child;
}

function setup(): Promise<Env> {
  env ??= (async () => {
    const { cd, image, tmp } = await startSuite({
      name: "sockets",
      config: { entrypoint: ["/sockets.wasm"] },
      files: [{ path: "/sockets.wasm", hostPath: fixture("sockets.wasm") }],
    });
    // The container's /etc/hosts: a name neither the node nor DNS knows.
    await Deno.writeTextFile(`${tmp}/hosts`, "127.0.0.1 localhost\n127.0.0.1 backend.test\n");
    await Deno.chmod(tmp, 0o755);
    // A network namespace of the test's own, as CNI would make for a pod: loopback only.
    const netns = `shim-e2e-sockets-${Deno.pid}`;
    for (const args of [["netns", "add", netns], ["-n", netns, "link", "set", "lo", "up"]]) {
      const out = await new Deno.Command("ip", { args, stderr: "piped" }).output();
      if (!out.success) {
        throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
      }
    }
    const servers = [await startEcho("pod", netns), await startEcho("node")];
    return { cd, image, tmp, netns, servers };
  })();
  return env;
}

let seq = 0;
async function run(args: string[], runOpts: string[] = []) {
  const { cd, image } = await setup();
  return await cd.ctr(
    [
      "run",
      "--rm",
      "--runtime",
      RUNTIME,
      ...runOpts,
      image,
      `sock-${++seq}`,
      "/sockets.wasm",
      ...args,
    ],
    { stdin: "", timeoutMs: 60_000 },
  );
}

/**
 * Runs the guest as `uid` (and that gid) in network namespace `netns`, from a spec of
 * its own (ctr 1.6 has no `--user`).
 */
async function runAsUser(uid: number, args: string[], netns: string) {
  const { cd, tmp } = await setup();
  const root = `${tmp}/as-user/rootfs`;
  await Deno.mkdir(root, { recursive: true });
  await Deno.copyFile(fixture("sockets.wasm"), `${root}/sockets.wasm`);
  const out = await new Deno.Command("ctr", { args: ["oci", "spec"] }).output();
  const spec = JSON.parse(new TextDecoder().decode(out.stdout));
  spec.process.args = ["/sockets.wasm", ...args];
  spec.process.user = { uid, gid: uid };
  spec.process.terminal = false;
  spec.root = { path: root };
  spec.linux.namespaces = spec.linux.namespaces.map((ns: { type: string }) =>
    ns.type === "network" ? { type: "network", path: `/var/run/netns/${netns}` } : ns
  );
  const path = `${tmp}/spec-${++seq}.json`;
  await Deno.writeTextFile(path, JSON.stringify(spec));
  return await cd.ctr(
    ["run", "--rm", "--runtime", RUNTIME, "--config", path, `sock-${seq}`],
    { stdin: "", timeoutMs: 60_000 },
  );
}

Deno.test({
  name:
    "sockets in a joined network namespace: TCP by a name only the container's /etc/hosts knows",
  ...opts,
  async fn() {
    const { tmp, netns } = await setup();
    const pod = [
      "--with-ns",
      `network:/var/run/netns/${netns}`,
      "--mount",
      `type=bind,src=${tmp}/hosts,dst=/etc/hosts,options=rbind:ro`,
    ];
    const r = await run(["connect", "backend.test", String(PORT), "hello"], pod);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(
      r.stdout,
      `resolved backend.test to 127.0.0.1\nconnected to 127.0.0.1:${PORT}\nreceived: pod echo:hello\n`,
    );
    // Socket options on the kernel's sockets, from a runner that is no longer root (its
    // descriptors are still its own to list) under its seccomp filter.
    const options = await runAsUser(1000, ["options", String(PORT)], netns);
    assert.equal(options.code, 0, options.stdout + options.stderr);
    assert.equal(
      options.stdout,
      "set-hop-limit 0: invalid-argument\n" +
        "tcp hop-limit 7 receive-buffer-size 100000 keep-alive-idle-time 600000000000 " +
        "keep-alive-count 4\nudp unicast-hop-limit 5 send-buffer-size 30000\n",
    );
    // Without that mount the name is unknown: it came from the container's file.
    const unknown = await run(["resolve", "backend.test"], pod.slice(0, 2));
    assert.equal(unknown.code, 1, unknown.stdout + unknown.stderr);
    assert.match(
      unknown.stdout,
      /^resolve: error (name-unresolvable|temporary-resolver-failure)\n$/,
    );
  },
});

Deno.test({
  name: "sockets with --net-host: the node's network; a new network namespace: access-denied",
  ...opts,
  async fn() {
    const host = await run(["connect", "127.0.0.1", String(PORT), "from the host net"], [
      "--net-host",
    ]);
    assert.equal(host.code, 0, host.stdout + host.stderr);
    assert.match(host.stdout, /received: node echo:from the host net\n$/);
    // Plain ctr run: a spec asking for a network namespace of its own.
    const denied = await run(["connect", "127.0.0.1", String(PORT), "x"]);
    assert.equal(denied.code, 1, denied.stdout + denied.stderr);
    assert.equal(denied.stdout, "resolve: error access-denied\n");
    const udp = await run(["udp", String(PORT), "x"]);
    assert.equal(udp.stdout, "create-udp-socket: error access-denied\n");
  },
});

Deno.test({
  name: "sockets suite: nothing left (containers, shims, mounts, slots); namespace removed",
  ...opts,
  async fn() {
    const { cd, tmp, netns, servers } = await setup();
    for (const server of servers) {
      server.kill();
      await server.status;
    }
    await new Deno.Command("ip", { args: ["netns", "del", netns] }).output();
    await assertNothingLeft(cd, tmp);
  },
});
