// Direct I/O (O_DIRECT, open(2)): a write goes from this process's memory to the disk without a
// copy into the page cache. Here the page cache was the dearest part of writing a backup: 1 GB
// written in requests of 1 MiB and synced every 16 MiB took 0.9-3.6 s of system time buffered and
// 0.1-0.12 s direct (wall 1.3-4.1 s against 0.6-0.7 s). The kernel requires offsets, lengths and
// memory addresses aligned to the device's logical block: a pack's last piece is written padded
// and the pack then cut to its length (DirectWriter), a restored file's bytes after its last whole
// block go through the page cache (DirectWrites). Where the file system refuses it, writes are
// buffered.
import { closeSync, constants, ftruncate } from 'node:fs';
import { writeAllFd, writeAllSync } from './write-all.js';

/** Offsets, lengths and addresses of direct writes are multiples of this (the largest logical block size in use, 4 KiB). */
export const DIRECT_ALIGN = 4096;

/** O_DIRECT, or 0 where the platform has none or BACKUPCTL_DIRECT_IO=0 asks for buffered writes. */
export function directFlag(): number {
  return process.env.BACKUPCTL_DIRECT_IO === '0' ? 0 : (constants.O_DIRECT ?? 0);
}

/**
 * `size` bytes at a page-aligned address: the memory of a WebAssembly.Memory is mapped on its own
 * (node's buffers come from malloc, and JavaScript cannot learn their address to align within one).
 */
export function alignedBuffer(size: number): Buffer {
  const pages = Math.ceil(size / 65536);
  return Buffer.from(new wasm.Memory({ initial: pages, maximum: pages }).buffer, 0, size);
}
/** The one part of WebAssembly used (its types are the DOM library's, not in this project's). */
const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly;

/** `n` rounded up to DIRECT_ALIGN. */
function alignUp(n: number): number {
  return Math.ceil(n / DIRECT_ALIGN) * DIRECT_ALIGN;
}

/** Bytes `from` to `to` of `pieces` taken one after another, as views. */
function sliced(pieces: readonly Uint8Array[], from: number, to: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  for (const p of pieces) {
    const a = Math.max(from - at, 0);
    const b = Math.min(to - at, p.length);
    if (a < b) out.push(p.subarray(a, b));
    at += p.length;
  }
  return out;
}

/**
 * Writes a file opened with O_DIRECT from its start, through two aligned buffers of the same
 * size (a multiple of DIRECT_ALIGN): one is filled while the other is written on the thread pool.
 */
export class DirectWriter {
  private fill = 0;
  private pos = 0;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly fd: number,
    private readonly bufs: [Buffer, Buffer],
  ) {}

  /** `piece` copied in; waits only when a full buffer must wait for the one being written. */
  async add(piece: Uint8Array): Promise<void> {
    let at = 0;
    while (at < piece.length) {
      const n = Math.min(piece.length - at, this.bufs[0].length - this.fill);
      this.bufs[0].set(piece.subarray(at, at + n), this.fill);
      this.fill += n;
      at += n;
      if (this.fill === this.bufs[0].length) await this.send(this.fill);
    }
  }

  /** Everything written, the file cut to its length; that length. */
  async end(): Promise<number> {
    const length = this.pos + this.fill;
    if (this.fill) {
      const padded = alignUp(this.fill);
      this.bufs[0].fill(0, this.fill, padded);
      await this.send(padded);
    }
    await this.writing;
    await new Promise<void>((resolve, reject) => ftruncate(this.fd, length, (err) => (err ? reject(err) : resolve())));
    return length;
  }

  private async send(length: number): Promise<void> {
    await this.writing; // one request at a time, in order; the other buffer is then free
    const buf = this.bufs[0];
    this.writing = writeAllFd(this.fd, [buf.subarray(0, length)], this.pos);
    this.writing.catch(() => {}); // awaited by the next send or by end
    this.pos += length;
    this.fill = 0;
    this.bufs.reverse();
  }
}

/**
 * Direct writes in flight on the thread pool, each from one of a few aligned buffers, while the
 * caller goes on: synchronous, a restore thread waited for the disk 1.16 s of its 1.94 s (1 GB).
 * What is to be done once a file's writes are (mode, time, close) is queued with after().
 */
export class DirectWrites {
  private readonly free: Buffer[];
  private readonly waiting: Array<() => void> = [];
  /** Per descriptor: writes in flight, and what waits for them. */
  private readonly busy = new Map<number, { n: number; then: Array<() => void> }>();
  private failure: unknown = null;

  constructor(count: number, private readonly size: number) {
    this.free = Array.from({ length: count }, () => alignedBuffer(size));
  }

  /**
   * Start writing `pieces` (`length` bytes) at `pos` of `fd` (opened with O_DIRECT), copied into a
   * free buffer (waited for). `pos` is aligned, and so is `length` unless the pieces end the file:
   * then the bytes after their last whole block are written at once through the page cache, by a
   * descriptor of the same file without O_DIRECT that `buffered()` opens (closed here). Padding
   * that block and cutting the file back to its size made ext4 read the block back from the disk
   * (ftruncate: 160 us a file, 0.25 s of a restore thread's 1.4 s). A failure of an earlier write
   * is thrown here, or returned by drain().
   */
  async write(fd: number, pieces: readonly Uint8Array[], length: number, pos: number, buffered: () => number): Promise<void> {
    const whole = length - (length % DIRECT_ALIGN);
    if (whole < length) {
      const tail = buffered();
      try {
        writeAllSync(tail, sliced(pieces, whole, length), pos + whole); // the file has its size before the blocks under it are written
      } finally {
        closeSync(tail);
      }
      if (whole === 0) return;
    }
    let buf: Buffer | undefined;
    for (;;) {
      this.check();
      buf = whole > this.size ? alignedBuffer(whole) : this.free.pop();
      if (buf) break;
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    let at = 0;
    for (const p of sliced(pieces, 0, whole)) {
      buf.set(p, at);
      at += p.length;
    }
    const state = this.busy.get(fd) ?? { n: 0, then: [] };
    state.n++;
    this.busy.set(fd, state);
    writeAllFd(fd, [buf.subarray(0, whole)], pos)
      .catch((err: unknown) => void (this.failure ??= err))
      .finally(() => {
        if (buf.length === this.size) this.free.push(buf);
        this.waiting.shift()?.();
        if (--state.n > 0) return;
        this.busy.delete(fd);
        for (const f of state.then) this.guarded(f);
      });
  }

  /** `f` once the writes into `fd` are done (at once if none is in flight); its failure is reported as a write's. */
  after(fd: number, f: () => void): void {
    const state = this.busy.get(fd);
    if (state) state.then.push(f);
    else this.guarded(f);
  }

  /** Every write done (and what waited for them); the first failure since the last drain, which it forgets. */
  async drain(): Promise<unknown> {
    while (this.busy.size) await new Promise<void>((resolve) => this.after(this.busy.keys().next().value!, resolve));
    const failure = this.failure;
    this.failure = null;
    return failure;
  }

  private guarded(f: () => void): void {
    try {
      f();
    } catch (err) {
      this.failure ??= err;
    }
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }
}
