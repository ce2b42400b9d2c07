/**
 * Reading the OCI runtime spec (`<bundle>/config.json`): only the parts the shim
 * uses, validated so that a bad spec fails Create with a message naming the field.
 *
 * @module
 */

import { invalidArgument } from "../protocol/status.ts";

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
  /** `linux.cgroupsPath`, if any. */
  cgroupsPath?: string;
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((s) => typeof s === "string");
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
    cgroupsPath: typeof linux.cgroupsPath === "string" ? linux.cgroupsPath : undefined,
  };
}

/** Reads and validates `<bundle>/config.json`. */
export async function readSpec(bundle: string): Promise<OciSpec> {
  const path = `${bundle}/config.json`;
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
