// Work handed to a worker thread and finished there, counted in shared memory: the thread's
// replies reach the sending thread only when that thread next waits, too late to tell whether the
// worker keeps up. Used to share hashing between two threads (archive/span-hash.ts, restore).
export class Backlog {
  /** Units the thread has finished: given to it, which calls finished() after each. */
  readonly done = new Int32Array(new SharedArrayBuffer(4));
  private sent = 0;

  /** One more unit is on its way to the thread. */
  add(): void {
    this.sent++;
  }

  /** The thread has at most the unit it is working on: it has time for more. */
  keepsUp(): boolean {
    return this.sent - Atomics.load(this.done, 0) < 2;
  }
}

/** In the thread: one more unit finished (`done` is its Backlog's). */
export function finished(done: Int32Array): void {
  Atomics.add(done, 0, 1);
}
