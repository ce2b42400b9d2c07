/**
 * Timeouts of one length for many concurrent operations (the wasi:http request
 * timeout), on a single timer. A timer per request costs a few microseconds to arm
 * and clear, ~5% of a small request's CPU; with one length the deadlines fall in
 * the order they are set, so a queue and one timer armed for its head serve them all.
 *
 * @module
 */

interface Entry<T> {
  at: number;
  /** Dropped once settled: a cancelled deadline must not keep its promise's reactions alive. */
  resolve: ((value: T) => void) | undefined;
}

/** One pending timeout: its promise resolves when the time has passed, unless cancelled. */
export interface Deadline<T> {
  /** Resolves with the queue's value at the deadline; never rejects. */
  readonly promise: Promise<T>;
  /** Stops the timeout: the promise then never settles. */
  cancel(): void;
}

/** How many settled entries may sit at the front of the queue before it is compacted. */
const COMPACT_AT = 1024;

/** Timeouts of `ms` milliseconds that resolve with `value`. */
export class Deadlines<T> {
  readonly #ms: number;
  readonly #value: T;
  #queue: Entry<T>[] = [];
  #head = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #now: () => number;

  /**
   * @param ms the length of every timeout (> 0)
   * @param value what each deadline's promise resolves with
   * @param now the clock (milliseconds); for tests
   */
  constructor(ms: number, value: T, now: () => number = () => performance.now()) {
    if (!(ms > 0)) throw new RangeError(`a timeout must be longer than 0 ms, not ${ms}`);
    this.#ms = ms;
    this.#value = value;
    this.#now = now;
  }

  /** How many deadlines are pending (not yet passed nor cancelled). */
  get pending(): number {
    let n = 0;
    for (let i = this.#head; i < this.#queue.length; i++) if (this.#queue[i].resolve) n++;
    return n;
  }

  /** Starts a timeout of the queue's length. */
  start(): Deadline<T> {
    let resolve!: (value: T) => void;
    const promise = new Promise<T>((r) => resolve = r);
    const entry: Entry<T> = { at: this.#now() + this.#ms, resolve };
    this.#queue.push(entry);
    if (this.#timer === undefined) this.#arm();
    return {
      promise,
      cancel: () => {
        entry.resolve = undefined;
        // Operations mostly end in the order they started: drop the settled front now,
        // so that the queue stays as long as what is in flight.
        this.#trim();
      },
    };
  }

  /** Cancels every pending deadline and the timer. */
  close(): void {
    for (let i = this.#head; i < this.#queue.length; i++) this.#queue[i].resolve = undefined;
    this.#queue = [];
    this.#head = 0;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Drops the settled entries at the front of the queue. */
  #trim(): void {
    while (this.#head < this.#queue.length && !this.#queue[this.#head].resolve) this.#head++;
    if (this.#head >= this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head >= COMPACT_AT && this.#head * 2 >= this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Arms the timer for the first pending deadline, if any. */
  #arm(): void {
    this.#trim();
    if (this.#head >= this.#queue.length) {
      this.#timer = undefined;
      return;
    }
    const wait = Math.max(0, Math.ceil(this.#queue[this.#head].at - this.#now()));
    this.#timer = setTimeout(() => this.#fire(), wait);
  }

  #fire(): void {
    const now = this.#now();
    while (this.#head < this.#queue.length) {
      const entry = this.#queue[this.#head];
      const resolve = entry.resolve;
      if (resolve) {
        if (entry.at > now) break;
        entry.resolve = undefined;
        resolve(this.#value);
      }
      this.#head++;
    }
    this.#arm();
  }
}
