/**
 * Mounting a task's rootfs: the `rootfs` mounts of CreateTaskRequest (from the
 * snapshotter: `bind` for native, `overlay` for overlayfs) go onto `<bundle>/rootfs`,
 * and come off again at Delete or in the `delete` action.
 *
 * @module
 */

import { Errno, MNT_DETACH, mount, MS_BIND, SyscallError, umount2 } from "./libc.ts";

/** One mount as containerd sends it (`containerd.types.Mount`). */
export interface MountSpec {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** mount(2) flags by option name: [flag, set (true) or clear (false)]. */
const FLAG_OPTIONS: Record<string, [number, boolean]> = {
  ro: [0x1, true],
  rw: [0x1, false],
  nosuid: [0x2, true],
  suid: [0x2, false],
  nodev: [0x4, true],
  dev: [0x4, false],
  noexec: [0x8, true],
  exec: [0x8, false],
  sync: [0x10, true],
  async: [0x10, false],
  remount: [0x20, true],
  mand: [0x40, true],
  nomand: [0x40, false],
  dirsync: [0x80, true],
  noatime: [0x400, true],
  atime: [0x400, false],
  nodiratime: [0x800, true],
  diratime: [0x800, false],
  bind: [0x1000, true],
  rbind: [0x1000 | 0x4000, true],
  relatime: [0x200000, true],
  norelatime: [0x200000, false],
  strictatime: [0x1000000, true],
};

const MS_RDONLY = 0x1;
const MS_REMOUNT = 0x20;

/** Splits mount options into mount(2) flags and the filesystem's data string. */
export function parseMountOptions(options: readonly string[]): { flags: number; data: string } {
  let flags = 0;
  const data: string[] = [];
  for (const option of options) {
    const known = FLAG_OPTIONS[option];
    if (known === undefined) {
      data.push(option);
    } else if (known[1]) {
      flags |= known[0];
    } else {
      flags &= ~known[0];
    }
  }
  return { flags, data: data.join(",") };
}

/** Mounts every mount of `mounts` onto `target`, in order. Unmounts what it did on failure. */
export function mountAll(mounts: readonly MountSpec[], target: string): void {
  let done = 0;
  try {
    for (const m of mounts) {
      const { flags, data } = parseMountOptions(m.options);
      const dest = m.target ? `${target}/${m.target}` : target;
      const type = m.type === "bind" ? null : m.type;
      mount(m.source, dest, type, flags, data === "" ? null : data);
      done++;
      // A read-only bind mount needs a second, remounting call to take effect.
      if ((flags & MS_BIND) !== 0 && (flags & MS_RDONLY) !== 0) {
        mount(null, dest, null, flags | MS_REMOUNT, null);
      }
    }
  } catch (err) {
    if (done > 0) unmountAll(target);
    throw err;
  }
}

/**
 * Unmounts everything stacked on `target` (lazily, so a busy mount cannot wedge
 * the caller). Returns how many mounts came off; a target with nothing mounted is
 * not an error.
 */
export function unmountAll(target: string): number {
  let count = 0;
  for (let i = 0; i < 64; i++) {
    try {
      umount2(target, MNT_DETACH);
      count++;
    } catch (err) {
      if (
        err instanceof SyscallError && (err.errno === Errno.EINVAL || err.errno === Errno.ENOENT)
      ) {
        return count;
      }
      throw err;
    }
  }
  return count;
}
