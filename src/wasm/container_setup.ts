/**
 * What a guest runner does, in its own mount namespace (it is started under
 * `unshare --mount --propagation private`, see `src/runner/spawn.ts`), between
 * receiving its guest and running it: what a pod spec means for runc.
 *
 * 1. {@linkcode mountContainer} (before the wasm is read): attaches the rootfs (a
 *    detached copy the server made with `open_tree(2)`, taken with `pidfd_getfd(2)`),
 *    makes the spec's mounts in spec order at their destinations resolved inside the
 *    rootfs (see {@linkcode resolveInRoot}), the default devices (the node's
 *    `/dev/null`, … bind-mounted onto files in the container's `/dev`), binds the
 *    pod's `/etc/hosts` and `/etc/resolv.conf` over the runner's own, and an
 *    nsswitch.conf of files and DNS only, so that its outgoing requests resolve names
 *    as the pod does, hides or makes read-only the spec's masked and read-only paths
 *    of the node's `/proc` and `/sys` as the runner sees them, and remounts the rootfs
 *    read-only for `root.readonly`. None of it is seen on the node, and all of it
 *    goes with the runner's namespace when the runner exits.
 * 2. {@linkcode becomeGuestUser} (once the wasm is compiled and the stdio is open,
 *    before anything of the guest runs): makes the rootfs reachable for a uid other
 *    than 0 (its parents on the node are root's, mode 0700: a tmpfs covers the
 *    first such parent in this namespace, and the rootfs is attached again under
 *    it), then switches to the spec's gids and uid, which takes every capability from
 *    every thread; a uid 0 guest keeps runc's default capabilities on the thread that
 *    runs it (see {@linkcode RUNC_DEFAULT_CAPS}).
 *
 * `no_new_privs` and the capability bounding set are set by `setpriv` when the
 * runner starts (for every thread alike).
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";
import {
  capsetSelf,
  close,
  Errno,
  mkdir,
  mount,
  moveMount,
  open,
  OpenFlag,
  openTree,
  setgroups,
  setresgid,
  setresuid,
  statMode,
  takeFd,
  umount2,
  write,
} from "../sys/libc.ts";
import {
  type ContainerSetup,
  DEFAULT_DEVICES,
  MountFlag,
  type PlannedMount,
} from "../oci/mounts.ts";

/** Most symlinks followed while resolving one destination (as Linux's MAXSYMLINKS). */
const MAX_SYMLINKS = 40;

/** What {@linkcode resolveInRoot} makes when the destination does not exist. */
export type Create = "directory" | "file";

/**
 * The host path of container path `dest` inside `root`, resolving symlinks inside
 * the root (an absolute link target from the root, as the container would see it)
 * and creating what is missing (directories on the way, and the last component as
 * `create` says). Refuses a `..` or a link that climbs above the root, and a last
 * component that exists with the other kind.
 *
 * @throws {Error} saying why
 */
export function resolveInRoot(root: string, dest: string, create: Create): string {
  const queue = dest.split("/").filter((p) => p !== "" && p !== ".");
  const done: string[] = [];
  let links = 0;
  const host = () => `${root}/${done.join("/")}`.replace(/\/$/, "") || "/";
  while (queue.length > 0) {
    const part = queue.shift()!;
    if (part === ".") continue;
    if (part === "..") {
      if (done.length === 0) throw new Error(`${dest} leads outside the container's root`);
      done.pop();
      continue;
    }
    const path = `${root}/${[...done, part].join("/")}`;
    let info: Deno.FileInfo;
    try {
      info = Deno.lstatSync(path);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
      if (queue.length > 0 || create === "directory") Deno.mkdirSync(path, { mode: 0o755 });
      else Deno.writeFileSync(path, new Uint8Array(0), { mode: 0o644, createNew: true });
      done.push(part);
      continue;
    }
    if (info.isSymlink) {
      if (++links > MAX_SYMLINKS) throw new Error(`${dest}: too many symbolic links`);
      const target = Deno.readLinkSync(path);
      if (target.startsWith("/")) done.length = 0;
      queue.unshift(...target.split("/").filter((p) => p !== "" && p !== "."));
      continue;
    }
    if (queue.length > 0 && !info.isDirectory) {
      throw new Error(`${dest}: ${[...done, part].join("/")} is not a directory`);
    }
    if (queue.length === 0) {
      if (create === "directory" && !info.isDirectory) {
        throw new Error(`${dest} exists in the image and is not a directory`);
      }
      if (create === "file" && info.isDirectory) {
        throw new Error(`${dest} is a directory in the image, but the source is a file`);
      }
    }
    done.push(part);
  }
  return host();
}

/** Attaches the server's detached mount `fd` (a descriptor of `serverPid`) at `target`. */
function attach(serverPid: number, fd: number, target: string): void {
  const own = takeFd(serverPid, fd);
  try {
    moveMount(own, target);
  } finally {
    close(own);
  }
}

/** Makes one planned mount at its destination. */
function makeMount(root: string, setup: ContainerSetup, m: PlannedMount): string {
  const target = resolveInRoot(root, m.destination, m.directory ? "directory" : "file");
  if (m.kind === "tmpfs") {
    mount("tmpfs", target, "tmpfs", m.flags, m.data === "" ? null : m.data);
    return target;
  }
  if (m.fd !== undefined) attach(setup.serverPid, m.fd, target);
  else {mount(
      m.source,
      target,
      null,
      MountFlag.MS_BIND | (m.recursive ? MountFlag.MS_REC : 0),
      null,
    );}
  if (m.flags !== 0) {
    mount(null, target, null, MountFlag.MS_REMOUNT | MountFlag.MS_BIND | m.flags, null);
  }
  return target;
}

/** The runner's own files the pod's mounts of the same path replace (name resolution). */
export const POD_NAME_FILES = ["/etc/hosts", "/etc/resolv.conf"] as const;

/**
 * The name service switch of a runner that resolves as its pod does: the pod's
 * `/etc/hosts`, then DNS as the pod's `/etc/resolv.conf` says, and nothing of the
 * node's own (nss-resolve would ask the node's systemd-resolved, nss-myhostname would
 * answer the node's name).
 */
export const POD_NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n";
const NSSWITCH_PATH = "/etc/nsswitch.conf";
/** A directory every node has, briefly covered in the runner's namespace (see below). */
const SCRATCH_DIR = "/dev/shm";
const MNT_DETACH = 2;

/**
 * Binds {@linkcode POD_NSSWITCH} over the runner's `/etc/nsswitch.conf` (if the node
 * has one: glibc's default without it is DNS and files alike). The file is made on a
 * tmpfs mounted on {@linkcode SCRATCH_DIR} in this namespace only, which is taken off
 * again once the file is bound (the bind keeps its tmpfs).
 */
function bindPodNsswitch(): void {
  try {
    statMode(NSSWITCH_PATH);
  } catch {
    return;
  }
  mount("tmpfs", SCRATCH_DIR, "tmpfs", MountFlag.MS_NOSUID | MountFlag.MS_NODEV, "size=16k");
  try {
    // Through libc: the runner's Deno permissions do not cover these paths.
    const file = `${SCRATCH_DIR}/nsswitch.conf`;
    const fd = open(file, OpenFlag.O_WRONLY | OpenFlag.O_CREAT | OpenFlag.O_CLOEXEC, 0o644);
    try {
      const bytes = new TextEncoder().encode(POD_NSSWITCH);
      if (write(fd, bytes) !== bytes.length) throw new Error(`short write to ${file}`);
    } finally {
      close(fd);
    }
    mount(file, NSSWITCH_PATH, null, MountFlag.MS_BIND, null);
  } finally {
    umount2(SCRATCH_DIR, MNT_DETACH);
  }
}

/**
 * Step 1 (see the module documentation). Errors name the spec's entry; the runner
 * then exits, and its namespace with everything mounted so far goes with it.
 */
export function mountContainer(root: string, setup: ContainerSetup): void {
  if (setup.rootfsFd !== undefined) attach(setup.serverPid, setup.rootfsFd, root);
  // A mount of its own, which the read-only remount below changes (and nothing else).
  if (setup.readonlyRoot) mount(root, root, null, MountFlag.MS_BIND | MountFlag.MS_REC, null);
  const podFiles = new Map<string, string>();
  for (const m of setup.mounts) {
    try {
      const target = makeMount(root, setup, m);
      if ((POD_NAME_FILES as readonly string[]).includes(m.destination) && m.kind === "bind") {
        podFiles.set(m.destination, target);
      }
    } catch (err) {
      throw invalidArgument(`${m.name}: ${(err as Error).message}`);
    }
  }
  for (const name of DEFAULT_DEVICES) {
    try {
      const target = resolveInRoot(root, `/dev/${name}`, "file");
      mount(`/dev/${name}`, target, null, MountFlag.MS_BIND, null);
    } catch (err) {
      throw invalidArgument(`device /dev/${name}: ${(err as Error).message}`);
    }
  }
  for (const [path, target] of podFiles) {
    try {
      mount(target, path, null, MountFlag.MS_BIND, null);
    } catch (err) {
      throw invalidArgument(`pod name resolution ${path}: ${(err as Error).message}`);
    }
  }
  if (podFiles.size > 0) {
    try {
      bindPodNsswitch();
    } catch (err) {
      throw invalidArgument(`pod name resolution ${NSSWITCH_PATH}: ${(err as Error).message}`);
    }
  }
  restrictNodePaths(setup);
  if (setup.readonlyRoot) {
    mount(null, root, null, MountFlag.MS_REMOUNT | MountFlag.MS_BIND | MountFlag.MS_RDONLY, null);
  }
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

/**
 * The spec's `linux.readonlyPaths` and `linux.maskedPaths` (containerd's default spec
 * names `/proc/sys`, `/proc/kcore`, `/sys/firmware`, …), applied as runc applies them
 * to a container's `/proc` and `/sys`: here to the node's, as this runner sees them in
 * its own mount namespace (a guest has no `/proc` of its own; the runner, which
 * shares the node's pid namespace, does). A read-only path is bound onto itself and
 * remounted read-only; a masked directory gets an empty read-only tmpfs, a masked
 * file `/dev/null`. A path the node lacks is skipped, as runc skips it.
 */
function restrictNodePaths(setup: ContainerSetup): void {
  const missing = (err: unknown) => (err as { errno?: number }).errno === Errno.ENOENT;
  for (const path of setup.readonlyPaths) {
    try {
      mount(path, path, null, MountFlag.MS_BIND | MountFlag.MS_REC, null);
      mount(
        null,
        path,
        null,
        MountFlag.MS_REMOUNT | MountFlag.MS_BIND | MountFlag.MS_RDONLY | MountFlag.MS_REC,
        null,
      );
    } catch (err) {
      if (missing(err)) continue;
      throw invalidArgument(`linux.readonlyPaths ${path}: ${(err as Error).message}`);
    }
  }
  for (const path of setup.maskedPaths) {
    try {
      if ((statMode(path) & S_IFMT) === S_IFDIR) {
        mount("tmpfs", path, "tmpfs", MountFlag.MS_RDONLY, "size=0");
      } else {
        mount("/dev/null", path, null, MountFlag.MS_BIND, null);
      }
    } catch (err) {
      if (missing(err)) continue;
      throw invalidArgument(`linux.maskedPaths ${path}: ${(err as Error).message}`);
    }
  }
}

/**
 * The capabilities runc gives a container by default (Docker's set): what a uid 0
 * guest keeps. CAP_SYS_ADMIN, CAP_SYS_PTRACE (the setup's) are not among them.
 */
export const RUNC_DEFAULT_CAPS = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31] as const;

/**
 * The capabilities a runner starts with (its bounding set, see `src/runner/spawn.ts`):
 * runc's defaults, and CAP_SYS_ADMIN and CAP_SYS_PTRACE for the setup.
 */
export const RUNNER_CAP_NAMES = [
  "chown",
  "dac_override",
  "fowner",
  "fsetid",
  "kill",
  "setgid",
  "setuid",
  "setpcap",
  "net_bind_service",
  "net_raw",
  "sys_chroot",
  "mknod",
  "audit_write",
  "setfcap",
  "sys_admin",
  "sys_ptrace",
] as const;

/**
 * The first directory on the way to `root` that others cannot search (mode without
 * o+x), or undefined if a non-root uid can reach it already.
 */
export function firstClosedParent(root: string, mode = statMode): string | undefined {
  const parts = root.split("/").filter((p) => p !== "");
  for (let i = 1; i < parts.length; i++) {
    const dir = `/${parts.slice(0, i).join("/")}`;
    if ((mode(dir) & 0o001) === 0) return dir;
  }
  return undefined;
}

/**
 * Step 2 (see the module documentation): after it, the process is the spec's user.
 * Stdio and the wasm must be open or read before (the FIFOs are root's).
 */
export function becomeGuestUser(root: string, setup: ContainerSetup): void {
  const { uid, gid, additionalGids } = setup.user;
  if (uid !== 0) {
    const closed = firstClosedParent(root);
    if (closed !== undefined) {
      const tree = openTree(root, true);
      try {
        // Hides the node's other containers and bundles from this runner as well.
        mount(
          "tmpfs",
          closed,
          "tmpfs",
          MountFlag.MS_NOSUID | MountFlag.MS_NODEV | MountFlag.MS_NOEXEC,
          "mode=711",
        );
        let dir = closed;
        for (const part of root.slice(closed.length + 1).split("/")) {
          dir = `${dir}/${part}`;
          mkdir(dir, 0o711);
        }
        moveMount(tree, root);
      } finally {
        close(tree);
      }
    }
  }
  setgroups(additionalGids);
  setresgid(gid);
  // Leaving uid 0 clears the permitted and effective capabilities of every thread
  // (glibc makes each thread call setresuid).
  setresuid(uid);
  if (uid === 0) capsetSelf(RUNC_DEFAULT_CAPS);
}
