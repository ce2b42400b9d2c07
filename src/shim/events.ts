/**
 * Publishing task events to containerd: the server is a ttrpc *client* of
 * containerd's ttrpc socket (`TTRPC_ADDRESS`) and calls
 * `containerd.services.events.ttrpc.v1.Events/Forward` for each event, one at a
 * time and in order, so that TaskStart always reaches containerd before TaskExit.
 *
 * @module
 */

import { TtrpcClient } from "../ttrpc/client.ts";
import * as events from "../proto/gen/events.ts";
import { encodeForwardRequest } from "../proto/gen/events_service.ts";
import type { Logger } from "./log.ts";
import { toTimestamp } from "../task/service.ts";

/** ttrpc service and method for forwarding events. */
export const EVENTS_SERVICE = "containerd.services.events.ttrpc.v1.Events";
/** Forward method name. */
export const FORWARD_METHOD = "Forward";
/** Metadata key that carries the namespace on ttrpc requests to containerd. */
export const NAMESPACE_METADATA = "containerd-namespace-ttrpc";
/** Per-call timeout, as the reference publisher uses. */
export const FORWARD_TIMEOUT_MS = 5000;
/** Attempts per event before it is dropped (and logged). */
export const MAX_ATTEMPTS = 5;

/** A generated event encoder, taking the event as the task service publishes it. */
type EventEncoder = (event: Record<string, unknown>) => Uint8Array;

/** The encoder of each event type the task service publishes, by full name. */
const EVENT_ENCODERS: Readonly<Record<string, EventEncoder>> = {
  "containerd.events.TaskCreate": events.encodeTaskCreate,
  "containerd.events.TaskStart": events.encodeTaskStart,
  "containerd.events.TaskExit": events.encodeTaskExit,
  "containerd.events.TaskDelete": events.encodeTaskDelete,
  "containerd.events.TaskPaused": events.encodeTaskPaused,
  "containerd.events.TaskResumed": events.encodeTaskResumed,
  "containerd.events.TaskOOM": events.encodeTaskOOM,
};

/** `event` encoded as `typeName`; an event type without an encoder is a bug, named. */
function encodeEvent(typeName: string, event: Record<string, unknown>): Uint8Array {
  const encode = EVENT_ENCODERS[typeName];
  if (encode === undefined) throw new Error(`no encoder for event type ${typeName}`);
  return encode(event);
}

interface Pending {
  topic: string;
  typeName: string;
  event: Record<string, unknown>;
  at: Date;
}

/** An ordered, retrying event publisher. */
export class EventPublisher {
  #address: string;
  #namespace: string;
  #log: Logger;
  #queue: Pending[] = [];
  #client: TtrpcClient | undefined;
  #running: Promise<void> | undefined;

  /**
   * @param address containerd's ttrpc socket path ("" disables publishing)
   * @param namespace the containerd namespace events belong to
   */
  constructor(address: string, namespace: string, log: Logger) {
    this.#address = address.replace(/^unix:\/\//, "");
    this.#namespace = namespace;
    this.#log = log;
  }

  /** Queues an event; it is sent after every event queued before it. */
  publish(topic: string, typeName: string, event: Record<string, unknown>): void {
    if (this.#address === "") return;
    this.#queue.push({ topic, typeName, event, at: new Date() });
    this.#running ??= this.#drain().finally(() => this.#running = undefined);
  }

  /** Resolves when every queued event has been sent or dropped. */
  async flush(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** Closes the connection to containerd. */
  close(): void {
    this.#client?.close();
    this.#client = undefined;
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const item = this.#queue[0];
      const payload = encodeForwardRequest({
        envelope: {
          timestamp: toTimestamp(item.at),
          namespace: this.#namespace,
          topic: item.topic,
          event: { type_url: item.typeName, value: encodeEvent(item.typeName, item.event) },
        },
      });
      for (let attempt = 1;; attempt++) {
        try {
          this.#client ??= await TtrpcClient.connect(this.#address);
          await this.#client.call(EVENTS_SERVICE, FORWARD_METHOD, payload, {
            timeoutMs: FORWARD_TIMEOUT_MS,
            metadata: { [NAMESPACE_METADATA]: this.#namespace },
          });
          break;
        } catch (err) {
          this.close();
          const msg = `publishing ${item.topic} (attempt ${attempt}/${MAX_ATTEMPTS}): ${
            (err as Error).message
          }`;
          if (attempt >= MAX_ATTEMPTS) {
            this.#log.error(`${msg}; event dropped`);
            break;
          }
          this.#log.warn(msg);
          await new Promise((r) => setTimeout(r, 100 * attempt));
        }
      }
      this.#queue.shift();
    }
  }
}
