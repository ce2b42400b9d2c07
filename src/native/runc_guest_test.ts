/**
 * The runc guest against the real runc (as root, with runc installed), without
 * containerd: a bundle made by `runc spec`, the `native_probe` fixture as its process.
 */

import assert from "node:assert/strict";
import { Kind, type ShimError } from "../errdefs/errors.ts";
import { PR_SET_CHILD_SUBREAPER, prctl } from "../sys/libc.ts";
import { DEFAULT_CGROUP_ROOT } from "../cgroup/paths.ts";
import { createGuest } from "../task/guest_factory.ts";
import type { Guest, GuestConfig } from "../task/guest.ts";
import { findRunc } from "./runc.ts";
import { createRuncGuest } from "./runc_guest.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";

const PROBE = new URL("../../tests/fixtures/built/native_probe", import.meta.url).pathname;
/** The cgroup parent the test's containers go under (removed at the end). */
const CGROUP_PARENT = `runc-guest-test-${Deno.pid}`;

function runcAvailable(): boolean {
  try {
    findRunc();
    return Deno.uid() === 0;
  } catch {
    return false;
  }
}

const opts = { ignore: !runcAvailable(), sanitizeOps: false, sanitizeResources: false };

interface Bundle {
  dir: string;
  cfg: GuestConfig;
  root: string;
  out: () => Promise<string>;
  err: () => Promise<string>;
}

let seq = 0;

/** A bundle for `native_probe <args>`, its stdout and stderr in files. */
async function bundle(tmp: string, args: string[], stdin = ""): Promise<Bundle> {
  const id = `rg-${Deno.pid}-${++seq}`;
  const dir = `${tmp}/${id}`;
  await Deno.mkdir(`${dir}/rootfs`, { recursive: true });
  await Deno.copyFile(PROBE, `${dir}/rootfs/native_probe`);
  await Deno.chmod(`${dir}/rootfs/native_probe`, 0o755);
  const made = await new Deno.Command(findRunc(), { args: ["spec", "--bundle", dir] }).output();
  assert.ok(made.success, new TextDecoder().decode(made.stderr));
  const spec = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  spec.process.terminal = false;
  spec.process.args = ["/native_probe", ...args];
  spec.linux.cgroupsPath = `/${CGROUP_PARENT}/${id}`;
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(spec));
  for (const f of ["out", "err"]) await Deno.writeTextFile(`${dir}/${f}`, "");
  return {
    dir,
    root: `${tmp}/runc`,
    cfg: {
      id,
      rootfs: `${dir}/rootfs`,
      bundle: dir,
      args: spec.process.args,
      env: [],
      cwd: "/",
      stdin,
      stdout: `${dir}/out`,
      stderr: `${dir}/err`,
    },
    out: () => Deno.readTextFile(`${dir}/out`),
    err: () => Deno.readTextFile(`${dir}/err`),
  };
}

async function create(b: Bundle): Promise<Guest> {
  return await createRuncGuest(b.cfg, { guestPath: "/native_probe", kind: "elf" }, {
    root: b.root,
  });
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

/** The cgroup v1 hierarchies (every directory under the cgroup root). */
async function cgroupHierarchies(): Promise<string[]> {
  const dirs: string[] = [];
  for await (const e of Deno.readDir(DEFAULT_CGROUP_ROOT)) {
    if (e.isDirectory) dirs.push(`${DEFAULT_CGROUP_ROOT}/${e.name}`);
  }
  return dirs;
}

/** Runs `fn` in a temp dir, as a subreaper (as the shim server is); checks for leftovers. */
async function withRunc(fn: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "runc-guest-" });
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  try {
    await fn(tmp);
    const states = await Array.fromAsync(Deno.readDir(`${tmp}/runc`)).catch(() => []);
    assert.deepEqual(states, [], "runc state left");
    for (const dir of await cgroupHierarchies()) {
      const left = await Array.fromAsync(Deno.readDir(`${dir}/${CGROUP_PARENT}`)).catch(() => []);
      assert.deepEqual(left.filter((e) => e.isDirectory), [], `cgroups left in ${dir}`);
    }
  } finally {
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    await Deno.remove(tmp, { recursive: true });
    // runc removes each container's cgroup, not the parent made for them.
    for (const dir of [DEFAULT_CGROUP_ROOT, ...(await cgroupHierarchies())]) {
      await Deno.remove(`${dir}/${CGROUP_PARENT}`).catch(() => {});
    }
  }
}

Deno.test({
  name: "runc guest: stdout, stderr, argv and the exit code of a native process",
  ...opts,
  async fn() {
    await withRunc(async (tmp) => {
      const hello = await bundle(tmp, ["hello"]);
      const guest = await create(hello);
      assert.ok(guest.pid > 0);
      assert.ok(
        await exists(bundlePath(hello.dir, BundleFile.RUNC_MARKER)),
        "marked for the delete action",
      );
      assert.equal(
        Number(await Deno.readTextFile(bundlePath(hello.dir, BundleFile.INIT_PID))),
        guest.pid,
      );
      await guest.start();
      assert.equal(await guest.exited, 0);
      assert.equal(await hello.out(), "hello from native\n");
      assert.equal(await hello.err(), "native on stderr\n");
      await guest.destroy!();
      assert.ok(!(await exists(bundlePath(hello.dir, BundleFile.RUNC_MARKER))), "the marker goes");

      const exit = await bundle(tmp, ["exit", "42"]);
      const g2 = await create(exit);
      await g2.start();
      assert.equal(await g2.exited, 42);
      await g2.destroy!();

      const args = await bundle(tmp, ["args", "a b", "c"]);
      const g3 = await create(args);
      await g3.start();
      assert.equal(await g3.exited, 0);
      assert.equal(
        await args.out(),
        "argv[0]=/native_probe\nargv[1]=args\nargv[2]=a b\nargv[3]=c\n",
      );
      await g3.destroy!();
    });
  },
});

Deno.test({
  name: "runc guest: kill, pause/resume and pids of a running container; kill before start",
  ...opts,
  async fn() {
    await withRunc(async (tmp) => {
      const b = await bundle(tmp, ["wait"]);
      const guest = await create(b);
      await guest.start();
      for (let i = 0; i < 100 && (await b.out()) === ""; i++) {
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(await b.out(), "waiting\n");
      assert.deepEqual(await guest.pids!(), [guest.pid]);
      await guest.pause!();
      const frozen = await Deno.readTextFile(
        `${DEFAULT_CGROUP_ROOT}/freezer/${CGROUP_PARENT}/${b.cfg.id}/freezer.state`,
      ).catch(() => "FROZEN"); // (cgroup v2: no freezer hierarchy to look at)
      assert.equal(frozen.trim(), "FROZEN");
      await guest.resume!();
      guest.kill(15);
      assert.equal(await guest.exited, 143, "SIGTERM, taken by the probe as PID 1");
      guest.kill(15); // after the exit: nothing happens
      assert.deepEqual(await guest.pids!(), []);
      await guest.destroy!();

      const never = await bundle(tmp, ["wait"]);
      const created = await create(never);
      created.kill(9);
      assert.equal(await created.exited, 137);
      await created.destroy!();
    });
  },
});

Deno.test({
  name: "runc guest: a container runc refuses fails Create with runc's reason, leaving nothing",
  ...opts,
  async fn() {
    await withRunc(async (tmp) => {
      const b = await bundle(tmp, ["hello"]);
      const spec = JSON.parse(await Deno.readTextFile(`${b.dir}/config.json`));
      spec.process.args = ["/not-there"];
      await Deno.writeTextFile(`${b.dir}/config.json`, JSON.stringify(spec));
      await assert.rejects(
        () => create(b),
        (e: ShimError) =>
          e.kind === Kind.FAILED_PRECONDITION &&
          e.message.startsWith(
            `native container ${b.cfg.id}: runc create failed (exit code 1): `,
          ) &&
          e.message.includes(`unable to start container process: exec: "/not-there"`),
      );
      assert.ok(!(await exists(bundlePath(b.dir, BundleFile.RUNC_MARKER))));
    });
  },
});

Deno.test({
  name: "createGuest hands a native entrypoint to runc; without native options it is not Wasm",
  ...opts,
  async fn() {
    await withRunc(async (tmp) => {
      const b = await bundle(tmp, ["exit", "7"]);
      const refused = await createGuest(b.cfg).then(() => undefined, (e: ShimError) => e);
      assert.equal(refused?.kind, Kind.INVALID_ARGUMENT);
      assert.match(refused!.message, /\/native_probe is not a WebAssembly module/);

      const lines: string[] = [];
      const guest = await createGuest(b.cfg, {
        native: { root: b.root },
        log: (line) => lines.push(line),
      });
      assert.equal(guest.ownCgroup, true, "a runc guest");
      await guest.start();
      assert.equal(await guest.exited, 7);
      await guest.destroy!();
      assert.match(lines.join("\n"), /\/native_probe is an ELF executable: running it natively/);
    });
  },
});
