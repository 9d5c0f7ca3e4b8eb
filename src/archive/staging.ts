// Writing a restore's staged tree (restore.ts) on a thread of its own (staging-worker.ts): the
// main thread decrypts and parses while this one creates, writes and hashes files. Content is
// copied into batch buffers that travel to the thread and back (transferred, not copied again).
import { Worker } from 'node:worker_threads';
import { corruptError, ioError } from '../errors.js';
import { Backlog } from '../util/backlog.js';
import { hashMismatch } from './records.js';

/**
 * An operation: make a directory, create a file (and hash its content if `hash`), its next
 * `number` bytes of content, close it (after checking that a hashed content's SHA-256 is
 * `sha256`; `name` is the entry's path for the error). Paths are relative to the staging
 * directory, and the thread refuses any that would resolve outside it. Times are seconds as a
 * numeric string (see times.ts).
 */
export type StagingOp =
  | { t: 'dir'; path: string }
  | { t: 'open'; path: string; hash: boolean }
  | number
  | { t: 'close'; mode: number; mtime: string; sha256: Uint8Array | null; name: string };
export interface StagingBatch {
  ops: StagingOp[];
  data: ArrayBuffer;
}
export type StagingResult =
  | { t: 'done' }
  | { t: 'error'; code?: string; message: string; path: string }
  | { t: 'mismatch'; name: string }
  | { t: 'outside'; name: string };
export type StagingReply = { data: ArrayBuffer } & StagingResult;

/** Bytes of content per batch, and batches in flight before the main thread waits. */
const BATCH = 1 << 20;
const IN_FLIGHT = 4;
/** Operations per batch: a batch of many small files goes out before its buffer is full. */
const MAX_OPS = 256;

export class StagingWriter {
  private readonly backlog = new Backlog(); // batches
  private readonly worker: Worker;
  private spare: ArrayBuffer[] = [];
  private data: Buffer = Buffer.from(new ArrayBuffer(BATCH));
  private fill = 0;
  private ops: StagingOp[] = [];
  private inFlight = 0;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;

  /** `root`: the staging directory, the only place the thread creates anything in. */
  constructor(root: string) {
    this.worker = new Worker(new URL('./staging-worker.js', import.meta.url), { workerData: { written: this.backlog.done, root } });
    const settle = () => {
      const w = this.wake;
      this.wake = null;
      w?.();
    };
    this.worker.on('message', (m: StagingReply) => {
      this.inFlight--;
      this.spare.push(m.data);
      if (m.t === 'error') this.failure ??= ioError(Object.assign(new Error(m.message), { code: m.code }), m.path, 'write');
      if (m.t === 'mismatch') this.failure ??= hashMismatch(m.name);
      if (m.t === 'outside') this.failure ??= corruptError(`refusing to stage ${JSON.stringify(m.name)}: it resolves outside the staging directory`);
      settle();
    });
    this.worker.on('error', (err) => {
      this.failure ??= err;
      settle();
    });
    this.worker.on('exit', () => {
      this.failure ??= new Error('the staging thread stopped unexpectedly');
      settle();
    });
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  private async send(): Promise<void> {
    if (this.ops.length === 0) return;
    while (this.inFlight >= IN_FLIGHT) {
      this.check();
      await new Promise<void>((res) => (this.wake = res));
    }
    this.check();
    const data = this.data.buffer as ArrayBuffer;
    this.worker.postMessage({ ops: this.ops, data } satisfies StagingBatch, [data]);
    this.inFlight++;
    this.backlog.add();
    this.ops = [];
    this.fill = 0;
    this.data = Buffer.from(this.spare.pop() ?? new ArrayBuffer(BATCH));
  }

  private async op(op: StagingOp): Promise<void> {
    this.ops.push(op);
    if (this.ops.length >= MAX_OPS) await this.send();
  }

  mkdir(path: string): Promise<void> {
    return this.op({ t: 'dir', path });
  }
  /**
   * Create a file; `hash`: the thread hashes its content and checks it at close. It is asked to
   * when it keeps up (keepsUp), so that both threads stay busy.
   */
  open(path: string, hash: boolean): Promise<void> {
    return this.op({ t: 'open', path, hash });
  }
  /** Does the thread have time to hash the next file too? */
  keepsUp(): boolean {
    return this.backlog.keepsUp();
  }
  /** Close the open file after setting its mode and its times; if it was hashed there, its content must hash to `sha256`. */
  close(mode: number, mtime: string, sha256: Uint8Array | null, name: string): Promise<void> {
    // A copy of its own: a view into Node's buffer pool would be sent with the whole pool.
    return this.op({ t: 'close', mode, mtime, sha256: sha256 && new Uint8Array(sha256), name });
  }

  /** Append `chunk` to the open file (copied: the caller may reuse it). */
  async write(chunk: Uint8Array): Promise<void> {
    for (let off = 0; off < chunk.length; ) {
      if (this.fill === BATCH) await this.send();
      const n = Math.min(chunk.length - off, BATCH - this.fill);
      this.data.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      const last = this.ops[this.ops.length - 1];
      if (typeof last === 'number') this.ops[this.ops.length - 1] = last + n;
      else await this.op(n);
    }
  }

  /** Everything sent is written; throws the first failure. */
  async finish(): Promise<void> {
    await this.send();
    while (this.inFlight > 0 && !this.failure) await new Promise<void>((res) => (this.wake = res));
    this.check();
    await this.stop();
  }

  /** Stop at once (after a failure elsewhere): nothing is being written when this returns. */
  async stop(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}
