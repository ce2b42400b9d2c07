/**
 * Where a task's cgroup is: the spec's `cgroupsPath` resolved inside one hierarchy.
 *
 * `cgroupsPath` notations (as runc's cgroupfs and systemd drivers read them):
 *
 * | cgroupsPath                      | cgroup, relative to each hierarchy's root                    |
 * | -------------------------------- | ------------------------------------------------------------ |
 * | `/a/b`                           | `/a/b`                                                       |
 * | `a/b` (relative)                 | `<the shim's own cgroup>/a/b`                                |
 * | absent or ""                     | `<the shim's own cgroup>/<task id>` (runc's default)         |
 * | `slice:prefix:name`              | `<expanded slice>/<prefix>-<name>.scope`                     |
 * | `kubepods-besteffort.slice:p:n`  | `/kubepods.slice/kubepods-besteffort.slice/p-n.scope`        |
 *
 * The systemd notation is mapped to the directories systemd would use, and those are
 * created directly (no transient unit is registered with systemd over D-Bus).
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";

/** Where the cgroup hierarchies are mounted. */
export const DEFAULT_CGROUP_ROOT = "/sys/fs/cgroup";
/** The shim's own cgroups (for relative and default paths). */
export const PROC_SELF_CGROUP = "/proc/self/cgroup";
/** The systemd slice a `:prefix:name` path with an empty slice goes to (runc's default). */
export const DEFAULT_SYSTEMD_SLICE = "system.slice";

/** Normalizes a cgroup path: absolute, no `.`/`..`/empty parts; `..` never climbs above `/`. */
export function cleanPath(path: string): string {
  const parts: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return "/" + parts.join("/");
}

/**
 * Expands a systemd slice name into its cgroup path, as systemd nests slices:
 * `kubepods-besteffort-pod1.slice` → `/kubepods.slice/kubepods-besteffort.slice/
 * kubepods-besteffort-pod1.slice`; `-.slice` is the root.
 *
 * @throws {ShimError} INVALID_ARGUMENT for a name systemd would reject
 */
export function expandSlice(slice: string): string {
  const suffix = ".slice";
  if (slice.length <= suffix.length || !slice.endsWith(suffix) || slice.includes("/")) {
    throw invalidArgument(`invalid systemd slice name "${slice}"`);
  }
  const name = slice.slice(0, -suffix.length);
  if (name === "-") return "/";
  let path = "";
  let prefix = "";
  for (const component of name.split("-")) {
    if (component === "") throw invalidArgument(`invalid systemd slice name "${slice}"`);
    path += `/${prefix}${component}${suffix}`;
    prefix += `${component}-`;
  }
  return path;
}

/** True if `cgroupsPath` is in systemd notation (`slice:prefix:name`). */
export function isSystemdPath(cgroupsPath: string): boolean {
  return !cgroupsPath.startsWith("/") && cgroupsPath.split(":").length === 3;
}

/**
 * The cgroup of task `id` inside one hierarchy, from the spec's `cgroupsPath` (see
 * the module doc for the notations). `own` is the shim's own cgroup in that hierarchy,
 * which relative paths and the default start from.
 *
 * @throws {ShimError} INVALID_ARGUMENT for a malformed systemd path
 */
export function taskCgroupPath(cgroupsPath: string | undefined, id: string, own = "/"): string {
  if (!cgroupsPath) return cleanPath(`${own}/${id}`);
  if (cgroupsPath.startsWith("/")) return cleanPath(cgroupsPath);
  if (!isSystemdPath(cgroupsPath)) return cleanPath(`${own}/${cgroupsPath}`);
  const [slice, prefix, name] = cgroupsPath.split(":");
  if (name === "" || name.includes("/")) {
    throw invalidArgument(`cgroupsPath "${cgroupsPath}": the unit name must be a plain name`);
  }
  if (name.endsWith(".slice")) return expandSlice(name);
  const unit = prefix === "" ? `${name}.scope` : `${prefix}-${name}.scope`;
  return cleanPath(`${expandSlice(slice || DEFAULT_SYSTEMD_SLICE)}/${unit}`);
}

/**
 * Parses `/proc/<pid>/cgroup`: controller → path. v1 lines give each of their
 * controllers (and `name=systemd`); the v2 line (`0::/path`) gives the key "".
 */
export function parseProcCgroup(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (controllers === "") out.set("", path);
    else for (const c of controllers.split(",")) out.set(c, path);
  }
  return out;
}
