/**
 * Warm guest runners, started ahead of Create so that a container does not wait for
 * a Deno process to boot.
 *
 * A runner's Deno permissions are fixed when it starts, before its container is
 * known. So each pooled runner gets a private *slot* directory, and its permissions
 * name only that slot (plus the component cache and the npm packages it loads):
 *
 * ```
 * <slot root>/<server pid>-<n>/rootfs   the container's rootfs is attached here (runner's namespace)
 * <slot root>/<server pid>-<n>/io/      symlinks to the container's stdout/stderr FIFOs
 * ```
 *
 * At Create the server links the container's stdio FIFOs into the slot and hands the
 * runner the guest with paths inside the slot; the runner attaches a detached copy
 * of the container's rootfs (the server's `open_tree(2)` descriptor) onto the slot's
 * `rootfs` in its own mount namespace, so nothing is mounted on the node. When the
 * runner exits, the slot is removed. The
 * bundle records its slot (`<bundle>/slot`) so that the `delete` action can clean
 * up after a server that died.
 *
 * A warm runner waits for its guest with only the preview1 host loaded. Loading the
 * component host (WASI 0.2, Deno's Node compatibility layer) costs ~50 ms of CPU, so
 * a runner loads it ahead only when the pool's last container was a component: a
 * run of component containers starts each one with the host loaded, a run of
 * preview1 containers pays nothing for it.
 *
 * Warm cgroups (cgroup v1): moving a process into a cgroup waits for the kernel
 * (an RCU grace period, ~10 ms), where renaming a cgroup directory moves it with its
 * processes at once. So once the server has made one task cgroup, each warm runner,
 * when it says it is idle (its boot's memory stays charged where it was), is moved
 * into a cgroup of its own beside that task's (`<parent>/wasmtime-warm-<slot>`);
 * at Create the task's cgroup takes it over by a rename
 * ({@linkcode TaskCgroup.adopt}), with the same parent, which is the usual case: one
 * parent per namespace, or per pod.
 *
 * @module
 */

import type { WasmKind } from "../wasm/detect.ts";
import { allowList, APP_SRC, NODE_MODULES } from "./permissions.ts";
import { discardRunner, type Runner, type RunnerLog, spawnRunner } from "./spawn.ts";
import { DEV_NULL, IDLE_MESSAGE } from "../wasm/runner_protocol.ts";
import {
  deadServerEntries,
  removeSlot,
  SLOT_PREFIX,
  sweepWarmCgroups,
  WARM_CGROUP_PREFIX,
} from "./slot.ts";
import type { TaskCgroup } from "../cgroup/cgroup.ts";
import { baseName, parentDir } from "../sys/path.ts";
import type { GuestConfig } from "../wasm/guest_init.ts";
import { BundleFile, bundlePath } from "../oci/bundle.ts";

/** A warm runner handed to one container. */
export interface PooledRunner {
  /** The runner process, before it has been given its guest. */
  runner: Runner;
  /** The slot directory. */
  slot: string;
  /** Where the container's rootfs is visible to the runner. */
  rootfs: string;
  /** The stdout/stderr paths the runner opens (links to the container's FIFOs). */
  stdout: string;
  stderr: string;
  /** Takes the bind mount off and removes the slot. Safe to call twice. */
  release(): void;
}

/** Options of {@linkcode RunnerPool}. */
export interface RunnerPoolOptions {
  /** Parent directory of the slots (created 0700). */
  slotRoot: string;
  /** The component cache directory runners may read and write. */
  cacheDir?: string;
  /** How many idle runners to keep per network namespace; default 1. */
  size?: number;
  /** Receives the runners' stderr lines and pool problems. */
  log?: RunnerLog;
}

interface Idle {
  runner: Runner;
  slot: string;
  /** True once the runner has said it is idle. */
  idle?: boolean;
  /** True once handed to a container. */
  taken?: boolean;
  /** The runner's warm cgroup, once it is in it (undefined if that failed). */
  cgroup?: Promise<TaskCgroup | undefined>;
}

/** Keeps warm runners, one set per network namespace ("" for the host's). */
export class RunnerPool {
  #opts: RunnerPoolOptions;
  #idle = new Map<string, Idle[]>();
  #seq = 0;
  #closed = false;
  /** Whether new runners load the component host ahead (the last guest was one). */
  #preloadComponent = false;
  /** The last task cgroup made: warm cgroups go beside it. */
  #template: TaskCgroup | undefined;
  /** Parent directories already swept of dead servers' warm cgroups. */
  #swept = new Set<string>();
  /** Warm cgroups of taken runners, by pid, until a task cgroup adopts them. */
  #warmByPid = new Map<number, Promise<TaskCgroup | undefined>>();

  /** Creates an empty pool; {@linkcode warm} starts runners. */
  constructor(opts: RunnerPoolOptions) {
    this.#opts = opts;
  }

  /**
   * Removes slots left by servers that are gone (a server killed with SIGKILL cannot
   * clean up its idle runners' slots). Slots of live servers are left alone.
   */
  static sweep(slotRoot: string): void {
    for (const entry of deadServerEntries(slotRoot)) removeSlot(`${slotRoot}/${entry.name}`);
  }

  /** Starts idle runners for `netns` until the pool holds its size. */
  warm(netns: string | undefined): void {
    if (this.#closed) return;
    const key = netns ?? "";
    const list = this.#idle.get(key) ?? [];
    this.#idle.set(key, list);
    while (list.length < (this.#opts.size ?? 1)) {
      try {
        list.push(this.#spawn(netns));
      } catch (err) {
        this.#opts.log?.(`cannot start a warm runner: ${(err as Error).message}`);
        return;
      }
    }
  }

  #spawn(netns: string | undefined): Idle {
    const root = this.#opts.slotRoot;
    Deno.mkdirSync(root, { recursive: true, mode: 0o700 });
    const name = `${Deno.pid}-${++this.#seq}`;
    const slot = `${root}/${name}`;
    try {
      Deno.mkdirSync(`${slot}/rootfs`, { recursive: true, mode: 0o700 });
      Deno.mkdirSync(`${slot}/io`, { mode: 0o700 });
      const rw = [slot];
      if (this.#opts.cacheDir) {
        // An unusable cache only costs the cache (the runner logs it): still warm.
        try {
          Deno.mkdirSync(this.#opts.cacheDir, { recursive: true, mode: 0o700 });
        } catch { /* the runner's TranspileCache reports it */ }
        rw.push(this.#opts.cacheDir);
      }
      // Components: jco reads its own files from the npm packages, and the glue reads
      // the environment (the runner's env is cleared, see denoEnv).
      const flags = [
        allowList("allow-read", [...rw, NODE_MODULES, APP_SRC]),
        allowList("allow-write", rw),
        "--allow-env",
        "--allow-ffi", // the container setup (src/wasm/container_setup.ts)
      ];
      // Every guest of a network namespace it joins (a pod's) may reach the network
      // (guestNetworkAllowed in src/oci/spec.ts): its runner may have it ahead.
      if (netns !== undefined) flags.push("--allow-net");
      const runner = spawnRunner(
        `${SLOT_PREFIX}${name}`,
        flags,
        netns,
        this.#opts.log,
        this.#preloadComponent,
      );
      const entry: Idle = { runner, slot };
      // The runner's first line says it is idle (see runner_protocol.ts); later
      // lines are for createGuest.
      runner.stdout.next().then((line) => {
        if (line.done || line.value !== IDLE_MESSAGE) return;
        entry.idle = true;
        this.#joinWarmCgroup(entry);
      }, () => {});
      return entry;
    } catch (err) {
      removeSlot(slot); // never leave a slot without a runner behind
      throw err;
    }
  }

  /**
   * Hands a warm runner to the guest `cfg` if one fits (same network namespace; a
   * guest that needs the network gets a runner of its own unless it joins a network
   * namespace, whose runners have it; so does one without a rootfs descriptor), linking its stdio into the slot, and starts a replacement (which loads the
   * component host ahead if `kind` is "component"). Returns undefined when none fits
   * or the slot cannot be prepared.
   */
  take(cfg: GuestConfig, net: unknown, kind?: WasmKind): PooledRunner | undefined {
    // The runner's mount namespace is its own (since before this container existed):
    // it attaches a detached copy of the rootfs the server made (container_setup.ts).
    if (this.#closed || cfg.container?.rootfsFd === undefined) return undefined;
    if (net && cfg.netns === undefined) return undefined;
    if (kind !== undefined) this.#preloadComponent = kind === "component";
    const list = this.#idle.get(cfg.netns ?? "");
    const idle = list?.shift();
    this.warm(cfg.netns);
    if (idle === undefined) return undefined;
    const { runner, slot } = idle;
    idle.taken = true;
    if (runner.exited) {
      void this.#free(idle);
      return undefined;
    }
    if (idle.cgroup) this.#warmByPid.set(runner.child.pid, idle.cgroup);
    const rootfs = `${slot}/rootfs`;
    const link = (name: string, target: string) => {
      const path = `${slot}/io/${name}`;
      Deno.symlinkSync(target || DEV_NULL, path);
      return path;
    };
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#warmByPid.delete(runner.child.pid);
      void this.#free(idle);
    };
    try {
      const stdout = link("stdout", cfg.stdout);
      const stderr = link("stderr", cfg.stderr);
      if (cfg.bundle) Deno.writeTextFileSync(bundlePath(cfg.bundle, BundleFile.SLOT), slot);
      return { runner, slot, rootfs, stdout, stderr, release };
    } catch (err) {
      this.#opts.log?.(`slot ${slot}: cannot prepare it: ${(err as Error).message}`);
      discardRunner(runner).finally(release);
      return undefined;
    }
  }

  /**
   * Tells the pool the cgroup of a task just made (cgroup v1 only): from now on,
   * warm runners wait in cgroups beside it. The first time a parent is seen, the
   * warm cgroups that servers now gone left there are removed.
   */
  learnCgroup(cgroup: TaskCgroup): void {
    if (cgroup.version !== 1 || this.#closed) return;
    this.#template = cgroup;
    for (const dir of cgroup.dirs) {
      const parent = parentDir(dir);
      if (this.#swept.has(parent)) continue;
      this.#swept.add(parent);
      sweepWarmCgroups(parent);
    }
    for (const entry of [...this.#idle.values()].flat()) this.#joinWarmCgroup(entry);
  }

  /**
   * The warm cgroup runner `pid` (a taken one) waits in, once it is in it; the pool
   * forgets it (it is removed when the runner exits, if still there).
   */
  takeWarmCgroup(pid: number): Promise<TaskCgroup | undefined> {
    const cgroup = this.#warmByPid.get(pid);
    this.#warmByPid.delete(pid);
    return cgroup ?? Promise.resolve(undefined);
  }

  /** Moves an idle runner into a warm cgroup beside the last task's, if there is one. */
  #joinWarmCgroup(entry: Idle): void {
    if (!entry.idle || entry.taken || entry.cgroup || !this.#template) return;
    const name = `${WARM_CGROUP_PREFIX}${baseName(entry.slot)}`;
    const cgroup = this.#template.sibling(name);
    entry.cgroup = (async () => {
      try {
        await cgroup.make();
        await cgroup.addProcess(entry.runner.child.pid);
        return cgroup;
      } catch (err) {
        this.#opts.log?.(`warm cgroup ${name}: ${(err as Error).message}`);
        await cgroup.remove().catch(() => {});
        return undefined;
      }
    })();
  }

  /**
   * Removes a runner's slot and warm cgroup (once the runner is gone); resolves when
   * the cgroup is removed. Never rejects: problems are logged.
   */
  #free(entry: Idle): Promise<void> {
    if (!removeSlot(entry.slot)) {
      this.#opts.log?.(`slot ${entry.slot}: could not remove it completely`);
    }
    return (entry.cgroup ?? Promise.resolve(undefined)).then((cgroup) => cgroup?.remove())
      .catch((err) => this.#opts.log?.(`warm cgroup of ${entry.slot}: ${(err as Error).message}`));
  }

  /** Kills the idle runners and removes their slots and warm cgroups. */
  async close(): Promise<void> {
    this.#closed = true;
    const all = [...this.#idle.values()].flat();
    this.#idle.clear();
    await Promise.all(all.map(async (entry) => {
      await discardRunner(entry.runner);
      await this.#free(entry);
    }));
  }
}
