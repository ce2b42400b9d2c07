/**
 * The protobuf wire-format runtime: a writer and a reader, with no protobufjs
 * dependency, which the codecs generated into `gen/` (by `scripts/gen_proto.ts`) are
 * written on. Nothing here knows a message.
 *
 * Writers follow proto3 rules: scalar fields holding their default value (0, "",
 * false, empty bytes) are omitted; sub-messages are written whenever present.
 *
 * @module
 */

/** Protobuf wire types (the low three bits of a field tag). */
export const WireType = {
  VARINT: 0,
  FIXED64: 1,
  LEN: 2,
  START_GROUP: 3,
  END_GROUP: 4,
  FIXED32: 5,
} as const;

/** One of the {@linkcode WireType} values. */
export type WireTypeValue = typeof WireType[keyof typeof WireType];

/** Largest value of a `uint32` field. */
const UINT32_MAX = 0xffff_ffff;
/** 2^32, to split and join 64-bit values held in two 32-bit halves. */
const TWO_POW_32 = 0x1_0000_0000;
/** A varint never has more than ten bytes. */
const VARINT_MAX_BYTES = 10;
/** Varint continuation bit. */
const VARINT_MORE = 0x80;
/** Varint payload bits per byte. */
const VARINT_MASK = 0x7f;
/** Field numbers are 29 bits; 0 is invalid. */
const FIELD_NUMBER_MAX = 0x1fff_ffff;
/** Bits of a tag holding the wire type. */
const TAG_TYPE_BITS = 3;
/** Mask of the wire type within a tag. */
const TAG_TYPE_MASK = 0x7;
/** Initial capacity of a {@linkcode ProtoWriter}. */
const WRITER_INITIAL_CAPACITY = 64;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A protobuf message could not be decoded: truncated, bad tag, wrong wire type or bad UTF-8. */
export class ProtoDecodeError extends Error {
  /** Creates the error with a message saying what is wrong and where. */
  constructor(message: string) {
    super(message);
    this.name = "ProtoDecodeError";
  }
}

/** Appends protobuf fields to a growing buffer. Every method returns `this` for chaining. */
export class ProtoWriter {
  #buf: Uint8Array = new Uint8Array(WRITER_INITIAL_CAPACITY);
  #len = 0;

  #reserve(extra: number): void {
    const needed = this.#len + extra;
    if (needed <= this.#buf.length) return;
    let capacity = this.#buf.length * 2;
    while (capacity < needed) capacity *= 2;
    const grown = new Uint8Array(capacity);
    grown.set(this.#buf.subarray(0, this.#len));
    this.#buf = grown;
  }

  #varint(value: number | bigint): void {
    this.#reserve(VARINT_MAX_BYTES);
    if (typeof value === "number" && value >= 0) {
      if (!Number.isSafeInteger(value)) {
        throw new RangeError(`varint value ${value} is not a safe non-negative integer`);
      }
      while (value > VARINT_MASK) {
        this.#buf[this.#len++] = (value % 128) | VARINT_MORE;
        value = Math.floor(value / 128);
      }
      this.#buf[this.#len++] = value;
      return;
    }
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new RangeError(`varint value ${value} is not a safe integer`);
    }
    // Negative numbers and bigints: 64-bit two's complement, always ten bytes when negative.
    let big = BigInt.asUintN(64, BigInt(value));
    while (big > 0x7fn) {
      this.#buf[this.#len++] = Number(big & 0x7fn) | VARINT_MORE;
      big >>= 7n;
    }
    this.#buf[this.#len++] = Number(big);
  }

  #bytesRaw(bytes: Uint8Array): void {
    this.#varint(bytes.length);
    this.#reserve(bytes.length);
    this.#buf.set(bytes, this.#len);
    this.#len += bytes.length;
  }

  /** Writes a field tag. Throws RangeError for a field number outside 1..2^29-1. */
  tag(field: number, wireType: WireTypeValue): this {
    if (!Number.isInteger(field) || field < 1 || field > FIELD_NUMBER_MAX) {
      throw new RangeError(`field number ${field} is outside 1..${FIELD_NUMBER_MAX}`);
    }
    this.#varint(field * (1 << TAG_TYPE_BITS) + wireType);
    return this;
  }

  /** Writes a `uint32` field unless it is 0. Throws RangeError outside 0..2^32-1. */
  uint32(field: number, value: number): this {
    if (checkUint32(field, value) !== 0) this.tag(field, WireType.VARINT).#varint(value);
    return this;
  }

  /** Writes an `int32` field unless it is 0 (negative values take ten bytes, as in Go). */
  int32(field: number, value: number): this {
    if (checkInt32(field, value) !== 0) this.tag(field, WireType.VARINT).#varint(value);
    return this;
  }

  /** Writes an `int64` field unless it is 0. Numbers must be safe integers. */
  int64(field: number, value: number | bigint): this {
    if (value !== 0 && value !== 0n) this.tag(field, WireType.VARINT).#varint(value);
    return this;
  }

  /** Writes a `uint64` field unless it is 0: a safe non-negative number or a bigint up to 2^64-1. */
  uint64(field: number, value: number | bigint): this {
    if (checkUint64(field, value) !== 0 && value !== 0n) {
      this.tag(field, WireType.VARINT).#varint(value);
    }
    return this;
  }

  /** Writes a `bool` field unless it is false. */
  bool(field: number, value: boolean): this {
    if (value) this.tag(field, WireType.VARINT).#varint(1);
    return this;
  }

  /** Writes a `string` field (UTF-8) unless it is empty. */
  string(field: number, value: string): this {
    if (value !== "") this.tag(field, WireType.LEN).#bytesRaw(utf8Encoder.encode(value));
    return this;
  }

  /** Writes a `bytes` field unless it is empty. */
  bytes(field: number, value: Uint8Array): this {
    if (value.length !== 0) this.tag(field, WireType.LEN).#bytesRaw(value);
    return this;
  }

  /** Writes one element of a `repeated string` or a map entry's string: always, even when empty. */
  stringElement(field: number, value: string): this {
    this.tag(field, WireType.LEN).#bytesRaw(utf8Encoder.encode(value));
    return this;
  }

  /** Writes one element of a `repeated bytes` or a map entry's bytes: always, even when empty. */
  bytesElement(field: number, value: Uint8Array): this {
    this.tag(field, WireType.LEN).#bytesRaw(value);
    return this;
  }

  /**
   * Writes a repeated varint field packed (proto3's default), unless it is empty. Each
   * value is checked as the single-value writer of `kind` checks it.
   */
  packed(field: number, kind: PackedKind, values: readonly (number | bigint | boolean)[]): this {
    if (values.length === 0) return this;
    const body = new ProtoWriter();
    for (const value of values) {
      if (kind === "bool") body.#varint(value ? 1 : 0);
      else if (kind === "uint32") body.#varint(checkUint32(field, value as number));
      else if (kind === "int32") body.#varint(checkInt32(field, value as number));
      else if (kind === "uint64") body.#varint(checkUint64(field, value as number | bigint));
      else body.#varint(value as number | bigint);
    }
    return this.message(field, body.finish());
  }

  /** Writes an encoded sub-message; it is written (even when empty) unless `encoded` is undefined. */
  message(field: number, encoded: Uint8Array | undefined): this {
    if (encoded !== undefined) this.tag(field, WireType.LEN).#bytesRaw(encoded);
    return this;
  }

  /** Writes a `fixed32` field unless it is 0. */
  fixed32(field: number, value: number): this {
    if (value === 0) return this;
    this.tag(field, WireType.FIXED32).#reserve(4);
    new DataView(this.#buf.buffer).setUint32(this.#len, value >>> 0, true);
    this.#len += 4;
    return this;
  }

  /** Writes a `fixed64` field unless it is 0. */
  fixed64(field: number, value: bigint): this {
    if (value === 0n) return this;
    this.tag(field, WireType.FIXED64).#reserve(8);
    new DataView(this.#buf.buffer).setBigUint64(this.#len, BigInt.asUintN(64, value), true);
    this.#len += 8;
    return this;
  }

  /** The bytes written so far (a copy sized exactly). */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

/** The scalar kinds a packed repeated field may hold. */
export type PackedKind = "int32" | "uint32" | "int64" | "uint64" | "bool";

/** The largest `uint64`. */
const UINT64_MAX = (1n << 64n) - 1n;

/** `value`, or a RangeError if it does not fit a `uint32`. */
function checkUint32(field: number, value: number): number {
  if (!Number.isInteger(value) || value < 0 || value > UINT32_MAX) {
    throw new RangeError(`uint32 field ${field}: ${value} is outside 0..${UINT32_MAX}`);
  }
  return value;
}

/** `value`, or a RangeError if it does not fit an `int32`. */
function checkInt32(field: number, value: number): number {
  if (!Number.isInteger(value) || value < -0x8000_0000 || value > 0x7fff_ffff) {
    throw new RangeError(`int32 field ${field}: ${value} is outside the int32 range`);
  }
  return value;
}

/** `value`, or a RangeError if it does not fit a `uint64` (numbers must be safe integers). */
function checkUint64(field: number, value: number | bigint): number | bigint {
  const ok = typeof value === "bigint"
    ? value >= 0n && value <= UINT64_MAX
    : Number.isSafeInteger(value) && value >= 0;
  if (!ok) throw new RangeError(`uint64 field ${field}: ${value} is outside 0..2^64-1`);
  return value;
}

/** A field tag read by {@linkcode ProtoReader.next}. */
export interface FieldTag {
  /** Field number (1..2^29-1). */
  field: number;
  /** Wire type of the value that follows. */
  wireType: number;
}

/**
 * Reads protobuf fields from a buffer. Loop with {@linkcode ProtoReader.next}, then
 * read the value with the method matching the field's type or {@linkcode ProtoReader.skip}
 * it. Every malformation throws {@linkcode ProtoDecodeError}.
 */
export class ProtoReader {
  readonly #buf: Uint8Array;
  #pos = 0;
  #lo = 0;
  #hi = 0;

  /** Creates a reader over `bytes` (not copied). */
  constructor(bytes: Uint8Array) {
    this.#buf = bytes;
  }

  /** True when every byte has been read (the end of a packed field's values). */
  done(): boolean {
    return this.#pos >= this.#buf.length;
  }

  /** Reads the next field tag, or returns undefined at the end of the buffer. */
  next(): FieldTag | undefined {
    if (this.#pos >= this.#buf.length) return undefined;
    const at = this.#pos;
    const tag = this.uint32();
    const field = tag >>> TAG_TYPE_BITS;
    const wireType = tag & TAG_TYPE_MASK;
    if (field === 0) throw new ProtoDecodeError(`invalid field number 0 at offset ${at}`);
    if (wireType > WireType.FIXED32) {
      throw new ProtoDecodeError(
        `invalid wire type ${wireType} for field ${field} at offset ${at}`,
      );
    }
    return { field, wireType };
  }

  /** Reads a varint into the two 32-bit halves `#lo`/`#hi`. */
  #varint(): void {
    const start = this.#pos;
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < VARINT_MAX_BYTES; i++) {
      if (this.#pos >= this.#buf.length) {
        throw new ProtoDecodeError(`truncated varint at offset ${start}`);
      }
      const b = this.#buf[this.#pos++];
      const bits = b & VARINT_MASK;
      if (i < 4) lo |= bits << (7 * i);
      else if (i === 4) {
        lo |= bits << 28;
        hi |= bits >>> 4;
      } else hi |= bits << (7 * i - 32);
      if ((b & VARINT_MORE) === 0) {
        this.#lo = lo >>> 0;
        this.#hi = hi >>> 0;
        return;
      }
    }
    throw new ProtoDecodeError(`varint longer than ${VARINT_MAX_BYTES} bytes at offset ${start}`);
  }

  /** Reads a `uint32` (the low 32 bits of a varint). */
  uint32(): number {
    this.#varint();
    return this.#lo;
  }

  /** Reads an `int32`. */
  int32(): number {
    this.#varint();
    return this.#lo | 0;
  }

  /** Reads a `uint64` as a number (exact up to 2^53). */
  uint64(): number {
    this.#varint();
    return this.#hi * TWO_POW_32 + this.#lo;
  }

  /** Reads an `int64` as a number (exact within ±2^53). */
  int64(): number {
    this.#varint();
    if (this.#hi <= 0x7fff_ffff) return this.#hi * TWO_POW_32 + this.#lo;
    return Number(BigInt.asIntN(64, (BigInt(this.#hi) << 32n) | BigInt(this.#lo)));
  }

  /** Reads a `bool`. */
  bool(): boolean {
    this.#varint();
    return this.#lo !== 0 || this.#hi !== 0;
  }

  /** Reads a length-delimited value as a view into the input (not a copy). */
  bytes(): Uint8Array {
    const at = this.#pos;
    const length = this.uint64();
    if (length > this.#buf.length - this.#pos) {
      throw new ProtoDecodeError(
        `length ${length} at offset ${at} runs past the end of the ${this.#buf.length}-byte message`,
      );
    }
    const view = this.#buf.subarray(this.#pos, this.#pos + length);
    this.#pos += length;
    return view;
  }

  /** Reads a `string`; invalid UTF-8 is an error (as in Go's protobuf). */
  string(): string {
    const at = this.#pos;
    const bytes = this.bytes();
    try {
      return utf8Decoder.decode(bytes);
    } catch {
      throw new ProtoDecodeError(`invalid UTF-8 in string at offset ${at}`);
    }
  }

  #fixed(size: number): DataView {
    if (size > this.#buf.length - this.#pos) {
      throw new ProtoDecodeError(`truncated ${size}-byte fixed value at offset ${this.#pos}`);
    }
    const view = new DataView(this.#buf.buffer, this.#buf.byteOffset + this.#pos, size);
    this.#pos += size;
    return view;
  }

  /** Reads a `fixed32`. */
  fixed32(): number {
    return this.#fixed(4).getUint32(0, true);
  }

  /** Reads a `fixed64`. */
  fixed64(): bigint {
    return this.#fixed(8).getBigUint64(0, true);
  }

  /** Skips a value of `wireType` (groups are not supported: proto3 never uses them). */
  skip(wireType: number): void {
    switch (wireType) {
      case WireType.VARINT:
        this.#varint();
        return;
      case WireType.FIXED64:
        this.#fixed(8);
        return;
      case WireType.LEN:
        this.bytes();
        return;
      case WireType.FIXED32:
        this.#fixed(4);
        return;
      default:
        throw new ProtoDecodeError(`cannot skip wire type ${wireType} at offset ${this.#pos}`);
    }
  }
}

/**
 * What a generated encoder accepts for the message type `T` (see `src/proto/gen/`):
 * any field may be left out, and is then its proto3 default (not written);
 * sub-messages likewise, recursively; arrays may be read-only.
 */
export type MessageInit<T> = { [K in keyof T]?: FieldInit<T[K]> };

/** One field's value in a {@linkcode MessageInit}: a scalar, a list, a map or a sub-message. */
export type FieldInit<V> = V extends string | number | bigint | boolean | Uint8Array ? V
  : V extends readonly (infer E)[] ? readonly FieldInit<E>[]
  : V extends object ? MessageInit<V>
  : V;

/** Throws unless a known field arrived with the wire type its declaration implies. */
export function expectWireType(tag: FieldTag, want: WireTypeValue, message: string): void {
  if (tag.wireType !== want) {
    throw new ProtoDecodeError(
      `${message} field ${tag.field} has wire type ${tag.wireType}, want ${want}`,
    );
  }
}
