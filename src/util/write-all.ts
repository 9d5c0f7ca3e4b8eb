// Writing all of a list of buffers, continuing after partial writes: a filling disk (or the
// file-size limit) takes part of a request and fails only the next one, so a single writev
// taken as complete would leave a file cut short behind a success.
import { writev, writevSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';

/** Buffers per writev call (under IOV_MAX, 1024 on Linux). */
const IOV_BATCH = 512;

type Writev = (bufs: NodeJS.ArrayBufferView[], pos: number) => Promise<number>;

async function writeAllWith(write: Writev, bufs: Uint8Array[], pos: number): Promise<void> {
  while (bufs.length) {
    const n = await write((bufs.length > IOV_BATCH ? bufs.slice(0, IOV_BATCH) : bufs) as NodeJS.ArrayBufferView[], pos);
    pos += n;
    consume(bufs, n);
  }
}

/** Write all of `bufs` at `pos`. Empties `bufs`. */
export function writeAll(fh: FileHandle, bufs: Uint8Array[], pos: number): Promise<void> {
  return writeAllWith(async (b, p) => (await fh.writev(b, p)).bytesWritten, bufs, pos);
}

/** The same with a descriptor (on a worker thread, where a FileHandle cannot be had). */
export function writeAllFd(fd: number, bufs: Uint8Array[], pos: number): Promise<void> {
  return writeAllWith((b, p) => new Promise((resolve, reject) => writev(fd, b, p, (err, n) => (err ? reject(err) : resolve(n)))), bufs, pos);
}

/** The same with a descriptor, synchronously (on a worker thread); the bytes written. Empties `bufs`. */
export function writeAllSync(fd: number, bufs: Uint8Array[], pos: number): number {
  const start = pos;
  while (bufs.length) {
    const n = writevSync(fd, (bufs.length > IOV_BATCH ? bufs.slice(0, IOV_BATCH) : bufs) as NodeJS.ArrayBufferView[], pos);
    pos += n;
    consume(bufs, n);
  }
  return pos - start;
}

/** Drop the first `n` bytes of `bufs`. */
function consume(bufs: Uint8Array[], n: number): void {
  while (bufs.length && n >= bufs[0]!.length) n -= bufs.shift()!.length;
  if (n) bufs[0] = bufs[0]!.subarray(n);
}
