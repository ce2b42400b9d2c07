/**
 * A small Kubernetes CRI client (`runtime.v1.RuntimeService`, `runtime.v1.ImageService`)
 * for end-to-end tests: it makes the calls kubelet makes, over containerd's gRPC socket,
 * where containerd's CRI plugin serves them.
 *
 * Transport and codec as in `src/image/containerd/client.ts`: `npm:@grpc/grpc-js` over the
 * unix socket, protobufjs for the messages — parsed at run time from
 * `tests/e2e/cri_api.proto` (a subset of k8s.io/cri-api's `api.proto` with its real field
 * numbers), so the shim never carries it.
 *
 * Messages are plain objects with the proto's snake_case field names. Decoded messages have
 * proto3 defaults filled in, 64-bit integers as numbers and enums as their names
 * (`"SANDBOX_READY"`, `"CONTAINER_EXITED"`); sub-messages absent from the wire are absent.
 *
 * @example
 * ```ts
 * const cri = await CriClient.connect({ address: "/run/containerd/containerd.sock" });
 * try {
 *   const { pod_sandbox_id } = await cri.runPodSandbox(config, "wasmtime");
 * } finally {
 *   cri.close();
 * }
 * ```
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { Buffer } from "node:buffer";
import { grpcTarget } from "../../src/image/containerd/client.ts";

/** Where the CRI subset used by the tests is defined. */
export const CRI_PROTO_PATH: string = new URL("./cri_api.proto", import.meta.url).pathname;
/** Deadline of a call unless the caller gives one. */
export const DEFAULT_CRI_TIMEOUT_MS = 30_000;

/** `runtime.v1.NamespaceMode`. */
export type NamespaceMode = "POD" | "CONTAINER" | "NODE" | "TARGET";
/** `runtime.v1.PodSandboxState`. */
export type PodSandboxState = "SANDBOX_READY" | "SANDBOX_NOTREADY";
/** `runtime.v1.ContainerState`. */
export type ContainerState =
  | "CONTAINER_CREATED"
  | "CONTAINER_RUNNING"
  | "CONTAINER_EXITED"
  | "CONTAINER_UNKNOWN";

/** `runtime.v1.NamespaceOption`. */
export interface NamespaceOption {
  network?: NamespaceMode;
  pid?: NamespaceMode;
  ipc?: NamespaceMode;
  target_id?: string;
}

/** `runtime.v1.PodSandboxMetadata`. */
export interface PodSandboxMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt?: number;
}

/** `runtime.v1.PodSandboxConfig` (the fields the tests use). */
export interface PodSandboxConfig {
  metadata: PodSandboxMetadata;
  hostname?: string;
  /** Absolute directory; containers' `log_path` is relative to it. */
  log_directory?: string;
  dns_config?: { servers?: string[]; searches?: string[]; options?: string[] };
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  linux?: {
    cgroup_parent?: string;
    security_context?: {
      namespace_options?: NamespaceOption;
      run_as_user?: { value: number };
      readonly_rootfs?: boolean;
      privileged?: boolean;
    };
    sysctls?: Record<string, string>;
  };
}

/** `runtime.v1.LinuxContainerResources` (the fields the tests use). */
export interface LinuxContainerResources {
  cpu_period?: number;
  cpu_quota?: number;
  cpu_shares?: number;
  memory_limit_in_bytes?: number;
  oom_score_adj?: number;
}

/** `runtime.v1.Mount` (the fields the tests use): a volume as kubelet passes it. */
export interface CriMount {
  container_path: string;
  host_path: string;
  readonly?: boolean;
  propagation?:
    | "PROPAGATION_PRIVATE"
    | "PROPAGATION_HOST_TO_CONTAINER"
    | "PROPAGATION_BIDIRECTIONAL";
}

/** `runtime.v1.ContainerConfig` (the fields the tests use). */
export interface ContainerConfig {
  metadata: { name: string; attempt?: number };
  image: { image: string; annotations?: Record<string, string> };
  command?: string[];
  args?: string[];
  working_dir?: string;
  envs?: { key: string; value: string }[];
  mounts?: CriMount[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  /** Relative to the pod's `log_directory`. */
  log_path?: string;
  stdin?: boolean;
  tty?: boolean;
  linux?: {
    resources?: LinuxContainerResources;
    security_context?: {
      privileged?: boolean;
      namespace_options?: NamespaceOption;
      run_as_user?: { value: number };
      run_as_group?: { value: number };
      run_as_username?: string;
      supplemental_groups?: number[];
      readonly_rootfs?: boolean;
      no_new_privs?: boolean;
      /** `RuntimeDefault`: the container runtime's default profile (containerd's). */
      seccomp?: {
        profile_type: "RuntimeDefault" | "Unconfined" | "Localhost";
        localhost_ref?: string;
      };
    };
  };
}

/** `runtime.v1.VersionResponse`. */
export interface VersionResponse {
  version: string;
  runtime_name: string;
  runtime_version: string;
  runtime_api_version: string;
}

/** `runtime.v1.PodSandboxStatus`. */
export interface PodSandboxStatus {
  id: string;
  metadata?: PodSandboxMetadata;
  state: PodSandboxState;
  created_at: number;
  network?: { ip: string; additional_ips: { ip: string }[] };
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtime_handler: string;
}

/** `runtime.v1.PodSandboxStatusResponse`. */
export interface PodSandboxStatusResponse {
  status?: PodSandboxStatus;
  /** With `verbose`: `info` holds containerd's JSON (pid, netNamespacePath, runtime, …). */
  info: Record<string, string>;
}

/** `runtime.v1.PodSandbox` (an item of ListPodSandbox). */
export interface PodSandbox {
  id: string;
  metadata?: PodSandboxMetadata;
  state: PodSandboxState;
  created_at: number;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  runtime_handler: string;
}

/** `runtime.v1.Container` (an item of ListContainers). */
export interface Container {
  id: string;
  pod_sandbox_id: string;
  metadata?: { name: string; attempt: number };
  image?: { image: string };
  image_ref: string;
  state: ContainerState;
  created_at: number;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

/** `runtime.v1.ContainerStatus`. */
export interface ContainerStatus {
  id: string;
  metadata?: { name: string; attempt: number };
  state: ContainerState;
  created_at: number;
  started_at: number;
  finished_at: number;
  exit_code: number;
  image?: { image: string };
  image_ref: string;
  reason: string;
  message: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  log_path: string;
}

/** `runtime.v1.ContainerStatusResponse`. */
export interface ContainerStatusResponse {
  status?: ContainerStatus;
  info: Record<string, string>;
}

/** `runtime.v1.UInt64Value`. */
export interface UInt64Value {
  value: number;
}

/** `runtime.v1.ContainerStats`. */
export interface ContainerStats {
  attributes?: { id: string; metadata?: { name: string; attempt: number } };
  cpu?: {
    timestamp: number;
    usage_core_nano_seconds?: UInt64Value;
    usage_nano_cores?: UInt64Value;
  };
  memory?: {
    timestamp: number;
    working_set_bytes?: UInt64Value;
    available_bytes?: UInt64Value;
    usage_bytes?: UInt64Value;
    rss_bytes?: UInt64Value;
    page_faults?: UInt64Value;
    major_page_faults?: UInt64Value;
  };
  writable_layer?: {
    timestamp: number;
    fs_id?: { mountpoint: string };
    used_bytes?: UInt64Value;
    inodes_used?: UInt64Value;
  };
}

/** `runtime.v1.Image` (what ImageStatus tells). */
export interface CriImage {
  id: string;
  repo_tags: string[];
  repo_digests: string[];
  size: number;
}

/** A failed CRI call: the gRPC status code and the method it came from. */
export class CriError extends Error {
  /** gRPC status code (5 NOT_FOUND, 4 DEADLINE_EXCEEDED, 14 UNAVAILABLE, …). */
  readonly code: number;
  /** `RuntimeService/RunPodSandbox` etc. */
  readonly method: string;

  constructor(method: string, code: number, details: string) {
    super(`CRI ${method}: ${grpc.status[code] ?? code}: ${details}`);
    this.name = "CriError";
    this.method = method;
    this.code = code;
  }
}

/** Options of {@linkcode CriClient.connect}. */
export interface CriConnectOptions {
  /** containerd's gRPC socket (a path or `unix://<path>`). */
  address: string;
  /** Deadline of each call unless the call gives its own; default {@linkcode DEFAULT_CRI_TIMEOUT_MS}. */
  timeoutMs?: number;
}

let rootPromise: Promise<protobuf.Root> | undefined;

/** Parses {@linkcode CRI_PROTO_PATH} once per process. */
function loadRoot(): Promise<protobuf.Root> {
  rootPromise ??= (async () => {
    const root = new protobuf.Root();
    protobuf.parse(await Deno.readTextFile(CRI_PROTO_PATH), root, { keepCase: true });
    root.resolveAll();
    return root;
  })();
  rootPromise.catch(() => rootPromise = undefined);
  return rootPromise;
}

const TO_OBJECT: protobuf.IConversionOptions = {
  longs: Number,
  enums: String,
  bytes: Array,
  defaults: true,
  arrays: true,
  objects: true,
};

/** A CRI client over containerd's socket. */
export class CriClient {
  /** containerd's socket, as given. */
  readonly address: string;
  #root: protobuf.Root;
  #client: grpc.Client;
  #timeoutMs: number;

  private constructor(root: protobuf.Root, options: CriConnectOptions) {
    this.#root = root;
    this.address = options.address;
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_CRI_TIMEOUT_MS;
    this.#client = new grpc.Client(grpcTarget(options.address), grpc.credentials.createInsecure());
  }

  /** Creates a client; the connection is made by the first call. */
  static async connect(options: CriConnectOptions): Promise<CriClient> {
    return new CriClient(await loadRoot(), options);
  }

  /**
   * Calls `runtime.v1.<service>/<method>`; the request and response types are looked up
   * in the proto's service definition.
   *
   * @throws {CriError} with the gRPC status code
   */
  call<T>(
    service: "RuntimeService" | "ImageService",
    method: string,
    request: object,
    timeoutMs = this.#timeoutMs,
  ): Promise<T> {
    const name = `${service}/${method}`;
    const rpc = this.#root.lookupService(`runtime.v1.${service}`).methods[method];
    if (!rpc) return Promise.reject(new CriError(name, grpc.status.UNIMPLEMENTED, "not in proto"));
    const reqType = this.#root.lookupType(rpc.requestType);
    const resType = this.#root.lookupType(rpc.responseType);
    return new Promise<T>((resolve, reject) => {
      this.#client.makeUnaryRequest<object, T>(
        `/runtime.v1.${service}/${method}`,
        (obj) => Buffer.from(reqType.encode(reqType.fromObject(obj)).finish()),
        (bytes) => resType.toObject(resType.decode(bytes), TO_OBJECT) as T,
        request,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (e, value) => {
          if (e) reject(new CriError(name, e.code ?? grpc.status.UNKNOWN, e.details || e.message));
          else resolve(value as T);
        },
      );
    });
  }

  /** `Version`. */
  version(timeoutMs?: number): Promise<VersionResponse> {
    return this.call("RuntimeService", "Version", { version: "v1" }, timeoutMs);
  }

  /** `RunPodSandbox`: the sandbox's id. `handler` names the CRI runtime ("" = default). */
  async runPodSandbox(config: PodSandboxConfig, handler: string, timeoutMs?: number) {
    const res = await this.call<{ pod_sandbox_id: string }>(
      "RuntimeService",
      "RunPodSandbox",
      { config, runtime_handler: handler },
      timeoutMs,
    );
    return res.pod_sandbox_id;
  }

  /** `StopPodSandbox`. */
  async stopPodSandbox(id: string, timeoutMs?: number): Promise<void> {
    await this.call("RuntimeService", "StopPodSandbox", { pod_sandbox_id: id }, timeoutMs);
  }

  /** `RemovePodSandbox`. */
  async removePodSandbox(id: string, timeoutMs?: number): Promise<void> {
    await this.call("RuntimeService", "RemovePodSandbox", { pod_sandbox_id: id }, timeoutMs);
  }

  /** `PodSandboxStatus`. */
  podSandboxStatus(id: string, verbose = false): Promise<PodSandboxStatusResponse> {
    return this.call("RuntimeService", "PodSandboxStatus", { pod_sandbox_id: id, verbose });
  }

  /** `ListPodSandbox` (all of them). */
  async listPodSandbox(): Promise<PodSandbox[]> {
    const res = await this.call<{ items: PodSandbox[] }>("RuntimeService", "ListPodSandbox", {});
    return res.items;
  }

  /** `CreateContainer`: the container's id. */
  async createContainer(
    podSandboxId: string,
    config: ContainerConfig,
    sandboxConfig: PodSandboxConfig,
    timeoutMs?: number,
  ): Promise<string> {
    const res = await this.call<{ container_id: string }>("RuntimeService", "CreateContainer", {
      pod_sandbox_id: podSandboxId,
      config,
      sandbox_config: sandboxConfig,
    }, timeoutMs);
    return res.container_id;
  }

  /** `StartContainer`. */
  async startContainer(id: string, timeoutMs?: number): Promise<void> {
    await this.call("RuntimeService", "StartContainer", { container_id: id }, timeoutMs);
  }

  /** `StopContainer`: SIGTERM (or the image's stop signal), SIGKILL after `graceSeconds`. */
  async stopContainer(id: string, graceSeconds: number, timeoutMs?: number): Promise<void> {
    await this.call(
      "RuntimeService",
      "StopContainer",
      { container_id: id, timeout: graceSeconds },
      timeoutMs ?? this.#timeoutMs + graceSeconds * 1000,
    );
  }

  /** `RemoveContainer`. */
  async removeContainer(id: string, timeoutMs?: number): Promise<void> {
    await this.call("RuntimeService", "RemoveContainer", { container_id: id }, timeoutMs);
  }

  /** `ListContainers`, optionally of one pod. */
  async listContainers(podSandboxId = ""): Promise<Container[]> {
    const res = await this.call<{ containers: Container[] }>(
      "RuntimeService",
      "ListContainers",
      podSandboxId ? { filter: { pod_sandbox_id: podSandboxId } } : {},
    );
    return res.containers;
  }

  /** `ContainerStatus`. */
  containerStatus(id: string, verbose = false): Promise<ContainerStatusResponse> {
    return this.call("RuntimeService", "ContainerStatus", { container_id: id, verbose });
  }

  /** `ContainerStats`. */
  async containerStats(id: string): Promise<ContainerStats | undefined> {
    const res = await this.call<{ stats?: ContainerStats }>(
      "RuntimeService",
      "ContainerStats",
      { container_id: id },
    );
    return res.stats;
  }

  /** `ImageService/ImageStatus`: the image, or undefined when the CRI does not know it. */
  async imageStatus(image: string): Promise<CriImage | undefined> {
    const res = await this.call<{ image?: CriImage }>("ImageService", "ImageStatus", {
      image: { image },
    });
    return res.image;
  }

  /** Closes the connection; calls in flight fail with CANCELLED. */
  close(): void {
    this.#client.close();
  }
}
