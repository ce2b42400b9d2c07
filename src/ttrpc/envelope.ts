/**
 * The ttrpc envelope: `ttrpc.Request` and `ttrpc.Response` (with its
 * `google.rpc.Status`), the messages every Request and Response frame carries
 * around a service's own payload. Written out by hand on the protobuf runtime of
 * `src/proto/wire.ts`, since every call goes through them; checked against
 * protobufjs in `envelope_test.ts`.
 *
 * @module
 */

import {
  type Any,
  decodeAny,
  encodeAny,
  expectWireType,
  ProtoReader,
  ProtoWriter,
  WireType,
} from "../proto/wire.ts";

/** `ttrpc.KeyValue`: one metadata entry of a Request. */
export interface KeyValue {
  /** Metadata key (lower-case by convention). */
  key: string;
  /** One value; repeated keys carry several values. */
  value: string;
}

/** `ttrpc.Request`, the data of a Request frame. */
export interface TtrpcRequest {
  /** Fully-qualified service name, e.g. `containerd.task.v2.Task`. */
  service: string;
  /** Method name, e.g. `Create`. */
  method: string;
  /** The serialized request message (a view into the frame when decoded). */
  payload: Uint8Array;
  /** Caller deadline minus now in nanoseconds; 0 = no deadline. */
  timeout_nano: number;
  /** Request metadata. */
  metadata: KeyValue[];
}

/** `google.rpc.Status`, the error of a failed call. */
export interface RpcStatus {
  /** gRPC status code; 0 means OK. */
  code: number;
  /** Error text. */
  message: string;
  /** Error details (ignored by containerd). */
  details: Any[];
}

/** `ttrpc.Response`, the data of a Response frame. */
export interface TtrpcResponse {
  /** Absent on success. */
  status?: RpcStatus;
  /** The serialized response message; empty on error and for empty messages. */
  payload: Uint8Array;
}

/** Field numbers of `ttrpc.Request`, `ttrpc.KeyValue`, `ttrpc.Response` and `google.rpc.Status`. */
const RequestField = { SERVICE: 1, METHOD: 2, PAYLOAD: 3, TIMEOUT_NANO: 4, METADATA: 5 } as const;
const KeyValueField = { KEY: 1, VALUE: 2 } as const;
const ResponseField = { STATUS: 1, PAYLOAD: 2 } as const;
const StatusField = { CODE: 1, MESSAGE: 2, DETAILS: 3 } as const;

/** Encodes a `ttrpc.Request`. */
export function encodeRequest(req: TtrpcRequest): Uint8Array {
  const w = new ProtoWriter()
    .string(RequestField.SERVICE, req.service)
    .string(RequestField.METHOD, req.method)
    .bytes(RequestField.PAYLOAD, req.payload)
    .int64(RequestField.TIMEOUT_NANO, req.timeout_nano);
  for (const kv of req.metadata) {
    w.message(
      RequestField.METADATA,
      new ProtoWriter().string(KeyValueField.KEY, kv.key).string(KeyValueField.VALUE, kv.value)
        .finish(),
    );
  }
  return w.finish();
}

function decodeKeyValue(bytes: Uint8Array): KeyValue {
  const r = new ProtoReader(bytes);
  const kv: KeyValue = { key: "", value: "" };
  for (let tag = r.next(); tag; tag = r.next()) {
    if (tag.field === KeyValueField.KEY) {
      expectWireType(tag, WireType.LEN, "KeyValue");
      kv.key = r.string();
    } else if (tag.field === KeyValueField.VALUE) {
      expectWireType(tag, WireType.LEN, "KeyValue");
      kv.value = r.string();
    } else r.skip(tag.wireType);
  }
  return kv;
}

/** Decodes a `ttrpc.Request`; `payload` is a view into `bytes`. Throws {@linkcode ProtoDecodeError}. */
export function decodeRequest(bytes: Uint8Array): TtrpcRequest {
  const r = new ProtoReader(bytes);
  const req: TtrpcRequest = {
    service: "",
    method: "",
    payload: new Uint8Array(0),
    timeout_nano: 0,
    metadata: [],
  };
  for (let tag = r.next(); tag; tag = r.next()) {
    switch (tag.field) {
      case RequestField.SERVICE:
        expectWireType(tag, WireType.LEN, "Request");
        req.service = r.string();
        break;
      case RequestField.METHOD:
        expectWireType(tag, WireType.LEN, "Request");
        req.method = r.string();
        break;
      case RequestField.PAYLOAD:
        expectWireType(tag, WireType.LEN, "Request");
        req.payload = r.bytes();
        break;
      case RequestField.TIMEOUT_NANO:
        expectWireType(tag, WireType.VARINT, "Request");
        req.timeout_nano = r.int64();
        break;
      case RequestField.METADATA:
        expectWireType(tag, WireType.LEN, "Request");
        req.metadata.push(decodeKeyValue(r.bytes()));
        break;
      default:
        r.skip(tag.wireType);
    }
  }
  return req;
}

/** Encodes a `google.rpc.Status`. */
export function encodeStatus(status: RpcStatus): Uint8Array {
  const w = new ProtoWriter()
    .int32(StatusField.CODE, status.code)
    .string(StatusField.MESSAGE, status.message);
  for (const detail of status.details) w.message(StatusField.DETAILS, encodeAny(detail));
  return w.finish();
}

/** Decodes a `google.rpc.Status`. */
export function decodeStatus(bytes: Uint8Array): RpcStatus {
  const r = new ProtoReader(bytes);
  const status: RpcStatus = { code: 0, message: "", details: [] };
  for (let tag = r.next(); tag; tag = r.next()) {
    if (tag.field === StatusField.CODE) {
      expectWireType(tag, WireType.VARINT, "Status");
      status.code = r.int32();
    } else if (tag.field === StatusField.MESSAGE) {
      expectWireType(tag, WireType.LEN, "Status");
      status.message = r.string();
    } else if (tag.field === StatusField.DETAILS) {
      expectWireType(tag, WireType.LEN, "Status");
      status.details.push(decodeAny(r.bytes()));
    } else r.skip(tag.wireType);
  }
  return status;
}

/** Encodes a `ttrpc.Response`: status only when given, payload only when non-empty. */
export function encodeResponse(res: TtrpcResponse): Uint8Array {
  return new ProtoWriter()
    .message(ResponseField.STATUS, res.status === undefined ? undefined : encodeStatus(res.status))
    .bytes(ResponseField.PAYLOAD, res.payload)
    .finish();
}

/** Decodes a `ttrpc.Response`; `payload` is a view into `bytes`. Throws {@linkcode ProtoDecodeError}. */
export function decodeResponse(bytes: Uint8Array): TtrpcResponse {
  const r = new ProtoReader(bytes);
  const res: TtrpcResponse = { payload: new Uint8Array(0) };
  for (let tag = r.next(); tag; tag = r.next()) {
    if (tag.field === ResponseField.STATUS) {
      expectWireType(tag, WireType.LEN, "Response");
      res.status = decodeStatus(r.bytes());
    } else if (tag.field === ResponseField.PAYLOAD) {
      expectWireType(tag, WireType.LEN, "Response");
      res.payload = r.bytes();
    } else r.skip(tag.wireType);
  }
  return res;
}
