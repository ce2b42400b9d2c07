/**
 * The shim server's log. containerd creates a FIFO named `log` in the bundle and
 * copies every line written to it into its own log; the server writes there (its
 * stdio is /dev/null). Lines look like containerd's: `time=… level=… msg=…`.
 *
 * @module
 */

import { BundleFile, bundlePath } from "../oci/bundle.ts";
import { telemetryOn } from "../sys/telemetry.ts";

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
  /** True when debug lines are written. */
  readonly debugging: boolean;
  /** This logger with more fields on every line (a task's `id` and `pod`). */
  with(fields: Record<string, string | undefined>): Logger;
}

/** How a level is named in the line, and the `console` method that exports it. */
const LEVELS = {
  info: { name: "info", console: "info" },
  warn: { name: "warning", console: "warn" },
  error: { name: "error", console: "error" },
  debug: { name: "debug", console: "debug" },
} as const;

/**
 * A logger that writes to `sink` (default: nowhere) in logrus' text format, which
 * containerd copies from the FIFO: `time="…" level=… msg="…" key="value"…`. When the
 * process exports telemetry, each line is also a log record (through `console`, which
 * Deno exports; the server's `console` is not printed, see `serverTelemetryEnv`).
 */
export function createLogger(
  sink: ((line: string) => void) | undefined,
  fields: Record<string, string | undefined>,
  debug: boolean,
): Logger {
  const suffix = Object.entries(fields)
    .filter(([, v]) => v !== undefined && v !== "")
    .map(([k, v]) => ` ${k}=${JSON.stringify(v)}`).join("");
  const exported = telemetryOn();
  const write = (level: keyof typeof LEVELS, msg: string) => {
    const { name, console: method } = LEVELS[level];
    if (exported) console[method](`${msg}${suffix}`);
    if (sink === undefined) return;
    sink(`time="${new Date().toISOString()}" level=${name} msg=${JSON.stringify(msg)}${suffix}\n`);
  };
  return {
    info: (msg) => write("info", msg),
    warn: (msg) => write("warn", msg),
    error: (msg) => write("error", msg),
    debug: (msg) => debug && write("debug", msg),
    debugging: debug,
    with: (more) => createLogger(sink, { ...fields, ...more }, debug),
  };
}

/**
 * Opens the bundle's `log` FIFO for writing. containerd holds it open for reading,
 * so opening does not block; with no FIFO there (a shim started by hand) lines go
 * nowhere. Writes never block the server: a full FIFO drops the line.
 */
export function openLogSink(path: string): ((line: string) => void) | undefined {
  return openLogFile(path)?.write;
}

/** An open log FIFO: {@linkcode openLogSink} with a way to close it. */
export interface LogFile {
  /** Queues a line (dropped if the FIFO is full or gone). */
  write(line: string): void;
  /** Closes the FIFO once the queued lines are written. */
  close(): void;
}

/** Opens the FIFO at `path` for writing; undefined if there is none. */
export function openLogFile(path: string): LogFile | undefined {
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
  return {
    write: (line: string) => {
      const bytes = encoder.encode(line);
      queue = queue.then(() => file.write(bytes)).catch(() => {});
    },
    close: () => {
      queue = queue.finally(() => file.close()).catch(() => {});
    },
  };
}

/**
 * The log of a server shared by several tasks: each task's bundle has its own `log`
 * FIFO (containerd reads the one of the container it started the shim for). Lines go
 * to the FIFO of the newest task still there, else to the first one opened.
 */
export class LogRouter {
  #files = new Map<string, LogFile>();
  #first: LogFile | undefined;
  #firstId: string;

  /** Starts with the log of the bundle of task `id`, which the server was started for. */
  constructor(id: string, bundle: string) {
    this.#firstId = id;
    this.#first = openLogFile(bundlePath(bundle, BundleFile.LOG));
  }

  /** A task joined: its bundle's log becomes the current one. */
  add(id: string, bundle: string): void {
    if ((id === this.#firstId && this.#first) || this.#files.has(id)) return;
    const file = openLogFile(bundlePath(bundle, BundleFile.LOG));
    if (file) this.#files.set(id, file);
    else this.#files.delete(id);
  }

  /** A task left: its log is closed (the first one stays, as a last resort). */
  remove(id: string): void {
    this.#files.get(id)?.close();
    this.#files.delete(id);
  }

  /** Writes a line to the current log. */
  write = (line: string): void => {
    let current = this.#first;
    for (const file of this.#files.values()) current = file;
    current?.write(line);
  };

  /** Closes every log. */
  close(): void {
    for (const file of this.#files.values()) file.close();
    this.#files.clear();
    this.#first?.close();
    this.#first = undefined;
  }
}
