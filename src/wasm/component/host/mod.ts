/**
 * The WASI 0.2 host of one component instance: {@linkcode createHost} builds the
 * import object jco's glue asks for (keys are interface names without versions, as the
 * glue looks them up), from a {@linkcode HostConfig}. Nothing here is process-global:
 * two instances never share arguments, environment, stdio, preopens or resources.
 *
 * @module
 */

import { type CliConfig, cliImports, cliStdioImports, environmentImport } from "./cli.ts";
import { CLOCKS_RANDOM, clocksRandomImports, insecureSeedImport } from "./clocks_random.ts";
import { createFilesystem, type FilesystemHost } from "./filesystem.ts";
import { httpImports } from "./http.ts";
import { InputStream, IoError, OutputStream, Pollable, Poller } from "./io.ts";
import { DENIED_SOCKETS, type SocketsHost, socketsHost } from "./sockets.ts";

/** What one instance's host gives the guest. */
export interface HostConfig extends CliConfig {
  /** Host directory preopened as the guest's `/`, or null for no filesystem. */
  root: string | null;
  /**
   * Whether the guest may reach the network: `wasi:sockets` and outgoing `wasi:http`
   * requests. The runner decides nothing here: it is told (`GuestInit.network`, from the
   * container's spec and the operator). Default: no.
   */
  network?: boolean;
}

/** `wasi:http/outgoing-handler` for a guest without network access. */
const DENIED_OUTGOING_HANDLER = {
  handle: (): never => {
    throw { tag: "HTTP-request-denied" };
  },
};

/** The interfaces this host implements (without versions). */
export const SUPPORTED_INTERFACES: readonly string[] = [
  "wasi:cli/environment",
  "wasi:cli/exit",
  "wasi:cli/stdin",
  "wasi:cli/stdout",
  "wasi:cli/stderr",
  "wasi:cli/terminal-input",
  "wasi:cli/terminal-output",
  "wasi:cli/terminal-stdin",
  "wasi:cli/terminal-stdout",
  "wasi:cli/terminal-stderr",
  "wasi:clocks/monotonic-clock",
  "wasi:clocks/wall-clock",
  "wasi:filesystem/types",
  "wasi:filesystem/preopens",
  "wasi:http/types",
  "wasi:http/outgoing-handler",
  "wasi:io/error",
  "wasi:io/poll",
  "wasi:io/streams",
  "wasi:random/random",
  "wasi:random/insecure",
  "wasi:random/insecure-seed",
  "wasi:sockets/network",
  "wasi:sockets/instance-network",
  "wasi:sockets/ip-name-lookup",
  "wasi:sockets/tcp",
  "wasi:sockets/tcp-create-socket",
  "wasi:sockets/udp",
  "wasi:sockets/udp-create-socket",
];

/** The import object of one instance. */
export type Imports = Record<string, Record<string, unknown>>;

/** The host side of one instance. */
export interface Host {
  /** What jco's `instantiate` takes as imports. */
  imports: Imports;
  /** Releases what the instance still holds (open files, sockets). */
  dispose(): void;
}

/** What one instance of a {@linkcode hostFactory} holds besides its import object. */
interface InstanceState {
  env: HostConfig["env"] | (() => HostConfig["env"]);
  filesystem: FilesystemHost | null;
  sockets: SocketsHost | null;
}

/** Where an instance's import object keeps its state (see {@linkcode hostFactory}). */
const STATE = Symbol("the instance's host state");
type InstanceImports = Imports & { [STATE]: InstanceState };

/**
 * Makes `key` of every instance's import object (inheriting from `shared`) on first
 * use, from the instance's state: an own property from then on.
 */
function perInstance(
  shared: Imports,
  key: string,
  make: (state: InstanceState, imports: InstanceImports) => Record<string, unknown>,
): void {
  Object.defineProperty(shared, key, {
    enumerable: true,
    configurable: true,
    get(this: InstanceImports) {
      const value = make(this[STATE], this);
      Object.defineProperty(this, key, { value, enumerable: true, configurable: true });
      return value;
    },
  });
}

/** The host of one instance of a {@linkcode hostFactory}. */
class FactoryHost implements Host {
  constructor(readonly imports: InstanceImports) {}

  dispose(): void {
    const state = this.imports[STATE];
    state.sockets?.dispose();
    state.filesystem?.close();
  }
}

/**
 * Builds the hosts of many instances that differ only in their environment (a proxy's
 * instances: `REQUEST_ID`). What holds no state is built once and shared, through the
 * prototype of each instance's import object; each instance still gets its own
 * environment, poll fairness counter, insecure seed, open files and sockets, each made
 * when the guest first looks for it (most requests use none of them). `env` may be a
 * function, called then. Cheaper per instance than {@linkcode createHost}, which a
 * proxy would call once per request.
 */
export function hostFactory(
  config: Omit<HostConfig, "env">,
): (env: HostConfig["env"] | (() => HostConfig["env"])) => Host {
  const shared: Imports = {
    ...cliStdioImports(config),
    ...CLOCKS_RANDOM,
    // The filesystem's types interface is classes and a function, no state.
    "wasi:filesystem/types": createFilesystem(null).imports["wasi:filesystem/types"],
    ...httpImports,
    ...(config.network ? {} : { "wasi:http/outgoing-handler": DENIED_OUTGOING_HANDLER }),
    "wasi:io/error": { Error: IoError },
    "wasi:io/streams": { InputStream, OutputStream },
  };
  const fs = (state: InstanceState) => state.filesystem ??= createFilesystem(config.root);
  perInstance(shared, "wasi:cli/environment", (state) => {
    const env = typeof state.env === "function" ? state.env() : state.env;
    return environmentImport(config.args, env, config.cwd);
  });
  perInstance(shared, "wasi:random/insecure-seed", () => insecureSeedImport());
  perInstance(shared, "wasi:io/poll", () => ({ Pollable, poll: new Poller().poll }));
  perInstance(shared, "wasi:filesystem/preopens", (state) => ({
    getDirectories: () =>
      (fs(state).imports["wasi:filesystem/preopens"].getDirectories as () => unknown)(),
  }));
  if (config.network) {
    // Most requests open no socket.
    for (const key of Object.keys(DENIED_SOCKETS.imports)) {
      perInstance(shared, key, (state) => (state.sockets ??= socketsHost(true)).imports[key]);
    }
  } else {
    Object.assign(shared, DENIED_SOCKETS.imports);
  }
  return (env) => {
    const imports = Object.create(shared) as InstanceImports;
    imports[STATE] = { env, filesystem: null, sockets: null };
    return new FactoryHost(imports);
  };
}

/** Builds the host of one fresh instance. */
export function createHost(config: HostConfig): Host {
  const filesystem = createFilesystem(config.root);
  const sockets = socketsHost(config.network === true);
  return {
    imports: {
      ...cliImports(config),
      ...clocksRandomImports(),
      ...filesystem.imports,
      ...httpImports,
      ...(config.network ? {} : { "wasi:http/outgoing-handler": DENIED_OUTGOING_HANDLER }),
      ...sockets.imports,
      "wasi:io/error": { Error: IoError },
      "wasi:io/poll": { Pollable, poll: new Poller().poll },
      "wasi:io/streams": { InputStream, OutputStream },
    },
    dispose: () => {
      sockets.dispose();
      filesystem.close();
    },
  };
}
