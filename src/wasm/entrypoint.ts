/**
 * Finds the wasm file a container runs, from the OCI spec's `process.args`, `env` and
 * `cwd`, the way a runtime inside the container would see it: every path, including
 * symlink targets, is a path inside the container, with its rootfs as `/`.
 *
 * - `args[0]` is split at the first `#` into a path and the function to call
 *   (default {@linkcode DEFAULT_FUNC});
 * - a bare name (no `/`) is looked up in each directory of the spec env's `PATH`
 *   ({@linkcode DEFAULT_PATH} when the spec sets none), then in the cwd;
 * - a name with a `/` is resolved against the cwd;
 * - `..` and symlinks are resolved inside the rootfs; a path that would leave it
 *   (`/..`, or a symlink chain that climbs above `/`) is refused, never clamped.
 *
 * The functions here only read the file system (lstat, readlink); they are
 * synchronous because they run once per Create and touch a handful of inodes.
 *
 * @module
 */

import { invalidArgument, notFound } from "../errdefs/errors.ts";

/** The function called when `args[0]` names none: the WASI command entry point. */
export const DEFAULT_FUNC = "_start";
/**
 * Search path for a bare entrypoint when the spec's env has no `PATH`: the value
 * containerd's default spec (`oci.DefaultSpec`) and Docker give every container, so a
 * spec without `PATH` searches what images built for those runtimes expect.
 */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** Symlinks followed while resolving one path before giving up, as Linux's ELOOP. */
export const MAX_SYMLINKS = 40;

/** Where the entrypoint is looked for. */
export interface EntrypointRequest {
  /** Absolute host path of the container's root. */
  rootfs: string;
  /** `process.args` from the spec. */
  args: readonly string[];
  /** `process.env` from the spec (`KEY=VALUE`). */
  env: readonly string[];
  /** `process.cwd` from the spec (a path inside the container); "" means `/`. */
  cwd: string;
}

/** A resolved entrypoint. */
export interface Entrypoint {
  /** Host path of the wasm file (`<rootfs><guestPath>`). */
  hostPath: string;
  /** Canonical path inside the container: absolute, no `.`/`..`, no symlinks. */
  guestPath: string;
  /** Exported function to call. */
  func: string;
  /**
   * Set when the wasm is a layer of the container's image rather than a file of its
   * rootfs (a Wasm OCI artifact, see `image_entrypoint.ts`): the layer's digest.
   * `hostPath` is then the layer's file in the shim's blob cache, outside the rootfs,
   * and `guestPath` only names it for messages.
   */
  layer?: string;
}

/** Why a path could not be resolved inside the rootfs. */
type Failure = { missing: string } | { escapes: string } | { loop: string };

/** Splits a path into its non-empty, non-`.` components. */
function components(path: string): string[] {
  return path.split("/").filter((c) => c !== "" && c !== ".");
}

/**
 * Joins a container path onto `base` (an absolute container path) unless it is
 * absolute itself; drops `.` and empty components (`..` stays: it is resolved with
 * the symlinks).
 */
function joinGuest(base: string, path: string): string {
  return "/" + components(path.startsWith("/") ? path : `${base}/${path}`).join("/");
}

function hostOf(rootfs: string, parts: readonly string[]): string {
  if (parts.length === 0) return rootfs;
  return `${rootfs === "/" ? "" : rootfs}/${parts.join("/")}`;
}

function lstat(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      return undefined;
    }
    throw err;
  }
}

/**
 * Resolves an absolute container path inside `rootfs`, following symlinks as the
 * container would (absolute targets start again at the rootfs).
 *
 * @returns the canonical components, or why it failed
 */
function resolveInRoot(rootfs: string, guestPath: string): string[] | Failure {
  const done: string[] = [];
  let todo = components(guestPath);
  let links = 0;
  while (todo.length > 0) {
    const part = todo.shift()!;
    if (part === "..") {
      if (done.length === 0) return { escapes: guestPath };
      done.pop();
      continue;
    }
    const host = hostOf(rootfs, [...done, part]);
    const info = lstat(host);
    if (info === undefined) return { missing: guestPath };
    if (info.isSymlink) {
      if (++links > MAX_SYMLINKS) return { loop: guestPath };
      const target = Deno.readLinkSync(host);
      if (target.startsWith("/")) done.length = 0;
      todo = [...components(target), ...todo];
      continue;
    }
    if (todo.length > 0 && !info.isDirectory) return { missing: guestPath };
    done.push(part);
  }
  return done;
}

/** The value of `name` in a `KEY=VALUE` list (first match, as libc's getenv). */
export function lookupEnv(env: readonly string[], name: string): string | undefined {
  const prefix = `${name}=`;
  return env.find((e) => e.startsWith(prefix))?.slice(prefix.length);
}

/** Splits `args[0]` at the first `#` into path and function. */
export function splitArg0(arg0: string): { path: string; func: string } {
  const hash = arg0.indexOf("#");
  if (hash < 0) return { path: arg0, func: DEFAULT_FUNC };
  return { path: arg0.slice(0, hash), func: arg0.slice(hash + 1) || DEFAULT_FUNC };
}

/**
 * Resolves the entrypoint of a container.
 *
 * @throws {ShimError} INVALID_ARGUMENT for empty args or a path that leaves the rootfs,
 *   NOT_FOUND (naming every place searched) when no such file exists
 */
export function resolveEntrypoint(req: EntrypointRequest): Entrypoint {
  const arg0 = req.args[0] ?? "";
  if (arg0 === "") {
    throw invalidArgument(
      `process.args is empty: its first element must name the wasm file to run ` +
        `(optionally "path#function"), got ${JSON.stringify(req.args)}`,
    );
  }
  const { path, func } = splitArg0(arg0);
  if (path === "") {
    throw invalidArgument(`process.args[0] "${arg0}" names a function but no wasm file`);
  }
  const cwd = joinGuest("/", req.cwd || "/");

  let candidates: string[];
  if (path.includes("/")) {
    candidates = [joinGuest(cwd, path)];
  } else {
    const search = lookupEnv(req.env, "PATH") ?? DEFAULT_PATH;
    // An empty PATH entry means the cwd, as in POSIX shells.
    candidates = search.split(":").map((dir) => joinGuest(cwd, joinGuest(dir || ".", path)));
    candidates.push(joinGuest(cwd, path));
    candidates = [...new Set(candidates)];
  }

  const rootfs = req.rootfs.length > 1 ? req.rootfs.replace(/\/+$/, "") : req.rootfs;
  for (const candidate of candidates) {
    const resolved = resolveInRoot(rootfs, candidate);
    if (!Array.isArray(resolved)) {
      if ("escapes" in resolved) {
        throw invalidArgument(
          `entrypoint "${path}": ${candidate} leads outside the container's root ${req.rootfs}`,
        );
      }
      if ("loop" in resolved) {
        throw invalidArgument(
          `entrypoint "${path}": too many levels of symbolic links resolving ${candidate} ` +
            `in ${req.rootfs}`,
        );
      }
      continue;
    }
    const guestPath = "/" + resolved.join("/");
    const hostPath = hostOf(rootfs, resolved);
    const info = Deno.statSync(hostPath);
    if (info.isFile) return { hostPath, guestPath, func };
    // A directory of that name somewhere on PATH is not a match; keep searching.
    if (info.isDirectory && candidates.length > 1) continue;
    const what = info.isDirectory ? "a directory" : "not a regular file";
    throw invalidArgument(`entrypoint "${path}": ${guestPath} is ${what}`);
  }
  const where = path.includes("/")
    ? `${candidates[0]} (cwd ${cwd})`
    : `PATH and cwd: ${candidates.join(", ")}`;
  throw notFound(`entrypoint "${path}" in the container's root ${req.rootfs} (searched ${where})`);
}
