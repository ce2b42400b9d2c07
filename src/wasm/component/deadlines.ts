/**
 * Timeouts of one length for many concurrent operations (the wasi:http request
 * timeout), on a single timer. A timer per request costs a few microseconds to arm
 * and clear, ~5% of a small request's CPU; with one length the deadlines fall in
 * the order they are set, so a queue and one timer armed for its head serve them all.
 * A deadline is one small object that calls its target back (no promise, no closure):
 * a request that ends in time leaves nothing else behind.
 *
 * @module
 */

/** What a deadline calls when its time has passed. */
export interface Expiring {
  /** The time has passed (called at most once, and never after `cancel`). */
  expire(): void;
}

/** One pending timeout. */
export class Deadline {
  /** When it falls (the queue's clock). @internal */
  readonly at: number;
  /** Dropped once settled: a cancelled deadline must not keep its target alive. @internal */
  target: Expiring | undefined;
  #queue: Deadlines;

  /** @internal */
  constructor(queue: Deadlines, at: number, target: Expiring) {
    this.#queue = queue;
    this.at = at;
    this.target = target;
  }

  /** Stops the timeout: its target is then never called. */
  cancel(): void {
    if (this.target === undefined) return;
    this.target = undefined;
    this.#queue.cancelled();
  }
}

/** How many settled entries may sit at the front of the queue before it is compacted. */
const COMPACT_AT = 1024;

/** Timeouts of `ms` milliseconds. */
export class Deadlines {
  readonly #ms: number;
  /** Pending deadlines are `#queue[#head..#tail)`; the slots around them are empty. */
  #queue: (Deadline | undefined)[] = [];
  #head = 0;
  #tail = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #now: () => number;
  #fire = () => this.#expire();

  /**
   * @param ms the length of every timeout (> 0)
   * @param now the clock (milliseconds); for tests
   */
  constructor(ms: number, now: () => number = () => performance.now()) {
    if (!(ms > 0)) throw new RangeError(`a timeout must be longer than 0 ms, not ${ms}`);
    this.#ms = ms;
    this.#now = now;
  }

  /** How many deadlines are pending (not yet passed nor cancelled). */
  get pending(): number {
    let n = 0;
    for (let i = this.#head; i < this.#tail; i++) if (this.#queue[i]!.target) n++;
    return n;
  }

  /** Starts a timeout of the queue's length that calls `target.expire()` when it passes. */
  start(target: Expiring): Deadline {
    const deadline = new Deadline(this, this.#now() + this.#ms, target);
    this.#queue[this.#tail++] = deadline;
    if (this.#timer === undefined) this.#arm();
    return deadline;
  }

  /**
   * A deadline was cancelled. Operations mostly end in the order they started: the
   * settled front goes now, so that the queue stays as long as what is in flight.
   * @internal
   */
  cancelled(): void {
    this.#trim();
  }

  /** Cancels every pending deadline and the timer. */
  close(): void {
    for (let i = this.#head; i < this.#tail; i++) this.#queue[i]!.target = undefined;
    this.#queue = [];
    this.#head = 0;
    this.#tail = 0;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Drops the settled entries at the front of the queue. */
  #trim(): void {
    const queue = this.#queue;
    while (this.#head < this.#tail && !queue[this.#head]!.target) queue[this.#head++] = undefined;
    if (this.#head >= this.#tail) {
      // Emptied: the array keeps its room for the next deadlines.
      this.#head = 0;
      this.#tail = 0;
    } else if (this.#head >= COMPACT_AT && this.#head * 2 >= this.#tail) {
      this.#queue = queue.slice(this.#head, this.#tail);
      this.#tail -= this.#head;
      this.#head = 0;
    }
  }

  /** Arms the timer for the first pending deadline, if any. */
  #arm(): void {
    this.#trim();
    if (this.#head >= this.#tail) {
      this.#timer = undefined;
      return;
    }
    const wait = Math.max(0, Math.ceil(this.#queue[this.#head]!.at - this.#now()));
    this.#timer = setTimeout(this.#fire, wait);
  }

  #expire(): void {
    const now = this.#now();
    const queue = this.#queue;
    const due: Expiring[] = [];
    while (this.#head < this.#tail) {
      const deadline = queue[this.#head]!;
      const target = deadline.target;
      if (target) {
        if (deadline.at > now) break;
        deadline.target = undefined;
        due.push(target);
      }
      queue[this.#head++] = undefined;
    }
    this.#arm();
    // Called once the queue is consistent: a target may start or cancel deadlines.
    for (const target of due) target.expire();
  }
}
