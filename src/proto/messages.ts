/**
 * protobufjs over the .proto texts embedded in `proto_sources.ts` (no file reads at
 * run time): the reference the generated codecs of `gen/` are tested against, and
 * the codec of containerd's gRPC client (`src/image/containerd/client.ts`, loaded
 * only when an image's Wasm layer is fetched, never on the task API's path).
 *
 * Decoded messages are plain objects: snake_case field names, proto3 defaults
 * filled in ("" / 0 / false / [] / empty bytes), sub-messages absent when not
 * on the wire, 64-bit integers as numbers, bytes as `Uint8Array` copies, enums as
 * numbers, maps as plain objects — the shapes of the generated types. Encoding
 * omits default values, as proto3 does.
 *
 * The .proto sources are parsed lazily, on the first encode/decode, so importing
 * this module costs only the protobufjs import.
 *
 * @module
 */

import protobuf from "protobufjs";
import { PROTO_SOURCES } from "./proto_sources.ts";

let root: protobuf.Root | undefined;
const types = new Map<string, protobuf.Type>();

/** Parses the embedded .proto sources into one root (once). */
function loadRoot(): protobuf.Root {
  if (root) return root;
  const parsed = new protobuf.Root();
  for (const [file, text] of Object.entries(PROTO_SOURCES)) {
    try {
      protobuf.parse(text, parsed, { keepCase: true });
    } catch (err) {
      throw new Error(`cannot parse embedded proto/${file}: ${(err as Error).message}`);
    }
  }
  parsed.resolveAll();
  root = parsed;
  return root;
}

/** Looks up a message type by full name, e.g. `containerd.task.v2.StateResponse`. */
function lookup(typeName: string): protobuf.Type {
  let type = types.get(typeName);
  if (type) return type;
  try {
    type = loadRoot().lookupType(typeName);
  } catch {
    throw new Error(`unknown protobuf message type "${typeName}": not defined in proto/*.proto`);
  }
  types.set(typeName, type);
  return type;
}

/** protobufjs scalar type names that are 64-bit. */
const LONG_TYPES = new Set(["int64", "uint64", "sint64", "fixed64", "sfixed64"]);

/** The proto3 default of a scalar or enum field. */
function scalarDefault(field: protobuf.Field): unknown {
  if (field.resolvedType instanceof protobuf.Enum) return 0;
  switch (field.type) {
    case "string":
      return "";
    case "bool":
      return false;
    case "bytes":
      return new Uint8Array(0);
    default:
      return 0;
  }
}

/** Converts one decoded (non-repeated) value to its plain form. */
function plainValue(field: protobuf.Field, value: unknown): unknown {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return toPlain(resolved, value as protobuf.Message);
  if (LONG_TYPES.has(field.type) && typeof value !== "number") {
    const long = value as protobuf.Long;
    return protobuf.util.LongBits.from(long).toNumber(long.unsigned);
  }
  if (field.type === "bytes") return new Uint8Array(value as Uint8Array);
  return value;
}

/** Converts a decoded protobufjs message into a plain object with proto3 defaults. */
function toPlain(type: protobuf.Type, message: protobuf.Message): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const fields = message as unknown as Record<string, unknown>;
  for (const field of type.fieldsArray) {
    const name = field.name;
    const present = Object.hasOwn(fields, name) && fields[name] != null;
    const value = present ? fields[name] : undefined;
    if (field.map) {
      const map: Record<string, unknown> = {};
      for (const [k, v] of Object.entries((value ?? {}) as Record<string, unknown>)) {
        map[k] = plainValue(field, v);
      }
      out[name] = map;
    } else if (field.repeated) {
      out[name] = ((value ?? []) as unknown[]).map((v) => plainValue(field, v));
    } else if (value !== undefined) {
      out[name] = plainValue(field, value);
    } else if (!(field.resolvedType instanceof protobuf.Type)) {
      out[name] = scalarDefault(field);
    }
  }
  return out;
}

/**
 * Encodes a plain object (snake_case fields, as {@linkcode decode} returns) as the
 * message `typeName`. Throws for an unknown type or a value of the wrong shape.
 */
export function encode(typeName: string, obj: object): Uint8Array {
  const type = lookup(typeName);
  const message = type.fromObject(obj as Record<string, unknown>);
  // An explicit Writer (not Writer.create) yields a plain Uint8Array, never a Node Buffer.
  return type.encode(message, new protobuf.Writer()).finish();
}

/**
 * Decodes `bytes` as the message `typeName` into a plain object (see the module
 * doc). Throws for an unknown type or malformed bytes.
 */
export function decode<T = Record<string, unknown>>(typeName: string, bytes: Uint8Array): T {
  const type = lookup(typeName);
  let message: protobuf.Message;
  try {
    message = type.decode(new protobuf.Reader(bytes));
  } catch (err) {
    throw new Error(`cannot decode ${typeName}: ${(err as Error).message}`);
  }
  return toPlain(type, message) as T;
}
