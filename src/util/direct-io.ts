// Direct I/O (O_DIRECT, open(2)): a write goes from this process's memory to the disk without a
// copy into the page cache. Here the page cache was the dearest part of writing a backup: 1 GB
// written in requests of 1 MiB and synced every 16 MiB took 0.9-3.6 s of system time buffered and
// 0.1-0.12 s direct (wall 1.3-4.1 s against 0.6-0.7 s). The kernel requires offsets, lengths and
// memory addresses aligned to the device's logical block; a file's last piece is written padded
// and the file then cut to its length. Where the file system refuses it, writes are buffered.
import { constants, ftruncate, ftruncateSync } from 'node:fs';
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
export function alignUp(n: number): number {
  return Math.ceil(n / DIRECT_ALIGN) * DIRECT_ALIGN;
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
 * Write `pieces` (`length` bytes in all) at `pos` of a file opened with O_DIRECT, synchronously,
 * through `scratch` (aligned, at least alignUp(length) bytes); `pos` is aligned, and so is
 * `length` unless this is the end of the file (`fileSize`): then the last block is written padded
 * and the file cut to its size.
 */
export function writeDirectSync(fd: number, pieces: readonly Uint8Array[], length: number, pos: number, fileSize: number, scratch: Buffer): void {
  let at = 0;
  for (const p of pieces) at += Buffer.from(p.buffer, p.byteOffset, p.byteLength).copy(scratch, at);
  const padded = alignUp(length);
  scratch.fill(0, length, padded);
  writeAllSync(fd, [scratch.subarray(0, padded)], pos);
  if (padded !== length) ftruncateSync(fd, fileSize);
}
