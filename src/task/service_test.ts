import assert from "node:assert/strict";
import { Kind, ShimError } from "../errdefs/errors.ts";
import type { Guest, GuestConfig } from "./guest.ts";
import { type EventTopic, type TaskCgroupHandle, type TaskDeps, TaskService } from "./service.ts";
import type { LinuxResources, OciSpec } from "../oci/spec.ts";
import { Status } from "./state.ts";

/** A stand-in guest process whose exit the test controls. */
class FakeGuest implements Guest {
  readonly pid: number;
  readonly signals: number[] = [];
  started = false;
  readonly exited: Promise<number>;
  exit!: (status: number) => void;
  constructor(pid: number) {
    this.pid = pid;
    this.exited = new Promise((resolve) => this.exit = resolve);
  }
  closeStdin(): void {}
  start(): Promise<void> {
    this.started = true;
    return Promise.resolve();
  }
  kill(signal: number): void {
    this.signals.push(signal);
    if (signal === 9 || signal === 15) this.exit(128 + signal);
  }
}

/** A spec's `readSpec`: a wasm guest in a network namespace of its own, plus `more`. */
function specWith(more: Partial<OciSpec> = {}): TaskDeps["readSpec"] {
  return () =>
    Promise.resolve({
      process: { args: ["/app.wasm"], env: ["A=1"], cwd: "/", terminal: false },
      root: { path: "rootfs", readonly: false },
      annotations: {},
      network: "new",
      ...more,
    });
}

function setup(opts: { failGuest?: string; deps?: Partial<TaskDeps> } = {}) {
  const events: string[] = [];
  const mounts: string[] = [];
  const guests: FakeGuest[] = [];
  const configs: GuestConfig[] = [];
  const deps: TaskDeps = {
    readSpec: specWith(),
    mountRootfs: (_m, target) => void mounts.push(`mount ${target}`),
    unmountRootfs: (target) => void mounts.push(`umount ${target}`),
    createGuest: (config) => {
      if (opts.failGuest) {
        return Promise.reject(new ShimError(Kind.INVALID_ARGUMENT, opts.failGuest));
      }
      configs.push(config);
      const g = new FakeGuest(1000 + guests.length);
      guests.push(g);
      return Promise.resolve(g);
    },
    publish: (topic: EventTopic, event) => void events.push(`${topic[0]} ${event.container_id}`),
    writeFile: () => Promise.resolve(),
    shimPid: 42,
    log: () => {},
    ...opts.deps,
  };
  return { service: new TaskService(deps), events, mounts, guests, configs };
}

const create = (id: string) => ({
  id,
  bundle: `/b/${id}`,
  rootfs: [{ type: "bind", source: "/snap", options: ["rbind"] }],
  terminal: false,
  stdin: "",
  stdout: "/fifo/out",
  stderr: "/fifo/err",
  checkpoint: "",
});
const ref = (id: string) => ({ id, exec_id: "" });
const tick = () => new Promise((r) => setTimeout(r, 0));

Deno.test("the whole lifecycle publishes create, start, exit, delete in order", async () => {
  const { service, events, mounts, guests, configs } = setup();
  assert.deepEqual(await service.create(create("t1")), { pid: 1000 });
  assert.equal(configs[0].rootfs, "/b/t1/rootfs");
  assert.equal(service.state(ref("t1")).status, Status.CREATED);
  const waited = service.wait(ref("t1"));
  await service.start(ref("t1"));
  assert.equal(service.state(ref("t1")).status, Status.RUNNING);
  guests[0].exit(7);
  assert.equal((await waited).exit_status, 7);
  const state = service.state(ref("t1"));
  assert.equal(state.status, Status.STOPPED);
  assert.equal(state.exit_status, 7);
  assert.ok(state.exited_at);
  assert.deepEqual(await service.delete(ref("t1")).then((d) => d.exit_status), 7);
  assert.deepEqual(events, [
    "/tasks/create t1",
    "/tasks/start t1",
    "/tasks/exit t1",
    "/tasks/delete t1",
  ]);
  assert.deepEqual(mounts, ["mount /b/t1/rootfs", "umount /b/t1/rootfs"]);
  assert.equal(service.size, 0);
});

Deno.test("an instant exit still publishes start before exit", async () => {
  const { service, events, guests } = setup();
  await service.create(create("t1"));
  guests[0].start = () => {
    guests[0].exit(0);
    return new Promise((r) => setTimeout(r, 5));
  };
  await service.start(ref("t1"));
  await service.wait(ref("t1"));
  assert.deepEqual(events.slice(1), ["/tasks/start t1", "/tasks/exit t1"]);
});

Deno.test("unknown ids are NOT_FOUND, bad transitions FAILED_PRECONDITION", async () => {
  const { service, guests } = setup();
  const code = (fn: () => unknown) =>
    Promise.resolve().then(fn).then(() => -1, (e) => (e as ShimError).kind);
  assert.equal(await code(() => service.state(ref("nope"))), Kind.NOT_FOUND);
  assert.equal(await code(() => service.start(ref("nope"))), Kind.NOT_FOUND);
  await service.create(create("t1"));
  assert.equal(await code(() => service.create(create("t1"))), Kind.ALREADY_EXISTS);
  assert.equal(await code(() => service.state({ id: "t1", exec_id: "e1" })), Kind.NOT_FOUND);
  await service.start(ref("t1"));
  assert.equal(await code(() => service.start(ref("t1"))), Kind.FAILED_PRECONDITION);
  assert.equal(await code(() => service.delete(ref("t1"))), Kind.FAILED_PRECONDITION);
  guests[0].exit(0);
  await service.wait(ref("t1"));
  assert.equal(
    await code(() => service.kill({ ...ref("t1"), signal: 9, all: false })),
    Kind.NOT_FOUND,
  );
});

Deno.test("kill ends a running task with 128+signal; pause and resume signal the guest", async () => {
  const { service, guests, events } = setup();
  await service.create(create("t1"));
  await service.start(ref("t1"));
  service.pause({ id: "t1" });
  assert.equal(service.state(ref("t1")).status, Status.PAUSED);
  service.resume({ id: "t1" });
  service.kill({ ...ref("t1"), signal: 15, all: true });
  assert.equal((await service.wait(ref("t1"))).exit_status, 143);
  assert.deepEqual(guests[0].signals, [19, 18, 15]);
  assert.ok(events.includes("/tasks/paused t1") && events.includes("/tasks/resumed t1"));
});

Deno.test("kill with all reaches every process of a guest that has several", async () => {
  const killedAll: number[] = [];
  const { service, guests } = setup({
    deps: {
      createGuest: () =>
        Promise.resolve(Object.assign(new FakeGuest(2000), {
          killAll: (signal: number) => {
            killedAll.push(signal);
            return Promise.resolve();
          },
        })),
    },
  });
  await service.create(create("t1"));
  await service.start(ref("t1"));
  await service.kill({ ...ref("t1"), signal: 10, all: true });
  await service.kill({ ...ref("t1"), signal: 12, all: false });
  assert.deepEqual(killedAll, [10]);
  assert.equal(guests.length, 0, "the deps' own createGuest made it");
});

Deno.test("deleting a created task kills its guest and publishes no exit", async () => {
  const { service, guests, events } = setup();
  await service.create(create("t1"));
  const info = await service.delete(ref("t1"));
  await tick();
  assert.equal(info.exit_status, 137);
  assert.deepEqual(guests[0].signals, [9]);
  assert.deepEqual(events, ["/tasks/create t1", "/tasks/delete t1"]);
});

Deno.test("a guest that cannot run fails Create and leaves nothing mounted", async () => {
  const { service, mounts, events } = setup({ failGuest: "module /x.wasm not found" });
  await assert.rejects(() => service.create(create("t1")), /module \/x.wasm not found/);
  assert.deepEqual(mounts, ["mount /b/t1/rootfs", "umount /b/t1/rootfs"]);
  assert.deepEqual(events, []);
  assert.equal(service.size, 0);
  await assert.rejects(() => service.create({ ...create("t2"), terminal: true }), /terminal/);
});

Deno.test("whenEmpty resolves after the last delete", async () => {
  const { service, guests } = setup();
  await service.create(create("a"));
  await service.create(create("b"));
  let emptied = false;
  service.whenEmpty().then(() => emptied = true);
  guests[0].exit(0);
  guests[1].exit(0);
  await service.wait(ref("a"));
  await service.delete(ref("a"));
  await tick();
  assert.equal(emptied, false);
  await service.delete(ref("b"));
  await tick();
  assert.equal(emptied, true);
});

/** A stand-in cgroup that records what the service does with it. */
class FakeCgroup implements TaskCgroupHandle {
  readonly calls: string[] = [];
  oomKills = 0;
  failAdd = "";
  addProcess(pid: number): Promise<void> {
    this.calls.push(`add ${pid}`);
    return this.failAdd ? Promise.reject(new Error(this.failAdd)) : Promise.resolve();
  }
  apply(resources: LinuxResources): Promise<void> {
    this.calls.push(`apply ${JSON.stringify(resources)}`);
    return Promise.resolve();
  }
  oomKillCount(): Promise<number> {
    return Promise.resolve(this.oomKills);
  }
  metrics() {
    return Promise.resolve({ typeName: "io.containerd.cgroups.v1.Metrics", metrics: { pids: {} } });
  }
  remove(): Promise<void> {
    this.calls.push("remove");
    return Promise.resolve();
  }
}

function withCgroups(opts: { failCreate?: Error; failAdd?: string; oomKills?: number } = {}) {
  const cgroups: FakeCgroup[] = [];
  const specs: OciSpec[] = [];
  const t = setup({
    deps: {
      createCgroup: (_id: string, spec: OciSpec) => {
        specs.push(spec);
        if (opts.failCreate) return Promise.reject(opts.failCreate);
        const cg = new FakeCgroup();
        cg.failAdd = opts.failAdd ?? "";
        cg.oomKills = opts.oomKills ?? 0;
        cgroups.push(cg);
        return Promise.resolve(cg);
      },
    },
  });
  return { ...t, cgroups, specs };
}

Deno.test("cgroup: the guest joins it at Create, and Delete removes it after the exit", async () => {
  const { service, cgroups, guests, events } = withCgroups();
  await service.create(create("t1"));
  assert.deepEqual(cgroups[0].calls, ["add 1000"]);
  await service.start(ref("t1"));
  guests[0].exit(0);
  await service.wait(ref("t1"));
  await service.delete(ref("t1"));
  assert.deepEqual(cgroups[0].calls, ["add 1000", "remove"]);
  assert.ok(!events.includes("/tasks/oom t1"));
});

Deno.test("cgroup: an OOM kill publishes TaskOOM before TaskExit", async () => {
  const { service, cgroups, guests, events } = withCgroups();
  await service.create(create("t1"));
  await service.start(ref("t1"));
  cgroups[0].oomKills = 1;
  guests[0].exit(137);
  assert.equal((await service.wait(ref("t1"))).exit_status, 137);
  assert.deepEqual(events, [
    "/tasks/create t1",
    "/tasks/start t1",
    "/tasks/oom t1",
    "/tasks/exit t1",
  ]);
});

Deno.test("cgroup: OOM kills from before the guest joined do not count", async () => {
  // A reused cgroup (left by an earlier task of the same id) already counts 2 kills.
  const { service, guests, events } = withCgroups({ oomKills: 2 });
  await service.create(create("t1"));
  await service.start(ref("t1"));
  guests[0].exit(1);
  await service.wait(ref("t1"));
  assert.ok(!events.includes("/tasks/oom t1"));
});

Deno.test("cgroup: failures at Create leave nothing behind and say why", async () => {
  const failed = withCgroups({ failCreate: new Error("cannot create cgroup /x: EACCES") });
  await assert.rejects(
    () => failed.service.create(create("t1")),
    (e: ShimError) =>
      e.kind === Kind.FAILED_PRECONDITION && /task t1: cannot create cgroup/.test(e.message),
  );
  assert.deepEqual(failed.mounts, []);
  assert.equal(failed.guests.length, 0);

  const add = withCgroups({ failAdd: "cannot move pid 1000 into cgroup /x: EBUSY" });
  await assert.rejects(() => add.service.create(create("t1")), /cannot move pid 1000/);
  assert.deepEqual(add.guests[0].signals, [9]);
  assert.deepEqual(add.mounts, ["mount /b/t1/rootfs", "umount /b/t1/rootfs"]);
  assert.deepEqual(add.cgroups[0].calls, ["add 1000", "remove"]);
  assert.equal(add.service.size, 0);
  assert.deepEqual(add.events, []);
});

Deno.test("cgroup: a guest that cannot run removes the cgroup too", async () => {
  const cgroups: FakeCgroup[] = [];
  const { service } = setup({
    failGuest: "module /x.wasm not found",
    deps: {
      createCgroup: () => {
        const cg = new FakeCgroup();
        cgroups.push(cg);
        return Promise.resolve(cg);
      },
    },
  });
  await assert.rejects(() => service.create(create("t1")), /x.wasm not found/);
  assert.deepEqual(cgroups[0].calls, ["remove"]);
});

Deno.test("cgroup: Stats returns its metrics; Update applies resources to a live task", async () => {
  const { service, cgroups, guests } = withCgroups();
  await service.create(create("t1"));
  assert.deepEqual(await service.stats({ id: "t1" }), {
    typeName: "io.containerd.cgroups.v1.Metrics",
    metrics: { pids: {} },
  });
  await service.start(ref("t1"));
  await service.update({ id: "t1" }, { memory: { limit: 1 << 20 } });
  assert.deepEqual(cgroups[0].calls.slice(1), [`apply {"memory":{"limit":1048576}}`]);
  guests[0].exit(0);
  await service.wait(ref("t1"));
  await assert.rejects(
    () => service.update({ id: "t1" }, {}),
    (e: ShimError) => e.kind === Kind.FAILED_PRECONDITION && /stopped/.test(e.message),
  );
  await assert.rejects(
    () => service.stats({ id: "nope" }),
    (e: ShimError) => e.kind === Kind.NOT_FOUND,
  );
});

Deno.test("without cgroups: Stats is NOT_FOUND, Update FAILED_PRECONDITION", async () => {
  const { service } = setup();
  await service.create(create("t1"));
  await assert.rejects(
    () => service.stats({ id: "t1" }),
    (e: ShimError) => e.kind === Kind.NOT_FOUND,
  );
  await assert.rejects(
    () => service.update({ id: "t1" }, {}),
    (e: ShimError) => e.kind === Kind.FAILED_PRECONDITION,
  );
});

/** A guest whose runtime manages it (as runc does a native container). */
class FakeNativeGuest extends FakeGuest {
  readonly ownCgroup = true;
  readonly calls: string[] = [];
  pause(): Promise<void> {
    this.calls.push("pause");
    return Promise.resolve();
  }
  resume(): Promise<void> {
    this.calls.push("resume");
    return Promise.resolve();
  }
  pids(): Promise<number[]> {
    return Promise.resolve([this.pid, this.pid + 1]);
  }
  destroy(): Promise<void> {
    this.calls.push("destroy");
    return Promise.resolve();
  }
}

function withNativeGuests(opts: { failAdd?: string; oomFails?: boolean } = {}) {
  const natives: FakeNativeGuest[] = [];
  const cgroups: FakeCgroup[] = [];
  const t = setup({
    deps: {
      createGuest: () => {
        const g = new FakeNativeGuest(2000 + natives.length);
        natives.push(g);
        return Promise.resolve(g);
      },
      createCgroup: () => {
        const cg = new FakeCgroup();
        if (opts.oomFails) cg.oomKillCount = () => Promise.reject(new Error("no memory cgroup"));
        cgroups.push(cg);
        return Promise.resolve(cg);
      },
      unmountRootfs: (target) => {
        natives.at(-1)?.calls.push(`umount ${target}`);
      },
    },
  });
  return { ...t, natives, cgroups };
}

Deno.test("native guests: not moved into the cgroup, which still serves Stats", async () => {
  const { service, natives, cgroups } = withNativeGuests();
  assert.deepEqual(await service.create(create("n1")), { pid: 2000 });
  assert.deepEqual(cgroups[0].calls, [], "runc placed the init itself");
  assert.equal((await service.stats({ id: "n1" })).typeName, "io.containerd.cgroups.v1.Metrics");
  await service.start(ref("n1"));
  natives[0].exit(0);
  await service.wait(ref("n1"));
  await service.delete(ref("n1"));
  assert.deepEqual(natives[0].calls, ["destroy", "umount /b/n1/rootfs"]);
  assert.deepEqual(cgroups[0].calls, ["remove"]);
});

Deno.test("native guests: Pause, Resume and Pids go through the guest, not signals", async () => {
  const { service, natives, events } = withNativeGuests();
  await service.create(create("n1"));
  await service.start(ref("n1"));
  assert.deepEqual(await service.listPids({ id: "n1" }), {
    processes: [{ pid: 2000 }, { pid: 2001 }],
  });
  await service.pause({ id: "n1" });
  assert.equal(service.state(ref("n1")).status, Status.PAUSED);
  await service.resume({ id: "n1" });
  assert.equal(service.state(ref("n1")).status, Status.RUNNING);
  assert.deepEqual(natives[0].calls, ["pause", "resume"]);
  assert.deepEqual(natives[0].signals, [], "no SIGSTOP/SIGCONT");
  assert.ok(events.includes("/tasks/paused n1") && events.includes("/tasks/resumed n1"));
  service.kill({ ...ref("n1"), signal: 15, all: false });
  assert.equal((await service.wait(ref("n1"))).exit_status, 143);
  assert.deepEqual(await service.listPids({ id: "n1" }), { processes: [] });
});

Deno.test("native guests: deleting a created one kills it, then destroys it", async () => {
  const { service, natives, events } = withNativeGuests();
  await service.create(create("n1"));
  assert.equal((await service.delete(ref("n1"))).exit_status, 137);
  assert.deepEqual(natives[0].signals, [9]);
  assert.deepEqual(natives[0].calls, ["destroy", "umount /b/n1/rootfs"]);
  assert.deepEqual(events, ["/tasks/create n1", "/tasks/delete n1"]);
});

Deno.test("native guests: a cgroup failure at Create kills and destroys the container", async () => {
  const { service, natives, cgroups } = withNativeGuests({ oomFails: true });
  await assert.rejects(
    () => service.create(create("n1")),
    (e: ShimError) => e.kind === Kind.FAILED_PRECONDITION && /no memory cgroup/.test(e.message),
  );
  assert.deepEqual(natives[0].signals, [9]);
  assert.deepEqual(natives[0].calls, ["destroy", "umount /b/n1/rootfs"]);
  assert.deepEqual(cgroups[0].calls, ["remove"]);
  assert.equal(service.size, 0);
});

Deno.test("wasm guests: Pids is the runner's pid, Pause/Resume are SIGSTOP/SIGCONT", async () => {
  const { service, guests } = setup();
  await service.create(create("t1"));
  await service.start(ref("t1"));
  assert.deepEqual(await service.listPids({ id: "t1" }), { processes: [{ pid: 1000 }] });
  await service.pause({ id: "t1" });
  await service.resume({ id: "t1" });
  assert.deepEqual(guests[0].signals, [19, 18]);
});

Deno.test("cleanedUp: told once with the id, bundle and pid after a clean Delete", async () => {
  const cleaned: string[] = [];
  const { service, guests } = setup({
    deps: { cleanedUp: (id, bundle, pid) => void cleaned.push(`${id} ${bundle} ${pid}`) },
  });
  await service.create(create("t1"));
  await service.start(ref("t1"));
  guests[0].exit(0);
  await service.wait(ref("t1"));
  assert.deepEqual(cleaned, [], "not before Delete");
  await service.delete(ref("t1"));
  assert.deepEqual(cleaned, [`t1 /b/t1 ${guests[0].pid}`]);
});

Deno.test("cleanedUp: not told when the unmount fails, yet Delete succeeds", async () => {
  const cleaned: string[] = [];
  const logs: string[] = [];
  const { service, guests, events } = setup({
    deps: {
      cleanedUp: (id) => void cleaned.push(id),
      unmountRootfs: () => {
        throw new Error("EBUSY");
      },
      log: (line) => void logs.push(line),
    },
  });
  await service.create(create("t1"));
  await service.start(ref("t1"));
  guests[0].exit(3);
  await service.wait(ref("t1"));
  assert.equal((await service.delete(ref("t1"))).exit_status, 3);
  assert.deepEqual(cleaned, []);
  assert.ok(events.includes("/tasks/delete t1"));
  assert.ok(logs.some((line) => /unmounting \/b\/t1\/rootfs: EBUSY/.test(line)));
  assert.equal(service.size, 0);
});

Deno.test("cleanedUp: not told when removing the cgroup fails, yet Delete succeeds", async () => {
  const cleaned: string[] = [];
  const cgroups: FakeCgroup[] = [];
  const { service, guests, events } = setup({
    deps: {
      cleanedUp: (id) => void cleaned.push(id),
      createCgroup: () => {
        const cg = new FakeCgroup();
        cg.remove = () => {
          cg.calls.push("remove");
          return Promise.reject(new Error("cgroup busy"));
        };
        cgroups.push(cg);
        return Promise.resolve(cg);
      },
    },
  });
  await service.create(create("t1"));
  await service.start(ref("t1"));
  guests[0].exit(0);
  await service.wait(ref("t1"));
  assert.equal((await service.delete(ref("t1"))).exit_status, 0);
  assert.deepEqual(cgroups[0].calls, ["add 1000", "remove"]);
  assert.deepEqual(cleaned, []);
  assert.ok(events.includes("/tasks/delete t1"));
  assert.equal(service.size, 0);
});

Deno.test("cgroup: the guest config's onPid moves the pid, and Create does not move it again", async () => {
  const cgroups: FakeCgroup[] = [];
  const configs: GuestConfig[] = [];
  const { service } = setup({
    deps: {
      createCgroup: () => {
        const cg = new FakeCgroup();
        cgroups.push(cg);
        return Promise.resolve(cg);
      },
      createGuest: (config) => {
        configs.push(config);
        const g = new FakeGuest(3000);
        // As a runner does: report the pid as soon as it is known, before it is ready.
        config.onPid?.(g.pid);
        return Promise.resolve(g);
      },
    },
  });
  assert.deepEqual(await service.create(create("t1")), { pid: 3000 });
  assert.equal(typeof configs[0].onPid, "function");
  assert.deepEqual(cgroups[0].calls, ["add 3000"]);
});

Deno.test("without a cgroup the guest config has no onPid", async () => {
  const { service, configs } = setup();
  await service.create(create("t1"));
  assert.equal(configs[0].onPid, undefined);
});

Deno.test("a guest gets the network where its spec gives one, or where the operator allows it", async () => {
  const { service, configs } = setup();
  await service.create(create("own-netns"));
  assert.equal(configs[0].network, false, "a network namespace of its own: none");
  const allowed = setup({ deps: { guestNetwork: true } });
  await allowed.service.create(create("opted-in"));
  assert.equal(allowed.configs[0].network, true, "the operator's WASMTIME_SHIM_GUEST_NETWORK=1");
  const pod = setup({
    deps: { readSpec: specWith({ netns: "/var/run/netns/pod", network: "join" }) },
  });
  await pod.service.create(create("in-pod"));
  assert.equal(pod.configs[0].network, true);
  assert.equal(pod.configs[0].netns, "/var/run/netns/pod");
});

Deno.test("a guest gets its spec's CPU and memory limits (defaults are sized to them)", async () => {
  const { service, configs } = setup();
  await service.create(create("unlimited"));
  assert.deepEqual(configs[0].limits, {});
  const limited = setup({
    deps: {
      readSpec: specWith({
        resources: { memory: { limit: 268435456 }, cpu: { quota: 50000, period: 100000 } },
      }),
    },
  });
  await limited.service.create(create("limited"));
  assert.deepEqual(limited.configs[0].limits, { memoryBytes: 268435456, cpus: 0.5 });
});
