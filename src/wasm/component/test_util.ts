/**
 * Helpers for this directory's tests: the test components in `testdata/`, a cache
 * directory shared by every test in the process (so each component is transpiled once
 * per test run), and guest configurations writing to temporary files instead of FIFOs.
 *
 * @module
 */

import type { GuestInit } from "../guest_init.ts";

const TESTDATA = new URL("./testdata/", import.meta.url);

/** Test components (see `testdata/build.sh`). */
export const FIXTURES = {
  /** WAT command: stdout/stderr lines, exit code = last argument, `greet` export. */
  command: "command.wasm",
  /** WAT wasi:http proxy: hello, `/count`, `/trap` (unreachable). */
  httpHello: "http_hello.wasm",
  /** WAT wasi:http proxy that tries to leak state to the next request: see `testdata/leaky.wat`. */
  leaky: "leaky.wasm",
  /** JS wasi:http proxy (componentize-js): see `testdata/http_app.js`. */
  httpApp: "http_app.wasm",
  /** WAT glue test: `test:abi/guest` passes every value to `test:abi/host` and back. */
  abi: "abi.wasm",
} as const;

/** The bytes of a test component. */
export function fixture(name: string): Uint8Array {
  return Deno.readFileSync(new URL(name, TESTDATA));
}

/** A cache directory shared by the tests of this process (removed when it exits). */
export const sharedCacheDir: string = Deno.makeTempDirSync({ prefix: "component-cache-" });
globalThis.addEventListener("unload", () => {
  try {
    Deno.removeSync(sharedCacheDir, { recursive: true });
  } catch {
    // already gone
  }
});

/** Options of {@linkcode guestInit}. */
export interface GuestOptions {
  args?: string[];
  env?: string[];
  func?: string;
  cacheDir?: string;
  /** May the guest reach the network (`GuestInit.network`)? Default: no. */
  network?: boolean;
  /** The component's file, when it is not in `testdata/` (`name` then only names it). */
  hostPath?: string;
}

/** A guest whose stdio are files in a fresh temporary root. */
export interface TestGuest {
  init: GuestInit;
  /** What the guest wrote to stdout so far. */
  stdout(): string;
  /** What the guest wrote to stderr so far. */
  stderr(): string;
  /** Removes the temporary root. */
  cleanup(): void;
}

/** A guest configuration for test component `name`. */
export function guestInit(name: string, options: GuestOptions = {}): TestGuest {
  const root = Deno.makeTempDirSync({ prefix: "component-root-" });
  const stdio = Deno.makeTempDirSync({ prefix: "component-stdio-" });
  const out = `${stdio}/stdout`;
  const err = `${stdio}/stderr`;
  Deno.writeTextFileSync(out, "");
  Deno.writeTextFileSync(err, "");
  const hostPath = options.hostPath ?? new URL(name, TESTDATA).pathname;
  return {
    init: {
      id: `test-${name}`,
      rootfs: root,
      args: options.args ?? [`/${name}`],
      env: options.env ?? [],
      cwd: "/",
      stdin: "",
      stdout: out,
      stderr: err,
      cacheDir: options.cacheDir ?? sharedCacheDir,
      network: options.network,
      hostPath,
      guestPath: `/${name}`,
      func: options.func ?? "_start",
    },
    stdout: () => Deno.readTextFileSync(out),
    stderr: () => Deno.readTextFileSync(err),
    cleanup: () => {
      Deno.removeSync(root, { recursive: true });
      Deno.removeSync(stdio, { recursive: true });
    },
  };
}

/** A TCP port that was free a moment ago, on 127.0.0.1. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/**
 * Options for tests that load components: jco's bindgen runs on preview2-shim's Node
 * build, which starts a worker thread of its own, and JSPI glue keeps timers; neither
 * is something a test can close.
 */
export const COMPONENT_TEST = { sanitizeOps: false, sanitizeResources: false } as const;
