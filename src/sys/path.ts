/**
 * The two path splits the shim needs, without `node:path` (whose load through Deno's
 * Node layer costs milliseconds in the short-lived `start` and `delete` actions).
 *
 * @module
 */

/** The directory part of an absolute path: `/a/b` → `/a`, `/a` → `/`. */
export function parentDir(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}

/** The last component of a path: `/a/b` → `b`. */
export function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
