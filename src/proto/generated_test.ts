/**
 * The generated codecs (`gen/`) against protobufjs, the reference: every message of
 * `proto/`, filled in every field, encodes to the same bytes and decodes to the same
 * object, both ways; empty messages too. The samples are built from the parsed
 * .proto files, so a new message or field is covered without editing this test.
 */
import assert from "node:assert/strict";
import {
  allMessages,
  type FieldDecl,
  type MessageDecl,
  type ProtoFile,
  resolveFiles,
} from "../../scripts/gen_proto.ts";
import { decode, encode } from "./messages.ts";
import { PROTO_SOURCES } from "./proto_sources.ts";

type Codec = {
  encode(message: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
};

const files = resolveFiles(new Map(Object.entries(PROTO_SOURCES)));

/** The generated encoder and decoder of `message`. */
async function codecOf(file: ProtoFile, message: MessageDecl): Promise<Codec> {
  const mod = await import(`./gen/${file.name.replace(/\.proto$/, ".ts")}`);
  const codec = {
    encode: mod[`encode${message.tsName}`],
    decode: mod[`decode${message.tsName}`],
  };
  assert.equal(typeof codec.encode, "function", `encode${message.tsName}`);
  assert.equal(typeof codec.decode, "function", `decode${message.tsName}`);
  return codec;
}

/** A value of `field` other than its default, varied by `n`. */
function sampleValue(field: FieldDecl, n: number, depth: number): unknown {
  const type = field.type!;
  if (type.kind === "message") return sample(type.message, n, depth + 1);
  if (type.kind === "enum") return type.enum.values.at(-1)!.number;
  switch (type.scalar) {
    case "string":
      return `${field.name}-${n} ✓`;
    case "bytes":
      return new Uint8Array([n, 0, 255]);
    case "bool":
      return true;
    case "int32":
      return -1 - n; // negative: ten bytes on the wire
    case "uint32":
      return 0xffff_ffff - n;
    case "int64":
      return -(2 ** 40) - n;
    case "uint64":
      return 2 ** 45 + n;
  }
}

/** A message with every field set (lists and maps with two entries, one of them empty-ish). */
function sample(message: MessageDecl, n = 1, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (depth > 3) return out;
  for (const field of message.fields) {
    const k = n * 100 + field.number;
    if (field.mapKey !== undefined) {
      out[field.name] = {
        [`k${k}`]: sampleValue(field, k, depth),
        "": sampleValue(field, k + 1, depth),
      };
    } else if (field.repeated) {
      const second = field.type!.kind === "scalar" && field.type!.scalar === "string"
        ? "" // an empty element is still written
        : sampleValue(field, k + 1, depth);
      out[field.name] = [sampleValue(field, k, depth), second];
    } else out[field.name] = sampleValue(field, k, depth);
  }
  return out;
}

for (const file of files) {
  for (const message of allMessages(file)) {
    Deno.test(`gen/${file.name.replace(/\.proto$/, ".ts")}: ${message.fullName} matches protobufjs`, async () => {
      const ours = await codecOf(file, message);
      const filled = sample(message);
      const reference = encode(message.fullName, filled);
      // Same bytes (protobufjs' encoding of non-default values is canonical).
      assert.deepEqual(ours.encode(filled), reference);
      // Each decodes the other's bytes to the same object.
      assert.deepEqual(ours.decode(reference), decode(message.fullName, reference));
      assert.deepEqual(decode(message.fullName, ours.encode(filled)), ours.decode(reference));
      // Decoding and encoding again gives the bytes back.
      assert.deepEqual(ours.encode(ours.decode(reference)), reference);
      // Nothing set: no bytes, every default filled the same way.
      assert.deepEqual(ours.encode({}), encode(message.fullName, {}));
      assert.deepEqual(ours.decode(new Uint8Array(0)), decode(message.fullName, new Uint8Array(0)));
      // Unknown fields (varint, fixed32, fixed64, length-delimited) are skipped.
      const unknown = new Uint8Array([
        ...reference,
        ...[0xf8, 0x3e, 0x01], // field 999, varint
        ...[0xfd, 0x3e, 1, 2, 3, 4], // fixed32
        ...[0xf9, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8], // fixed64
        ...[0xfa, 0x3e, 0x02, 0x61, 0x62], // length-delimited
      ]);
      assert.deepEqual(ours.decode(unknown), decode(message.fullName, reference));
    });
  }
}
