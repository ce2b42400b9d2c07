/**
 * Resolves the paths a guest names inside one host directory (the container's rootfs),
 * for both WASI hosts: preview1 (`preview1/fs.ts`) and WASI 0.2
 * (`component/host/filesystem.ts`). Deno APIs only, so that the preview1 runner does
 * not load Deno's Node compatibility layer.
 *
 * Confinement: every path is resolved here, component by component, before the host
 * sees it. `..` never goes above the root, and symbolic links are read and followed
 * here, never by the kernel: a relative target is resolved from the link's directory,
 * an absolute one from the root (what a process inside the container would see).
 * What remains is a race: if something renames a directory on the resolved path into a
 * symlink between our check and the kernel's use of the path, the kernel follows it.
 * Closing that needs `openat2(RESOLVE_IN_ROOT)` or `/proc/self/fd`, which Deno does not
 * offer to a process without FFI or full read access.
 *
 * @module
 */

/** Most symlinks followed while resolving one path (as Linux's MAXSYMLINKS). */
export const MAX_SYMLINKS = 40;

/** Why {@linkcode RootfsResolver.resolve} refused a path. */
export type PathRefusal =
  /** The path is absolute: guest paths are relative to a directory they hold. */
  | "absolute"
  /** `..` or a symlink target would leave the root. */
  | "escape"
  /** The path is empty. */
  | "empty"
  /** The path contains a NUL byte. */
  | "nul"
  /** A component that must be a directory is not one. */
  | "not-directory"
  /** More than {@linkcode MAX_SYMLINKS} symlinks were followed. */
  | "loop";

/** The POSIX error name each refusal stands for (what the kernel would say, or EPERM). */
const REFUSAL_CODES: Readonly<Record<PathRefusal, string>> = {
  absolute: "EPERM",
  escape: "EPERM",
  empty: "ENOENT",
  nul: "EILSEQ",
  "not-directory": "ENOTDIR",
  loop: "ELOOP",
};

/**
 * A path the resolver refused. `code` is a POSIX error name (`EPERM`, `ENOENT`,
 * `ENOTDIR`, `ELOOP`, `EILSEQ`), as on the errors Deno throws, so that one mapping
 * handles both; `reason` tells a confinement refusal from an ordinary error.
 */
export class PathResolutionError extends Error {
  /** Why the path was refused. */
  readonly reason: PathRefusal;
  /** The POSIX error name for it. */
  readonly code: string;

  /** A refusal of `path` for `reason`. */
  constructor(reason: PathRefusal, path: string) {
    const why = {
      absolute: "is absolute; paths are relative to a directory the guest holds",
      escape: "leads outside the container's root",
      empty: "is empty",
      nul: "contains a NUL byte",
      "not-directory": "has a component that is not a directory",
      loop: `goes through more than ${MAX_SYMLINKS} symbolic links`,
    }[reason];
    super(`path "${path}" ${why}`);
    this.name = "PathResolutionError";
    this.reason = reason;
    this.code = REFUSAL_CODES[reason];
  }

  /** True if the path was refused because it would leave the root (or is absolute). */
  get isEscape(): boolean {
    return this.reason === "escape" || this.reason === "absolute";
  }
}

function isNotFound(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound;
}

/**
 * Resolves guest paths inside one host directory (see the module documentation).
 * Resolved paths are lists of components; `[]` is the root.
 */
export class RootfsResolver {
  /** The host directory guests see as `/` (canonical, without a trailing `/`). */
  readonly root: string;

  /** A resolver confined to host directory `root` (a canonical path). */
  constructor(root: string) {
    this.root = root.endsWith("/") && root !== "/" ? root.slice(0, -1) : root;
  }

  /** The host path of resolved components. */
  host(components: readonly string[]): string {
    if (components.length === 0) return this.root;
    return `${this.root === "/" ? "" : this.root}/${components.join("/")}`;
  }

  /**
   * Resolves `path` relative to `base`. Symlinks on the way are followed; the last
   * component is followed only if `followLast`. A trailing `/` demands a directory.
   * The last component may be missing (it may be about to be created).
   *
   * @throws {PathResolutionError} for an absolute path, an escape, a loop, a file
   *   used as a directory, an empty path or a NUL byte
   * @throws {Deno.errors.NotFound} (and other host errors, as Deno throws them) for a
   *   missing directory on the way
   */
  resolve(base: readonly string[], path: string, followLast: boolean): string[] {
    if (path === "") throw new PathResolutionError("empty", path);
    if (path.startsWith("/")) throw new PathResolutionError("absolute", path);
    if (path.includes("\0")) throw new PathResolutionError("nul", path);
    const stack = [...base];
    const pending = path.split("/").reverse();
    const mustBeDir = path.endsWith("/");
    let links = 0;
    while (pending.length > 0) {
      const part = pending.pop()!;
      if (part === "" || part === ".") continue;
      if (part === "..") {
        if (stack.length === 0) throw new PathResolutionError("escape", path);
        stack.pop();
        continue;
      }
      stack.push(part);
      const last = !pending.some((p) => p !== "" && p !== ".");
      if (last && !followLast && !mustBeDir) break;
      let stat: Deno.FileInfo;
      try {
        stat = Deno.lstatSync(this.host(stack));
      } catch (err) {
        if (isNotFound(err) && last) break;
        throw err;
      }
      if (stat.isSymlink) {
        if (++links > MAX_SYMLINKS) throw new PathResolutionError("loop", path);
        const target = Deno.readLinkSync(this.host(stack));
        stack.pop();
        if (target.startsWith("/")) stack.length = 0;
        pending.push(...target.split("/").reverse());
        continue;
      }
      if (!last && !stat.isDirectory) throw new PathResolutionError("not-directory", path);
    }
    if (mustBeDir && !Deno.statSync(this.host(stack)).isDirectory) {
      throw new PathResolutionError("not-directory", path);
    }
    return stack;
  }
}
