/**
 * A client of containerd's gRPC API (the `-address` socket), for the few calls the
 * shim makes — reading a container's image from the content store — and the ones
 * its tests make to create containers the way containerd 1.6's `ctr` cannot.
 *
 * Transport: `npm:@grpc/grpc-js` (pure JS, over `node:http2`), which runs in Deno
 * 2.9 against a real containerd over a unix socket. Messages: protobufjs, from the
 * `.proto` sources embedded by `scripts/gen_proto.ts` (`proto/containers.proto`,
 * `images.proto`, `content.proto`, `namespaces.proto`, `snapshots.proto`,
 * `descriptor.proto`).
 *
 * Both are imported when {@linkcode ContainerdClient.connect} is first called, never
 * when this module is imported, so that a shim server that never needs containerd's
 * API does not pay for them (~50–90 ms for grpc-js, ~90 ms for protobufjs here).
 *
 * Every call carries the namespace in the `containerd-namespace` metadata header and
 * a deadline. A failed call rejects with an {@linkcode ShimError} holding containerd's
 * own status code (NOT_FOUND stays NOT_FOUND) and naming the method.
 *
 * @example
 * ```ts
 * const client = await ContainerdClient.connect({ address: "/run/containerd/containerd.sock", namespace: "default" });
 * try {
 *   const container = await client.getContainer("c1");
 * } finally {
 *   client.close();
 * }
 * ```
 *
 * @module
 */

import type * as GrpcJs from "@grpc/grpc-js";
import type { Buffer as NodeBuffer } from "node:buffer";
import { type ErrorKind, Kind, ShimError } from "../../errdefs/errors.ts";
import type { Any, Timestamp } from "../../proto/gen/well_known.ts";

/** The gRPC metadata header that carries the containerd namespace of a call. */
export const NAMESPACE_HEADER = "containerd-namespace";
/** `type_url` of an OCI runtime spec (JSON) in `Container.spec`. */
export const SPEC_TYPE_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/** Deadline of a unary call unless the caller gives one. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;
/** Deadline of a whole streamed read unless the caller gives one. */
export const DEFAULT_STREAM_TIMEOUT_MS = 300_000;
/**
 * Largest message accepted from containerd. Its content service sends blobs in
 * chunks of 1 MiB; its other answers are small.
 */
const MAX_RECEIVE_BYTES = 16 << 20;

/** Full gRPC method paths, and the protobuf types of their request and response. */
export const Method = {
  getContainer: {
    path: "/containerd.services.containers.v1.Containers/Get",
    request: "containerd.services.containers.v1.GetContainerRequest",
    response: "containerd.services.containers.v1.GetContainerResponse",
  },
  createContainer: {
    path: "/containerd.services.containers.v1.Containers/Create",
    request: "containerd.services.containers.v1.CreateContainerRequest",
    response: "containerd.services.containers.v1.CreateContainerResponse",
  },
  deleteContainer: {
    path: "/containerd.services.containers.v1.Containers/Delete",
    request: "containerd.services.containers.v1.DeleteContainerRequest",
    response: "google.protobuf.Empty",
  },
  getImage: {
    path: "/containerd.services.images.v1.Images/Get",
    request: "containerd.services.images.v1.GetImageRequest",
    response: "containerd.services.images.v1.GetImageResponse",
  },
  contentInfo: {
    path: "/containerd.services.content.v1.Content/Info",
    request: "containerd.services.content.v1.InfoRequest",
    response: "containerd.services.content.v1.InfoResponse",
  },
  readContent: {
    path: "/containerd.services.content.v1.Content/Read",
    request: "containerd.services.content.v1.ReadContentRequest",
    response: "containerd.services.content.v1.ReadContentResponse",
  },
  listNamespaces: {
    path: "/containerd.services.namespaces.v1.Namespaces/List",
    request: "containerd.services.namespaces.v1.ListNamespacesRequest",
    response: "containerd.services.namespaces.v1.ListNamespacesResponse",
  },
  prepareSnapshot: {
    path: "/containerd.services.snapshots.v1.Snapshots/Prepare",
    request: "containerd.services.snapshots.v1.PrepareSnapshotRequest",
    response: "containerd.services.snapshots.v1.PrepareSnapshotResponse",
  },
  removeSnapshot: {
    path: "/containerd.services.snapshots.v1.Snapshots/Remove",
    request: "containerd.services.snapshots.v1.RemoveSnapshotRequest",
    response: "google.protobuf.Empty",
  },
} as const;

/** One entry of {@linkcode Method}. */
export type MethodInfo = typeof Method[keyof typeof Method];

/** `containerd.types.Descriptor`. */
export interface Descriptor {
  media_type: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

/** `containerd.services.containers.v1.Container`. */
export interface Container {
  id: string;
  labels: Record<string, string>;
  /** Image reference; "" when the container has none. */
  image: string;
  runtime?: { name: string; options?: Any };
  /** OCI spec, see {@linkcode SPEC_TYPE_URL}. */
  spec?: Any;
  snapshotter: string;
  snapshot_key: string;
  created_at?: Timestamp;
  updated_at?: Timestamp;
  extensions: Record<string, Any>;
  sandbox: string;
}

/** `containerd.services.images.v1.Image`. */
export interface Image {
  name: string;
  labels: Record<string, string>;
  target?: Descriptor;
  created_at?: Timestamp;
  updated_at?: Timestamp;
}

/** `containerd.services.content.v1.Info`. */
export interface ContentInfo {
  digest: string;
  size: number;
  labels: Record<string, string>;
}

/** `containerd.types.Mount`. */
export interface Mount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** Where containerd is and which namespace calls act in. */
export interface ContainerdAddress {
  /** containerd's gRPC socket: a path, or `unix://<path>`. */
  address: string;
  /** containerd namespace, e.g. `default` or `k8s.io`. */
  namespace: string;
}

/** Options of {@linkcode ContainerdClient.connect}. */
export interface ConnectOptions extends ContainerdAddress {
  /** Deadline of each unary call; default {@linkcode DEFAULT_CALL_TIMEOUT_MS}. */
  callTimeoutMs?: number;
}

/** The gRPC target of a containerd address (`unix:///run/containerd/containerd.sock`). */
export function grpcTarget(address: string): string {
  if (address.startsWith("unix://")) return address;
  if (address.startsWith("/")) return `unix://${address}`;
  throw new ShimError(
    Kind.INVALID_ARGUMENT,
    `containerd address "${address}" is not a unix socket path (expected /path or unix:///path)`,
  );
}

type Codec = {
  encode(typeName: string, obj: object): Uint8Array;
  decode<T>(typeName: string, bytes: Uint8Array): T;
};

/** What is loaded on first use. */
interface Loaded {
  grpc: typeof GrpcJs;
  codec: Codec;
  Buffer: typeof NodeBuffer;
}

let loading: Promise<Loaded> | undefined;

/** Imports grpc-js, the codec and node:buffer once per process. */
function load(): Promise<Loaded> {
  loading ??= (async () => {
    const [grpc, codec, buffer] = await Promise.all([
      import("@grpc/grpc-js"),
      import("../../proto/messages.ts"),
      import("node:buffer"),
    ]);
    return { grpc, codec, Buffer: buffer.Buffer };
  })();
  loading.catch(() => loading = undefined);
  return loading;
}

/** True for a grpc-js ServiceError (an Error with a numeric status code). */
function isServiceError(err: unknown): err is GrpcJs.ServiceError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === "number";
}

/**
 * The kind of error a gRPC status code from containerd stands for (containerd's
 * `errdefs.FromGRPC`); codes without a kind of their own are UNKNOWN.
 */
const KIND_OF_GRPC_CODE: Readonly<Record<number, ErrorKind>> = {
  1: Kind.CANCELLED,
  3: Kind.INVALID_ARGUMENT,
  4: Kind.DEADLINE_EXCEEDED,
  5: Kind.NOT_FOUND,
  6: Kind.ALREADY_EXISTS,
  8: Kind.RESOURCE_EXHAUSTED,
  9: Kind.FAILED_PRECONDITION,
  12: Kind.UNIMPLEMENTED,
  13: Kind.INTERNAL,
  14: Kind.UNAVAILABLE,
  15: Kind.DATA_LOSS,
};

/** Turns a grpc-js error into a {@linkcode ShimError} that names the call. */
function callError(method: MethodInfo, err: unknown, address: string): ShimError {
  const name = method.path.slice(method.path.lastIndexOf(".") + 1); // "Containers/Get"
  if (isServiceError(err)) {
    const kind = KIND_OF_GRPC_CODE[err.code] ?? Kind.UNKNOWN;
    const details = err.details || err.message;
    const where = kind === Kind.UNAVAILABLE ? ` at ${address}` : "";
    return new ShimError(kind, `containerd ${name}${where}: ${details}`);
  }
  if (err instanceof ShimError) return err;
  return new ShimError(Kind.INTERNAL, `containerd ${name}: ${(err as Error)?.message ?? err}`);
}

/** A connection to containerd's gRPC API in one namespace. */
export class ContainerdClient {
  /** The namespace every call acts in. */
  readonly namespace: string;
  /** containerd's socket, as given. */
  readonly address: string;
  #loaded: Loaded;
  #client: GrpcJs.Client;
  #callTimeoutMs: number;

  private constructor(loaded: Loaded, options: ConnectOptions) {
    this.#loaded = loaded;
    this.namespace = options.namespace;
    this.address = options.address;
    this.#callTimeoutMs = options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    const { grpc } = loaded;
    this.#client = new grpc.Client(
      grpcTarget(options.address),
      grpc.credentials.createInsecure(),
      { "grpc.max_receive_message_length": MAX_RECEIVE_BYTES },
    );
  }

  /**
   * Creates a client (loading grpc-js and protobufjs on first use). The connection
   * itself is made by the first call; a containerd that cannot be reached fails that
   * call with UNAVAILABLE.
   *
   * @throws {ShimError} INVALID_ARGUMENT for an address that is not a unix socket
   */
  static async connect(options: ConnectOptions): Promise<ContainerdClient> {
    grpcTarget(options.address);
    if (options.namespace === "") {
      throw new ShimError(Kind.INVALID_ARGUMENT, "containerd namespace is empty");
    }
    return new ContainerdClient(await load(), options);
  }

  #metadata(namespace = this.namespace): GrpcJs.Metadata {
    const md = new this.#loaded.grpc.Metadata();
    md.set(NAMESPACE_HEADER, namespace);
    return md;
  }

  #serialize(typeName: string): (obj: object) => NodeBuffer {
    const { codec, Buffer } = this.#loaded;
    return (obj) => {
      const bytes = codec.encode(typeName, obj);
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    };
  }

  #deserialize<T>(typeName: string): (bytes: NodeBuffer) => T {
    const { codec } = this.#loaded;
    return (bytes) => codec.decode<T>(typeName, bytes);
  }

  /**
   * Makes one unary call (in the client's namespace unless `namespace` is given).
   *
   * @throws {ShimError} with containerd's status code, naming the method
   */
  unary<T>(
    method: MethodInfo,
    request: object,
    timeoutMs = this.#callTimeoutMs,
    namespace = this.namespace,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      try {
        this.#client.makeUnaryRequest<object, T>(
          method.path,
          this.#serialize(method.request),
          this.#deserialize<T>(method.response),
          request,
          this.#metadata(namespace),
          { deadline: Date.now() + timeoutMs },
          (err, value) => {
            if (err) reject(callError(method, err, this.address));
            else resolve(value as T);
          },
        );
      } catch (err) {
        reject(callError(method, err, this.address));
      }
    });
  }

  /**
   * Makes a server-streaming call and yields its messages. Leaving the loop early
   * cancels the call.
   *
   * @throws {ShimError} with containerd's status code, naming the method
   */
  async *serverStream<T>(
    method: MethodInfo,
    request: object,
    timeoutMs = DEFAULT_STREAM_TIMEOUT_MS,
  ): AsyncGenerator<T> {
    let call: GrpcJs.ClientReadableStream<T>;
    try {
      call = this.#client.makeServerStreamRequest<object, T>(
        method.path,
        this.#serialize(method.request),
        this.#deserialize<T>(method.response),
        request,
        this.#metadata(),
        { deadline: Date.now() + timeoutMs },
      );
    } catch (err) {
      throw callError(method, err, this.address);
    }
    let done = false;
    try {
      for await (const message of call) yield message as T;
      done = true;
    } catch (err) {
      done = true;
      throw callError(method, err, this.address);
    } finally {
      if (!done) call.cancel();
    }
  }

  /** `Containers/Get`. @throws {ShimError} NOT_FOUND for an unknown id */
  async getContainer(id: string): Promise<Container> {
    const res = await this.unary<{ container?: Container }>(Method.getContainer, { id });
    if (!res.container) {
      throw new ShimError(Kind.INTERNAL, `containerd returned no container ${id}`);
    }
    return res.container;
  }

  /** `Containers/Create`. */
  async createContainer(container: Partial<Container> & { id: string }): Promise<Container> {
    const res = await this.unary<{ container?: Container }>(Method.createContainer, { container });
    return res.container ?? (container as Container);
  }

  /** `Containers/Delete`. */
  async deleteContainer(id: string): Promise<void> {
    await this.unary(Method.deleteContainer, { id });
  }

  /** `Images/Get`. @throws {ShimError} NOT_FOUND for an unknown name */
  async getImage(name: string): Promise<Image> {
    const res = await this.unary<{ image?: Image }>(Method.getImage, { name });
    if (!res.image) throw new ShimError(Kind.INTERNAL, `containerd returned no image ${name}`);
    return res.image;
  }

  /**
   * `Content/Info`, in the client's namespace unless `namespace` is given.
   *
   * @throws {ShimError} NOT_FOUND for a blob the store lacks
   */
  async contentInfo(digest: string, namespace = this.namespace): Promise<ContentInfo> {
    const res = await this.unary<{ info?: ContentInfo }>(
      Method.contentInfo,
      { digest },
      this.#callTimeoutMs,
      namespace,
    );
    if (!res.info) throw new ShimError(Kind.INTERNAL, `containerd returned no info for ${digest}`);
    return res.info;
  }

  /**
   * `Content/Read`: yields a blob's bytes as containerd streams them, with the
   * offset of each chunk.
   */
  async *readContent(
    digest: string,
    options: { offset?: number; size?: number; timeoutMs?: number } = {},
  ): AsyncGenerator<{ offset: number; data: Uint8Array }> {
    yield* this.serverStream<{ offset: number; data: Uint8Array }>(
      Method.readContent,
      { digest, offset: options.offset ?? 0, size: options.size ?? 0 },
      options.timeoutMs,
    );
  }

  /** `Namespaces/List`: the names of containerd's namespaces. */
  async listNamespaces(): Promise<string[]> {
    const res = await this.unary<{ namespaces?: { name: string }[] }>(Method.listNamespaces, {});
    return (res.namespaces ?? []).map((n) => n.name);
  }

  /** `Snapshots/Prepare`: an active snapshot `key` on `parent` ("" for an empty one). */
  async prepareSnapshot(snapshotter: string, key: string, parent = ""): Promise<Mount[]> {
    const res = await this.unary<{ mounts: Mount[] }>(
      Method.prepareSnapshot,
      { snapshotter, key, parent },
    );
    return res.mounts;
  }

  /** `Snapshots/Remove`. */
  async removeSnapshot(snapshotter: string, key: string): Promise<void> {
    await this.unary(Method.removeSnapshot, { snapshotter, key });
  }

  /** Closes the connection; calls in flight fail with CANCELLED. */
  close(): void {
    this.#client.close();
  }
}
