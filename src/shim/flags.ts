/**
 * The shim's command line, parsed the way Go's `flag` package does, because that
 * is how containerd writes it: single-dash flags (`-namespace x`, `-id=x`), bare
 * booleans (`-debug`), parsing stops at the first word that is not a flag (the
 * action) or at `--`.
 *
 * @module
 */

/** Flags that take a value. */
const STRING_FLAGS = [
  "namespace",
  "address",
  "publish-binary",
  "id",
  "bundle",
  "socket",
  "debug-socket",
] as const;

/** Flags that are booleans (bare, or `-flag=true|false`). */
const BOOL_FLAGS = ["debug", "v", "version", "info"] as const;

/** The parsed command line. */
export interface ShimFlags {
  /** containerd namespace (`-namespace`). */
  namespace: string;
  /** containerd's gRPC socket path (`-address`). */
  address: string;
  /** containerd's executable, for the legacy event path (`-publish-binary`). */
  publishBinary: string;
  /** Task id (`-id`). */
  id: string;
  /** Bundle directory (`-bundle`, given to `delete`). */
  bundle: string;
  /** Socket path to serve on instead of the computed one (`-socket`). */
  socket: string;
  /** Debug socket path (`-debug-socket`, accepted and unused). */
  debugSocket: string;
  /** Debug logging (`-debug`). */
  debug: boolean;
  /** Print the version and exit (`-v`, `-version`). */
  version: boolean;
  /** Print a RuntimeInfo protobuf and exit (`-info`). */
  info: boolean;
  /** The action word: "start", "delete", "" (the server), or a hidden internal one. */
  action: string;
  /** Words after the action. */
  rest: string[];
}

/** A command line that cannot be parsed. */
export class FlagError extends Error {
  /** Creates a flag error with a message that names the flag. */
  constructor(message: string) {
    super(message);
    this.name = "FlagError";
  }
}

type StringFlag = typeof STRING_FLAGS[number];
type BoolFlag = typeof BOOL_FLAGS[number];

function isStringFlag(name: string): name is StringFlag {
  return (STRING_FLAGS as readonly string[]).includes(name);
}

function isBoolFlag(name: string): name is BoolFlag {
  return (BOOL_FLAGS as readonly string[]).includes(name);
}

function parseBool(name: string, value: string): boolean {
  switch (value.toLowerCase()) {
    case "1":
    case "t":
    case "true":
      return true;
    case "0":
    case "f":
    case "false":
      return false;
  }
  throw new FlagError(`invalid boolean value "${value}" for flag -${name}`);
}

/**
 * Parses the shim's argv (without the program name).
 *
 * @throws {FlagError} on an unknown flag or a missing value
 */
export function parseFlags(argv: readonly string[]): ShimFlags {
  const strings: Record<StringFlag, string> = {
    "namespace": "",
    "address": "",
    "publish-binary": "",
    "id": "",
    "bundle": "",
    "socket": "",
    "debug-socket": "",
  };
  const bools: Record<BoolFlag, boolean> = { debug: false, v: false, version: false, info: false };
  let i = 0;
  for (; i < argv.length; i++) {
    const word = argv[i];
    if (word === "--") {
      i++;
      break;
    }
    if (word.length < 2 || word[0] !== "-") break;
    const body = word.startsWith("--") ? word.slice(2) : word.slice(1);
    if (body === "" || body.startsWith("-") || body.startsWith("=")) {
      throw new FlagError(`bad flag syntax: ${word}`);
    }
    const eq = body.indexOf("=");
    const name = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);
    if (isBoolFlag(name)) {
      bools[name] = inline === undefined ? true : parseBool(name, inline);
    } else if (isStringFlag(name)) {
      if (inline !== undefined) {
        strings[name] = inline;
      } else {
        if (i + 1 >= argv.length) throw new FlagError(`flag needs an argument: -${name}`);
        strings[name] = argv[++i];
      }
    } else {
      throw new FlagError(`flag provided but not defined: -${name}`);
    }
  }
  return {
    namespace: strings["namespace"],
    address: strings["address"],
    publishBinary: strings["publish-binary"],
    id: strings["id"],
    bundle: strings["bundle"],
    socket: strings["socket"],
    debugSocket: strings["debug-socket"],
    debug: bools.debug,
    version: bools.v || bools.version,
    info: bools.info,
    action: argv[i] ?? "",
    rest: argv.slice(i + 1),
  };
}

/** Turns parsed flags back into argv (without the action), for re-executing the shim. */
export function formatFlags(flags: ShimFlags): string[] {
  const out: string[] = [];
  const add = (name: string, value: string) => {
    if (value !== "") out.push(`-${name}`, value);
  };
  add("namespace", flags.namespace);
  add("address", flags.address);
  add("publish-binary", flags.publishBinary);
  add("id", flags.id);
  add("bundle", flags.bundle);
  add("socket", flags.socket);
  if (flags.debug) out.push("-debug");
  return out;
}
