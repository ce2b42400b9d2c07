/**
 * The ttrpc frame codec: a 10-byte big-endian header (data length, stream id,
 * message type, flags) followed by `length` bytes of data.
 *
 * @module
 */

/** Size of a frame header in bytes. */
export const HEADER_LENGTH = 10;

/** Largest data length a frame may carry (4 MiB); larger frames are discarded by receivers. */
export const MESSAGE_LENGTH_MAX: number = 4 << 20;

/** Frame message types. */
export const MessageType = {
  /** Client → server, opens a stream. */
  REQUEST: 1,
  /** Server → client, final message of a stream. */
  RESPONSE: 2,
  /** Either direction, streaming only (ttrpc ≥ 1.2). */
  DATA: 3,
} as const;

/** Frame flags (meaning depends on the message type). */
export const Flag = {
  /** The sender will send nothing more on this stream. */
  REMOTE_CLOSED: 1,
  /** The client will stream Data frames after its Request. */
  REMOTE_OPEN: 2,
  /** The data section is absent and must be ignored. */
  NO_DATA: 4,
} as const;

/** Offsets of the header fields. */
const OFFSET_LENGTH = 0;
const OFFSET_STREAM_ID = 4;
const OFFSET_TYPE = 8;
const OFFSET_FLAGS = 9;

/** Largest stream id (uint32). */
const STREAM_ID_MAX = 0xffff_ffff;
/** Largest value of the one-byte type and flags fields. */
const BYTE_MAX = 0xff;
/**
 * Lengths at or above this have the reserved first header byte set. No ttrpc
 * implementation can produce one (the maximum is 4 MiB), so such a header is
 * garbage (e.g. a peer speaking another protocol) rather than an oversize frame.
 */
const GARBAGE_LENGTH_MIN = 1 << 24;
/**
 * A frame body buffer starts at most this large and doubles as bytes arrive, so that a
 * header alone (10 bytes) cannot make the receiver allocate 4 MiB.
 */
const BODY_BUFFER_INITIAL = 64 * 1024;

/** A complete frame. */
export interface Frame {
  /** Stream id. */
  streamId: number;
  /** Message type ({@linkcode MessageType}, or an unknown value). */
  type: number;
  /** Flags ({@linkcode Flag}). */
  flags: number;
  /** The data (a fresh copy owned by the receiver). */
  data: Uint8Array;
  /** Always false/absent for a complete frame. */
  oversize?: false;
}

/** Marker for a frame whose length exceeds {@linkcode MESSAGE_LENGTH_MAX}; its data is discarded. */
export interface OversizeFrame {
  /** Stream id. */
  streamId: number;
  /** Message type. */
  type: number;
  /** Flags. */
  flags: number;
  /** The announced data length. */
  length: number;
  /** Always true. */
  oversize: true;
}

/** What {@linkcode FrameDecoder.push} yields. */
export type DecodedFrame = Frame | OversizeFrame;

/** The byte stream cannot be ttrpc frames; the connection must be closed. */
export class FrameError extends Error {
  /** Creates the error with a message saying what is wrong. */
  constructor(message: string) {
    super(message);
    this.name = "FrameError";
  }
}

/** Throws RangeError unless `value` is an integer in 0..max. */
function checkRange(what: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(`frame ${what} ${value} is outside 0..${max}`);
  }
}

/**
 * Encodes one frame (header and data in a single buffer, so that one write sends
 * it whole). Throws RangeError for data longer than {@linkcode MESSAGE_LENGTH_MAX}
 * (as the Go sender does) or out-of-range header values.
 */
export function encodeFrame(
  streamId: number,
  type: number,
  flags: number,
  data: Uint8Array = new Uint8Array(0),
): Uint8Array {
  checkRange("stream id", streamId, STREAM_ID_MAX);
  checkRange("type", type, BYTE_MAX);
  checkRange("flags", flags, BYTE_MAX);
  if (data.length > MESSAGE_LENGTH_MAX) {
    throw new RangeError(
      `message length ${data.length} exceed maximum message size of ${MESSAGE_LENGTH_MAX}`,
    );
  }
  const frame = new Uint8Array(HEADER_LENGTH + data.length);
  const view = new DataView(frame.buffer);
  view.setUint32(OFFSET_LENGTH, data.length);
  view.setUint32(OFFSET_STREAM_ID, streamId);
  frame[OFFSET_TYPE] = type;
  frame[OFFSET_FLAGS] = flags;
  frame.set(data, HEADER_LENGTH);
  return frame;
}

/**
 * Incremental frame decoder: {@linkcode FrameDecoder.push} bytes as they arrive
 * and get back every frame they complete. Handles headers and bodies split
 * across chunks and many frames per chunk. Oversize frames yield an
 * {@linkcode OversizeFrame} marker as soon as their header is complete, and
 * their body is skipped as it streams in, never buffered. A garbage header
 * throws {@linkcode FrameError}, and so does every later push.
 */
export class FrameDecoder {
  readonly #header = new Uint8Array(HEADER_LENGTH);
  readonly #headerView = new DataView(this.#header.buffer);
  #headerFill = 0;
  #body: Uint8Array | undefined;
  #bodyLength = 0;
  #bodyFill = 0;
  #streamId = 0;
  #type = 0;
  #flags = 0;
  #discard = 0;
  #error: FrameError | undefined;

  /** Bytes of incomplete frames held (header bytes plus body bytes so far). */
  get buffered(): number {
    return this.#headerFill + this.#bodyFill;
  }

  /** Bytes of an oversize frame still to be skipped. */
  get discarding(): number {
    return this.#discard;
  }

  /** Feeds `chunk` (not retained) and returns the frames it completes, in order. */
  push(chunk: Uint8Array): DecodedFrame[] {
    if (this.#error) throw this.#error;
    const frames: DecodedFrame[] = [];
    let pos = 0;
    while (pos < chunk.length) {
      if (this.#discard > 0) {
        const skip = Math.min(this.#discard, chunk.length - pos);
        this.#discard -= skip;
        pos += skip;
      } else if (this.#body !== undefined) {
        const take = Math.min(this.#bodyLength - this.#bodyFill, chunk.length - pos);
        if (this.#bodyFill + take > this.#body.length) this.#grow(this.#bodyFill + take);
        this.#body.set(chunk.subarray(pos, pos + take), this.#bodyFill);
        this.#bodyFill += take;
        pos += take;
        if (this.#bodyFill === this.#bodyLength) frames.push(this.#completeBody());
      } else {
        const take = Math.min(HEADER_LENGTH - this.#headerFill, chunk.length - pos);
        this.#header.set(chunk.subarray(pos, pos + take), this.#headerFill);
        this.#headerFill += take;
        pos += take;
        if (this.#headerFill === HEADER_LENGTH) {
          const frame = this.#completeHeader();
          if (frame) frames.push(frame);
        }
      }
    }
    return frames;
  }

  /** Parses a complete header; returns a frame when no body follows (empty or oversize). */
  #completeHeader(): DecodedFrame | undefined {
    this.#headerFill = 0;
    const length = this.#headerView.getUint32(OFFSET_LENGTH);
    this.#streamId = this.#headerView.getUint32(OFFSET_STREAM_ID);
    this.#type = this.#header[OFFSET_TYPE];
    this.#flags = this.#header[OFFSET_FLAGS];
    if (length >= GARBAGE_LENGTH_MIN) {
      this.#error = new FrameError(
        `invalid frame header: length ${length} has the reserved first byte set ` +
          `(maximum message size is ${MESSAGE_LENGTH_MAX}); not a ttrpc peer?`,
      );
      throw this.#error;
    }
    const header = { streamId: this.#streamId, type: this.#type, flags: this.#flags };
    if (length > MESSAGE_LENGTH_MAX) {
      this.#discard = length;
      return { ...header, length, oversize: true };
    }
    if (length === 0) return { ...header, data: new Uint8Array(0) };
    this.#body = new Uint8Array(Math.min(length, BODY_BUFFER_INITIAL));
    this.#bodyLength = length;
    this.#bodyFill = 0;
    return undefined;
  }

  /** Grows the body buffer to hold at least `needed` bytes (at most the frame's length). */
  #grow(needed: number): void {
    const size = Math.min(this.#bodyLength, Math.max(needed, this.#body!.length * 2));
    const body = new Uint8Array(size);
    body.set(this.#body!.subarray(0, this.#bodyFill));
    this.#body = body;
  }

  #completeBody(): Frame {
    const data = this.#body!;
    this.#body = undefined;
    this.#bodyFill = 0;
    return { streamId: this.#streamId, type: this.#type, flags: this.#flags, data };
  }
}
