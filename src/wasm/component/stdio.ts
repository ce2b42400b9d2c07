/**
 * The container's stdout and stderr FIFOs as wasi:io sinks, opened at once (read-write,
 * so that opening a FIFO never waits for a reader) even if the guest never writes:
 * the readers see end-of-file only after a writer has come and gone.
 *
 * @module
 */

import { type ByteSink, discardSink } from "./host/io.ts";
import { FileWriter, QueueSink } from "./host/pipes.ts";

/** The container's output streams. */
export interface Stdio {
  stdout: ByteSink;
  stderr: ByteSink;
  /** Waits for queued output to reach the FIFOs, then closes them. */
  close(): Promise<void>;
}

/** A FIFO (or file) as a sink; "" drops everything. */
function fifoSink(path: string): { sink: ByteSink; close: () => Promise<void> } {
  if (path === "") return { sink: discardSink(), close: () => Promise.resolve() };
  const writer = new FileWriter(path);
  writer.open();
  const sink = new QueueSink(writer.write);
  return {
    sink,
    close: async () => {
      await sink.drained();
      await writer.close();
    },
  };
}

/** The sinks for the FIFOs at `stdout` and `stderr` ("" for none). */
export function openStdio(stdout: string, stderr: string): Stdio {
  const out = fifoSink(stdout);
  const err = fifoSink(stderr);
  return {
    stdout: out.sink,
    stderr: err.sink,
    close: async () => {
      await Promise.all([out.close(), err.close()]);
    },
  };
}

const encoder = new TextEncoder();

/** Writes a line to the container's stderr, waiting for room; failures go to `log`. */
export async function tellContainer(
  stdio: Stdio,
  message: string,
  log: (line: string) => void,
): Promise<void> {
  try {
    const bytes = encoder.encode(`${message}\n`);
    for (let at = 0; at < bytes.length;) {
      while (!stdio.stderr.writable()) await stdio.stderr.whenWritable();
      const n = Math.min(stdio.stderr.capacity(), bytes.length - at);
      stdio.stderr.write(bytes.slice(at, at + n));
      at += n;
    }
  } catch (err) {
    log(`cannot write to the container's stderr: ${(err as Error).message}`);
  }
}

/** Writes one line to this process's own stderr (the shim's log, never the container's). */
export function logLine(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line.endsWith("\n") ? line : `${line}\n`));
  } catch {
    // nowhere to log
  }
}
