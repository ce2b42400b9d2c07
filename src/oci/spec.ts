/**
 * Reading the OCI runtime spec (`<bundle>/config.json`): only the parts the shim
 * uses, validated so that a bad spec fails Create with a message naming the field.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";
import { BundleFile, bundlePath } from "./bundle.ts";
import {
  SECCOMP_ACTIONS,
  SECCOMP_ARCHES,
  SECCOMP_FLAGS,
  SECCOMP_OPS,
  type SeccompAction,
  type SeccompArg,
  type SeccompOp,
  type SeccompProfile,
  type SeccompRule,
} from "../sys/seccomp.ts";

/** The subset of the OCI runtime spec the shim reads. */
export interface OciSpec {
  process: {
    args: string[];
    env: string[];
    cwd: string;
    terminal: boolean;
  };
  root: { path: string; readonly: boolean };
  annotations: Record<string, string>;
  /** `linux.namespaces[type=network].path`, if the spec names one. */
  netns?: string;
  /**
   * The container's network as runc would make it: `join` the namespace at `netns` (a
   * pod's), `host` (no network namespace in the spec: the node's network, as `ctr run
   * --net-host` and `hostNetwork` pods ask), or `new` (a namespace of its own, which
   * runc would create with only a loopback device).
   */
  network: "join" | "host" | "new";
  /** `linux.cgroupsPath`, if any. */
  cgroupsPath?: string;
  /** `linux.resources`: the limits the shim applies to the task's cgroup. */
  resources?: LinuxResources;
  /** `mounts`, in spec order (see `mounts.ts` for what a wasm guest gets of them). */
  mounts?: SpecMount[];
  /** `process.user`: who the guest is (uid 0, gid 0 when absent). */
  user?: SpecUser;
  /**
   * `linux.maskedPaths` and `linux.readonlyPaths`: parts of `/proc` and `/sys` that runc
   * hides or makes read-only (absent: none).
   */
  maskedPaths?: string[];
  readonlyPaths?: string[];
  /**
   * `linux.seccomp` as the spec has it: {@linkcode parseSeccomp} reads it for a wasm
   * guest (a native container's is runc's to read).
   */
  seccomp?: unknown;
}

/** One entry of the spec's `mounts`. */
export interface SpecMount {
  destination: string;
  type: string;
  source: string;
  options: string[];
}

/** The spec's `process.user`, numeric as the runtime spec has it. */
export interface SpecUser {
  uid: number;
  gid: number;
  additionalGids: number[];
}

/** Largest valid uid/gid: 2^32-1 is `(uid_t)-1`, "no change" for setresuid(2). */
const MAX_ID = 0xfffffffe;

function isId(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= MAX_ID;
}

/** Validates `process.user`. @throws {ShimError} INVALID_ARGUMENT naming the field */
export function parseUser(raw: unknown, where: string): SpecUser {
  if (raw === undefined || raw === null) return { uid: 0, gid: 0, additionalGids: [] };
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw invalidArgument(`OCI spec ${where}: process.user is not an object`);
  }
  const user = raw as Record<string, unknown>;
  const uid = user.uid ?? 0;
  const gid = user.gid ?? 0;
  const extra = user.additionalGids ?? [];
  if (!isId(uid)) {
    throw invalidArgument(
      `OCI spec ${where}: process.user.uid ${
        JSON.stringify(uid)
      } is not a valid uid (0..${MAX_ID})`,
    );
  }
  if (!isId(gid)) {
    throw invalidArgument(
      `OCI spec ${where}: process.user.gid ${
        JSON.stringify(gid)
      } is not a valid gid (0..${MAX_ID})`,
    );
  }
  if (!Array.isArray(extra) || !extra.every(isId)) {
    throw invalidArgument(
      `OCI spec ${where}: process.user.additionalGids ${JSON.stringify(extra)} are not valid gids`,
    );
  }
  return { uid, gid, additionalGids: extra };
}

/** Validates the spec's `mounts` (shape only; `mounts.ts` plans them). */
export function parseMounts(raw: unknown, where: string): SpecMount[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalidArgument(`OCI spec ${where}: mounts is not an array`);
  return raw.map((m: Record<string, unknown> | null, i) => {
    const name = `OCI spec ${where}: mounts[${i}]`;
    if (typeof m !== "object" || m === null) throw invalidArgument(`${name} is not an object`);
    if (typeof m.destination !== "string" || m.destination === "") {
      throw invalidArgument(`${name} has no destination`);
    }
    const options = m.options ?? [];
    if (!isStringArray(options)) {
      throw invalidArgument(`${name} (${m.destination}): options must be strings`);
    }
    if (m.type !== undefined && typeof m.type !== "string") {
      throw invalidArgument(`${name} (${m.destination}): type must be a string`);
    }
    if (m.source !== undefined && typeof m.source !== "string") {
      throw invalidArgument(`${name} (${m.destination}): source must be a string`);
    }
    return {
      destination: m.destination,
      type: (m.type as string | undefined) ?? "",
      source: (m.source as string | undefined) ?? "",
      options,
    };
  });
}

/**
 * The part of the OCI `LinuxResources` the shim applies (see `src/cgroup/`). Also the
 * JSON of `UpdateTaskRequest.resources`. Limits of -1 mean "unlimited"; absent
 * fields are left as they are.
 */
export interface LinuxResources {
  memory?: {
    /** Bytes. */
    limit?: number;
    /** Soft limit, bytes. */
    reservation?: number;
    /** Memory plus swap, bytes (as on cgroup v1). */
    swap?: number;
  };
  cpu?: {
    /** Relative weight, 2..262144 (v1 `cpu.shares`). */
    shares?: number;
    /** CFS quota per period, µs; -1 or absent: no quota. */
    quota?: number;
    /** CFS period, µs. */
    period?: number;
  };
  pids?: {
    /** Maximum number of tasks; 0 leaves it, a negative value means unlimited. */
    limit?: number;
  };
  /** cgroup v2 files to write as they are (`unified`), e.g. `{"memory.high": "1G"}`. */
  unified?: Record<string, string>;
}

/**
 * The CPU and memory a container may use, from its spec's `linux.resources`: what
 * defaults sized to the container (a wasi:http proxy's serving threads and grown-memory
 * budget) are derived from. Absent fields: no limit.
 */
export interface ContainerLimits {
  /** `memory.limit` in bytes, when set and positive. */
  memoryBytes?: number;
  /** CPUs the CFS quota allows (`cpu.quota / cpu.period`), when both are set and positive. */
  cpus?: number;
}

/** The {@linkcode ContainerLimits} of `resources` (the spec's, at Create). */
export function containerLimits(resources: LinuxResources | undefined): ContainerLimits {
  const limits: ContainerLimits = {};
  const memory = resources?.memory?.limit;
  if (memory !== undefined && memory > 0) limits.memoryBytes = memory;
  const { quota, period } = resources?.cpu ?? {};
  if (quota !== undefined && period !== undefined && quota > 0 && period > 0) {
    limits.cpus = quota / period;
  }
  return limits;
}

/** The numeric `LinuxResources` fields, by section. */
const RESOURCE_NUMBERS = {
  memory: ["limit", "reservation", "swap"],
  cpu: ["shares", "quota", "period"],
  pids: ["limit"],
} as const;

/**
 * Validates a `LinuxResources` JSON value (spec `linux.resources`, or an Update's
 * resources), keeping the fields the shim applies. `where` names it in errors.
 *
 * @throws {ShimError} INVALID_ARGUMENT for a field of the wrong type
 */
export function parseLinuxResources(raw: unknown, where: string): LinuxResources {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw invalidArgument(`${where} is not a JSON object`);
  }
  const src = raw as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [section, names] of Object.entries(RESOURCE_NUMBERS)) {
    const value = src[section];
    if (value === undefined || value === null) continue;
    if (typeof value !== "object" || Array.isArray(value)) {
      throw invalidArgument(`${where}: ${section} must be an object`);
    }
    const fields: Record<string, number> = {};
    for (const name of names) {
      const n = (value as Record<string, unknown>)[name];
      if (n === undefined || n === null) continue;
      if (typeof n !== "number" || !Number.isInteger(n)) {
        throw invalidArgument(`${where}: ${section}.${name} must be an integer, not ${n}`);
      }
      fields[name] = n;
    }
    out[section] = fields;
  }
  if (src.unified !== undefined && src.unified !== null) {
    const unified = src.unified as Record<string, unknown>;
    if (
      typeof unified !== "object" || Array.isArray(unified) ||
      !Object.values(unified).every((v) => typeof v === "string")
    ) {
      throw invalidArgument(`${where}: unified must map file names to strings`);
    }
    out.unified = unified;
  }
  return out as LinuxResources;
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === "string");
}

/**
 * The shim's environment variable (set in containerd's environment) with which the
 * operator lets guests reach the network where their spec alone would not (`1`).
 */
export const GUEST_NETWORK_ENV = "WASMTIME_SHIM_GUEST_NETWORK";

/**
 * Whether a container's wasm guest may reach the network (`wasi:sockets`, outgoing
 * `wasi:http` requests): where its spec gives it a network to use — a namespace to join
 * (a pod's) or the node's own (no network namespace) — or where the operator allowed it
 * ({@linkcode GUEST_NETWORK_ENV}). A spec asking for a namespace of its own (plain `ctr
 * run`) would get an empty one from runc; the shim creates none (its guest runs in the
 * shim's, the node's), so the guest gets no network there unless the operator says so.
 */
export function guestNetworkAllowed(spec: Pick<OciSpec, "network">, operator: boolean): boolean {
  return spec.network !== "new" || operator;
}

/** Parses {@linkcode GUEST_NETWORK_ENV}: `1`/`true` allow, unset, empty, `0`/`false` do not. */
export function parseGuestNetworkEnv(value: string | undefined): boolean {
  const v = (value ?? "").trim().toLowerCase();
  if (v === "" || v === "0" || v === "false") return false;
  if (v === "1" || v === "true") return true;
  throw new Error(`${GUEST_NETWORK_ENV}="${value}" must be 1 or 0 (true or false)`);
}

/** Validates a parsed config.json. `where` names the file in errors. */
export function parseSpec(raw: unknown, where: string): OciSpec {
  if (typeof raw !== "object" || raw === null) {
    throw invalidArgument(`OCI spec ${where} is not a JSON object`);
  }
  const spec = raw as Record<string, unknown>;
  const process = spec.process as Record<string, unknown> | undefined;
  if (typeof process !== "object" || process === null) {
    throw invalidArgument(`OCI spec ${where} has no "process" object`);
  }
  const args = process.args ?? [];
  if (!isStringArray(args)) {
    throw invalidArgument(`OCI spec ${where}: process.args must be strings`);
  }
  if (args.length === 0) {
    throw invalidArgument(`OCI spec ${where}: process.args is empty, nothing to run`);
  }
  const env = process.env ?? [];
  if (!isStringArray(env)) throw invalidArgument(`OCI spec ${where}: process.env must be strings`);
  const cwd = process.cwd ?? "/";
  if (typeof cwd !== "string" || !cwd.startsWith("/")) {
    throw invalidArgument(`OCI spec ${where}: process.cwd must be an absolute path`);
  }
  const root = (spec.root ?? {}) as Record<string, unknown>;
  const annotations = (spec.annotations ?? {}) as Record<string, string>;
  const linux = (spec.linux ?? {}) as Record<string, unknown>;
  const namespaces = Array.isArray(linux.namespaces) ? linux.namespaces : [];
  const net = namespaces.find((n: { type?: string }) => n?.type === "network") as
    | { path?: string }
    | undefined;
  return {
    process: { args, env, cwd, terminal: process.terminal === true },
    root: {
      path: typeof root.path === "string" && root.path !== "" ? root.path : "rootfs",
      readonly: root.readonly === true,
    },
    annotations: typeof annotations === "object" && annotations !== null ? annotations : {},
    netns: net?.path || undefined,
    network: net === undefined ? "host" : net.path ? "join" : "new",
    cgroupsPath: typeof linux.cgroupsPath === "string" ? linux.cgroupsPath : undefined,
    resources: linux.resources === undefined
      ? undefined
      : parseLinuxResources(linux.resources, `OCI spec ${where}: linux.resources`),
    mounts: parseMounts(spec.mounts, where),
    user: parseUser(process.user, where),
    maskedPaths: parsePaths(linux.maskedPaths, `OCI spec ${where}: linux.maskedPaths`),
    readonlyPaths: parsePaths(linux.readonlyPaths, `OCI spec ${where}: linux.readonlyPaths`),
    seccomp: linux.seccomp ?? undefined,
  };
}

/** Largest `errnoRet`: the 16 bits of `SECCOMP_RET_DATA`. */
const MAX_ERRNO_RET = 0xffff;
/** Highest argument index: seccomp sees six arguments. */
const MAX_ARG_INDEX = 5;

/**
 * Validates the spec's `linux.seccomp` for a wasm guest's runner (see
 * `src/sys/seccomp_profile.ts`). `where` names the spec in errors. Undefined when the
 * spec has none.
 *
 * @throws {ShimError} INVALID_ARGUMENT naming the field and why: an unknown action,
 *   architecture, flag or comparison, an argument index over 5, a value that is not a
 *   whole number in 0..2^53, or what the runner cannot do: `SCMP_ACT_NOTIFY` and
 *   `listenerPath` need a seccomp agent listening for the container's calls
 */
export function parseSeccomp(raw: unknown, where: string): SeccompProfile | undefined {
  if (raw === undefined || raw === null) return undefined;
  const at = `OCI spec ${where}: linux.seccomp`;
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw invalidArgument(`${at} is not an object`);
  }
  const src = raw as Record<string, unknown>;
  if (src.listenerPath !== undefined && src.listenerPath !== "") {
    throw invalidArgument(
      `${at}.listenerPath ${
        JSON.stringify(src.listenerPath)
      }: a wasm guest's runner cannot hand its calls to a seccomp agent`,
    );
  }
  const action = (v: unknown, field: string): SeccompAction => {
    if (v === "SCMP_ACT_NOTIFY") {
      throw invalidArgument(
        `${at}.${field}: SCMP_ACT_NOTIFY needs a seccomp agent, which a wasm guest's runner cannot serve`,
      );
    }
    if (!(SECCOMP_ACTIONS as readonly unknown[]).includes(v)) {
      throw invalidArgument(
        `${at}.${field}: unknown action ${JSON.stringify(v)} (known: ${
          SECCOMP_ACTIONS.join(", ")
        })`,
      );
    }
    return v as SeccompAction;
  };
  const whole = (v: unknown, field: string, max: number): number => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > max) {
      throw invalidArgument(
        `${at}.${field}: ${JSON.stringify(v)} is not a whole number in 0..${max}`,
      );
    }
    return v;
  };
  const optional = (v: unknown, field: string) =>
    v === undefined || v === null ? undefined : whole(v, field, MAX_ERRNO_RET);
  const strings = (v: unknown, field: string): string[] => {
    if (v === undefined || v === null) return [];
    if (!isStringArray(v)) throw invalidArgument(`${at}.${field} must be strings`);
    return v;
  };
  const architectures = strings(src.architectures, "architectures");
  for (const a of architectures) {
    if (!SECCOMP_ARCHES.has(a)) {
      throw invalidArgument(`${at}.architectures: unknown architecture ${JSON.stringify(a)}`);
    }
  }
  let flags = 0;
  for (const f of strings(src.flags, "flags")) {
    const bit = SECCOMP_FLAGS[f];
    if (bit === undefined) {
      throw invalidArgument(
        `${at}.flags: ${JSON.stringify(f)} is not one a wasm guest's runner applies (known: ${
          Object.keys(SECCOMP_FLAGS).join(", ")
        })`,
      );
    }
    flags |= bit;
  }
  if (src.syscalls !== undefined && src.syscalls !== null && !Array.isArray(src.syscalls)) {
    throw invalidArgument(`${at}.syscalls is not an array`);
  }
  const syscalls = ((src.syscalls ?? []) as unknown[]).map((entry, i): SeccompRule => {
    const field = `syscalls[${i}]`;
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
      throw invalidArgument(`${at}.${field} is not an object`);
    }
    const rule = entry as Record<string, unknown>;
    const names = strings(rule.names, `${field}.names`);
    if (names.length === 0) throw invalidArgument(`${at}.${field}.names is empty`);
    if (rule.args !== undefined && rule.args !== null && !Array.isArray(rule.args)) {
      throw invalidArgument(`${at}.${field}.args is not an array`);
    }
    const args = ((rule.args ?? []) as unknown[]).map((a, j): SeccompArg => {
      const argField = `${field}.args[${j}]`;
      if (typeof a !== "object" || a === null) {
        throw invalidArgument(`${at}.${argField} is not an object`);
      }
      const arg = a as Record<string, unknown>;
      if (!(SECCOMP_OPS as readonly unknown[]).includes(arg.op)) {
        throw invalidArgument(
          `${at}.${argField}.op: unknown comparison ${JSON.stringify(arg.op)} (known: ${
            SECCOMP_OPS.join(", ")
          })`,
        );
      }
      return {
        index: whole(arg.index, `${argField}.index (seccomp sees six arguments)`, MAX_ARG_INDEX),
        value: whole(arg.value ?? 0, `${argField}.value`, Number.MAX_SAFE_INTEGER),
        valueTwo: whole(arg.valueTwo ?? 0, `${argField}.valueTwo`, Number.MAX_SAFE_INTEGER),
        op: arg.op as SeccompOp,
      };
    });
    return {
      names,
      action: action(rule.action, `${field}.action`),
      errnoRet: optional(rule.errnoRet, `${field}.errnoRet`),
      args,
    };
  });
  return {
    defaultAction: action(src.defaultAction, "defaultAction"),
    defaultErrnoRet: optional(src.defaultErrnoRet, "defaultErrnoRet"),
    architectures,
    flags,
    syscalls,
  };
}

/** An optional list of absolute paths (`linux.maskedPaths`, `linux.readonlyPaths`). */
function parsePaths(value: unknown, what: string): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!isStringArray(value) || value.some((p) => !p.startsWith("/"))) {
    throw invalidArgument(`${what} must be absolute paths`);
  }
  return value;
}

/** Reads and validates `<bundle>/config.json`. */
export async function readSpec(bundle: string): Promise<OciSpec> {
  const path = bundlePath(bundle, BundleFile.CONFIG);
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    throw invalidArgument(`cannot read OCI spec ${path}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`OCI spec ${path} is not valid JSON: ${(err as Error).message}`);
  }
  return parseSpec(raw, path);
}
