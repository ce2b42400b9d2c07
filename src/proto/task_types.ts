/**
 * `containerd.v1.types` (`proto/task_types.proto`): the one definition of a
 * process's status, which StateResponse reports and the task's state table
 * (`src/task/state.ts`) moves between.
 *
 * @module
 */

/** `containerd.v1.types.Status`. */
export const Status = {
  UNKNOWN: 0,
  CREATED: 1,
  RUNNING: 2,
  STOPPED: 3,
  PAUSED: 4,
  PAUSING: 5,
} as const;

/** One of the {@linkcode Status} values. */
export type TaskStatus = typeof Status[keyof typeof Status];
