/**
 * `wasi:sockets@0.2.x` without network access: the interfaces exist (toolchains such as
 * wasi-libc and Rust's std import them whether or not a program uses sockets), and every
 * attempt to create a socket or resolve a name fails with `access-denied`.
 *
 * @module
 */

/** The `error-code` every socket operation fails with. */
const ACCESS_DENIED = "access-denied";

function denied(): never {
  throw ACCESS_DENIED;
}

/** The `network` resource. */
export class Network {}
/** The `resolve-address-stream` resource (never created). */
export class ResolveAddressStream {}
/** The `tcp-socket` resource (never created). */
export class TcpSocket {}
/** The `udp-socket` resource (never created). */
export class UdpSocket {}
/** The `incoming-datagram-stream` resource (never created). */
export class IncomingDatagramStream {}
/** The `outgoing-datagram-stream` resource (never created). */
export class OutgoingDatagramStream {}

/** The `wasi:sockets/*` imports (no state, shared by every instance). */
export const socketsImports: Record<string, Record<string, unknown>> = {
  "wasi:sockets/network": { Network, networkErrorCode: () => undefined },
  "wasi:sockets/instance-network": { instanceNetwork: () => new Network() },
  "wasi:sockets/ip-name-lookup": { ResolveAddressStream, resolveAddresses: denied },
  "wasi:sockets/tcp": { TcpSocket },
  "wasi:sockets/tcp-create-socket": { createTcpSocket: denied },
  "wasi:sockets/udp": { UdpSocket, IncomingDatagramStream, OutgoingDatagramStream },
  "wasi:sockets/udp-create-socket": { createUdpSocket: denied },
};
