/**
 * The ttrpc envelope: `ttrpc.Request` and `ttrpc.Response` (with its
 * `google.rpc.Status`), the messages every Request and Response frame carries
 * around a service's own payload. Their codecs are generated from
 * `proto/ttrpc.proto` and `proto/status.proto` (`src/proto/gen/`); this module names
 * them as the ttrpc layer speaks of them. Decoded payloads are copies, so a frame's
 * buffer may be reused.
 *
 * @module
 */

import type * as ttrpc from "../proto/gen/ttrpc.ts";
import type * as rpc from "../proto/gen/status.ts";

export {
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
} from "../proto/gen/ttrpc.ts";
export { decodeStatus, encodeStatus } from "../proto/gen/status.ts";

/** `ttrpc.KeyValue`: one metadata entry of a Request (a key may repeat). */
export type KeyValue = ttrpc.KeyValue;

/** `ttrpc.Request`, the data of a Request frame. */
export type TtrpcRequest = ttrpc.Request;

/** `google.rpc.Status`, the error of a failed call (code 0 means OK). */
export type RpcStatus = rpc.Status;

/** `ttrpc.Response`, the data of a Response frame: a status on error, else a payload. */
export type TtrpcResponse = ttrpc.Response;
