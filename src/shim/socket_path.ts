/**
 * Where a shim server listens, computed as containerd's reference shims do so that
 * the path is stable for a (containerd, namespace, group) triple:
 * `<socket dir>/<hex sha256(join(address, namespace, group))>`.
 *
 * @module
 */

/** Default directory for shim sockets (containerd 1.6–2.2 hard-code it). */
export const DEFAULT_SOCKET_DIR = "/run/containerd/s";

/** Longest socket path we accept (the kernel's limit is 108 bytes with the NUL). */
export const SOCKET_PATH_LIMIT = 106;

/** OCI annotation that groups a Kubernetes pod's containers into one shim. */
export const SANDBOX_ID_ANNOTATION = "io.kubernetes.cri.sandbox-id";

/** Joins path parts and cleans the result like Go's `filepath.Join`. */
export function joinClean(...parts: string[]): string {
  const joined = parts.filter((p) => p !== "").join("/");
  if (joined === "") return "";
  const absolute = joined.startsWith("/");
  const out: string[] = [];
  for (const seg of joined.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!absolute) out.push("..");
      continue;
    }
    out.push(seg);
  }
  const body = out.join("/");
  return absolute ? `/${body}` : body || ".";
}

/** Computes the socket path for a group. */
export async function socketPath(
  address: string,
  namespace: string,
  group: string,
  dir = DEFAULT_SOCKET_DIR,
): Promise<string> {
  const key = new TextEncoder().encode(joinClean(address, namespace, group));
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", key));
  const hex = Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
  const path = `${dir}/${hex}`;
  if (path.length > SOCKET_PATH_LIMIT) {
    throw new Error(
      `socket path ${path} is ${path.length} bytes, over the limit of ${SOCKET_PATH_LIMIT}: use a shorter socket directory`,
    );
  }
  return path;
}

/** Strips an optional `unix://` scheme from an address. */
export function stripUnix(address: string): string {
  return address.startsWith("unix://") ? address.slice("unix://".length) : address;
}

/** True if something accepts connections on the Unix socket at `path`. */
export async function isListening(path: string): Promise<boolean> {
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    return true;
  } catch {
    return false;
  }
}
