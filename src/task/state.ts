/**
 * The task lifecycle as an explicit state machine. Status values are
 * `containerd.v1.types.Status` (what State reports); every transition that is not
 * listed is refused with FAILED_PRECONDITION, as containerd expects.
 *
 * ```
 * CREATED --start--> RUNNING --exit--> STOPPED --delete--> (gone)
 *    |                 |  ^
 *    |               pause resume
 *    |                 v  |
 *    |               PAUSED --exit--> STOPPED
 *    +--exit (killed before start)--> STOPPED
 *    +--delete--> (gone)
 * ```
 *
 * @module
 */

import { failedPrecondition } from "../errdefs/errors.ts";
import { Status } from "../proto/gen/task_types.ts";

export { Status };

/** One of the {@linkcode Status} values: `containerd.v1.types.Status`. */
export type TaskStatus = Status;

/** What can happen to a task. */
export type TaskEvent = "start" | "exit" | "pause" | "resume" | "delete";

/** Lower-case status names, as containerd prints them in its errors. */
const NAMES: Record<TaskStatus, string> = {
  0: "unknown",
  1: "created",
  2: "running",
  3: "stopped",
  4: "paused",
  5: "pausing",
};

/** The allowed transitions: from status, on event, to status ("gone" for delete). */
const TRANSITIONS: Record<TaskEvent, Partial<Record<TaskStatus, TaskStatus | "gone">>> = {
  start: { [Status.CREATED]: Status.RUNNING },
  exit: {
    [Status.CREATED]: Status.STOPPED,
    [Status.RUNNING]: Status.STOPPED,
    [Status.PAUSED]: Status.STOPPED,
  },
  pause: { [Status.RUNNING]: Status.PAUSED },
  resume: { [Status.PAUSED]: Status.RUNNING },
  delete: { [Status.CREATED]: "gone", [Status.STOPPED]: "gone" },
};

/** The name of a status ("running"). */
export function statusName(status: TaskStatus): string {
  return NAMES[status];
}

/**
 * The status after `event`, or a FAILED_PRECONDITION error naming the task, the
 * event and the current status.
 */
export function transition(id: string, status: TaskStatus, event: TaskEvent): TaskStatus | "gone" {
  const next = TRANSITIONS[event][status];
  if (next === undefined) {
    throw failedPrecondition(`cannot ${event} task ${id}: it is ${statusName(status)}`);
  }
  return next;
}
