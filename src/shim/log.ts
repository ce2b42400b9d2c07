/**
 * The shim server's log. containerd creates a FIFO named `log` in the bundle and
 * copies every line written to it into its own log; the server writes there (its
 * stdio is /dev/null). Lines look like containerd's: `time=… level=… msg=…`.
 *
 * @module
 */

/** A line-oriented logger. */
export interface Logger {
  /** Logs at info level. */
  info(msg: string): void;
  /** Logs at warning level. */
  warn(msg: string): void;
  /** Logs at error level. */
  error(msg: string): void;
  /** Logs at debug level (only with `-debug`). */
  debug(msg: string): void;
}

/** A logger that writes to `sink` (default: nowhere). */
export function createLogger(
  sink: ((line: string) => void) | undefined,
  fields: Record<string, string>,
  debug: boolean,
): Logger {
  const suffix = Object.entries(fields).map(([k, v]) => ` ${k}=${JSON.stringify(v)}`).join("");
  const write = (level: string, msg: string) => {
    if (sink === undefined) return;
    sink(`time="${new Date().toISOString()}" level=${level} msg=${JSON.stringify(msg)}${suffix}\n`);
  };
  return {
    info: (msg) => write("info", msg),
    warn: (msg) => write("warning", msg),
    error: (msg) => write("error", msg),
    debug: (msg) => debug && write("debug", msg),
  };
}

/**
 * Opens the bundle's `log` FIFO for writing. containerd holds it open for reading,
 * so opening does not block; with no FIFO there (a shim started by hand) lines go
 * nowhere. Writes never block the server: a full FIFO drops the line.
 */
export function openLogSink(path: string): ((line: string) => void) | undefined {
  let file: Deno.FsFile;
  try {
    const info = Deno.statSync(path);
    if (!info.isFifo) return undefined;
    file = Deno.openSync(path, { write: true });
  } catch {
    return undefined;
  }
  const encoder = new TextEncoder();
  let queue: Promise<unknown> = Promise.resolve();
  return (line: string) => {
    const bytes = encoder.encode(line);
    queue = queue.then(() => file.write(bytes)).catch(() => {});
  };
}
