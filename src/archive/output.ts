// Where an archive is written: a file (temporary name in the target directory, fsync, rename —
// so an interrupted run never leaves a file under the final name) or stdout. Writes are
// queued with a bound on bytes in flight so reading, sealing and writing overlap.
import { open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { Worker } from 'node:worker_threads';
import { dirname } from 'node:path';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { Backlog } from '../util/backlog.js';
import { publishNew, removeLeftoverTemps, requireOutputDir, syncDir, tempNameFor } from '../util/fsutil.js';
import { writeAll } from '../util/write-all.js';
import { DataOutput } from '../util/stdout-data.js';
import { freeBuffers, inlineSegments, type SegmentOutput } from './stream.js';
import { TAG_LEN } from './format.js';

export interface Sink {
  write(buf: Buffer): Promise<void>;
  /** Flush, sync and move into place. */
  commit(): Promise<void>;
  /** Remove any partial output. Safe to call more than once. */
  abort(): Promise<void>;
  readonly bytesWritten: number;
  /** The sealed payload after what was written: segments sealed with `key` (which is zeroed). */
  segments(key: Buffer, segmentSize: number): SegmentOutput;
}

/** Bytes queued for writing before the producer waits. */
const MAX_QUEUED = 4 << 20;
/**
 * A background fdatasync is started every SYNC_EVERY bytes, so the disk writes the archive while
 * it is produced and the fsync before the rename only waits for the last part (a single fsync
 * at the end waited about 1.5 s per GB here, with nothing else to do).
 */
const SYNC_EVERY = 64 << 20;

/** Segment buffers in use at once when sealing on the worker: filling, held back, in flight. */
const SEAL_BUFFERS = 4;

/** What seal-worker.ts reports per segment, or a failure to write. */
export type SealReply = { t: 'sealed'; index: number; buf: ArrayBuffer; bytes: number } | { t: 'error'; code?: string; message: string };

/**
 * Writes are queued and issued as one writev at a time, of everything queued meanwhile: a few
 * large requests instead of one per segment, so the thread pool stays free for the reads that
 * feed the archive (its queue is first come, first served).
 */
class FileSink implements Sink {
  bytesWritten = 0;
  private queue: Buffer[] = [];
  private queued = 0;
  private writing: Promise<void> | null = null;
  private batch: Promise<void> | null = null;
  private failure: unknown = null;
  private done = false;
  private syncing: Promise<void> | null = null;
  private syncedUpTo = 0;
  private sealer: Worker | null = null;

  constructor(
    private readonly fh: FileHandle,
    private readonly tmp: string,
    private readonly path: string,
    /** Replace an existing file at `path` (--force); else one made meanwhile is an error. */
    private readonly replace: boolean,
  ) {}

  async write(buf: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    this.queue.push(buf);
    this.queued += buf.length;
    this.bytesWritten += buf.length;
    this.writing ??= this.flush();
    while (this.queued > MAX_QUEUED && this.batch) await this.batch.catch(() => {});
    if (this.failure) throw this.failure;
  }

  private async flush(): Promise<void> {
    try {
      while (this.queue.length && !this.failure) {
        const batch = this.queue;
        const n = batch.reduce((a, b) => a + b.length, 0);
        this.queue = [];
        this.batch = writeAll(this.fh, [...batch], this.bytesWritten - this.queued);
        await this.batch;
        this.queued -= n;
        this.written(this.bytesWritten - this.queued);
      }
    } catch (err) {
      this.failure ??= ioError(err, this.path, 'write');
    } finally {
      this.writing = null;
      this.batch = null;
    }
  }

  /** `upTo` bytes are on their way to the disk: start a background sync every SYNC_EVERY. */
  private written(upTo: number): void {
    if (this.syncing || upTo - this.syncedUpTo < SYNC_EVERY) return;
    this.syncedUpTo = upTo;
    this.syncing = this.fh
      .datasync()
      .catch((err: unknown) => void (this.failure ??= ioError(err, this.path, 'write')))
      .finally(() => (this.syncing = null));
  }

  /**
   * Segments are sealed and written by a thread of their own (seal-worker.ts), at their place in
   * the file, while this thread reads, hashes and compresses: on two cores, sealing here took a
   * quarter of create's time. Plaintext buffers travel to it and back (transferred, not copied).
   */
  segments(key: Buffer, segmentSize: number): SegmentOutput {
    const base = this.bytesWritten;
    // workerData is copied into the thread when it starts: both copies here are zeroed at once.
    const copy = Uint8Array.from(key);
    const backlog = new Backlog(); // segments
    const worker = new Worker(new URL('./seal-worker.js', import.meta.url), { workerData: { fd: this.fh.fd, key: copy, segmentSize, base, sealed: backlog.done } });
    copy.fill(0);
    key.fill(0);
    this.sealer = worker;
    const free: Buffer[] = [];
    let allocated = 0;
    let inFlight = 0;
    let wake: (() => void) | null = null;
    let finished: (() => void) | null = null;
    const settle = () => {
      const w = wake;
      wake = null;
      w?.();
      if (inFlight === 0 || this.failure) finished?.(); // a crashed thread answers no more
    };
    worker.on('message', (m: SealReply) => {
      if (m.t === 'sealed') {
        inFlight--;
        free.push(Buffer.from(m.buf));
        this.bytesWritten += m.bytes;
        this.written(base + (m.index + 1) * (segmentSize + TAG_LEN));
      } else {
        this.failure ??= ioError(Object.assign(new Error(m.message), { code: m.code }), this.path, 'write');
      }
      settle();
    });
    worker.on('error', (err) => {
      this.failure ??= err;
      settle();
    });
    worker.on('exit', () => {
      this.failure ??= new Error('the sealing thread stopped unexpectedly');
      settle();
    });
    const check = () => {
      if (this.failure) throw this.failure;
    };
    return {
      take: async () => {
        for (;;) {
          check();
          const b = free.pop();
          if (b) return b;
          if (allocated < SEAL_BUFFERS) {
            allocated++;
            return Buffer.from(new ArrayBuffer(segmentSize));
          }
          await new Promise<void>((res) => (wake = res));
        }
      },
      put: async (index, last, buf, length, ops) => {
        check();
        inFlight++;
        backlog.add();
        worker.postMessage({ index, last, length, buf: buf.buffer, ops }, [buf.buffer as ArrayBuffer]);
      },
      sealerHashes: () => backlog.keepsUp(),
      finish: async () => {
        while (inFlight > 0 && !this.failure) await new Promise<void>((res) => (finished = res));
        check();
        worker.removeAllListeners('exit');
        await worker.terminate();
        this.sealer = null;
      },
    };
  }

  async commit(): Promise<void> {
    await this.writing;
    await this.syncing;
    if (this.failure) throw this.failure;
    try {
      await this.fh.sync();
      await this.fh.close();
      if (this.replace) await rename(this.tmp, this.path);
    } catch (err) {
      throw ioError(err, this.path, 'write');
    }
    // Two runs without --force writing one name: exactly one gets it (the other, exit 6, leaves it alone).
    if (!this.replace) await publishNew(this.tmp, this.path);
    this.done = true;
    await syncDir(dirname(this.path));
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.sealer?.terminate();
    await this.writing;
    await this.syncing;
    await this.fh.close().catch(() => {});
    await unlink(this.tmp).catch(() => {});
  }
}

/** Standard output: a reader that goes away before the end is a failure (exit 6), see DataOutput. */
class StdoutSink implements Sink {
  bytesWritten = 0;
  private readonly out = new DataOutput();
  async write(buf: Buffer, free = false): Promise<void> {
    this.bytesWritten += buf.length;
    await this.out.write(buf, free ? () => freeBuffers([buf]) : undefined);
  }
  segments(key: Buffer, segmentSize: number): SegmentOutput {
    return inlineSegments(key, segmentSize, async (pieces) => {
      for (const p of pieces) await this.write(p, true);
    });
  }
  async commit(): Promise<void> {
    await this.out.flush();
    this.out.close();
  }
  async abort(): Promise<void> {}
}

/** An archive in memory: the test vectors' generator and tests that build archives by hand. */
export class MemorySink implements Sink {
  private parts: Buffer[] = [];
  bytesWritten = 0;
  async write(buf: Buffer): Promise<void> {
    this.parts.push(Buffer.from(buf));
    this.bytesWritten += buf.length;
  }
  /** `hashOnSealing`: file hashes are computed as segments are sealed, as the sealing thread does. */
  constructor(private readonly hashOnSealing = false) {}
  segments(key: Buffer, segmentSize: number): SegmentOutput {
    return inlineSegments(
      key,
      segmentSize,
      async (pieces) => {
        for (const p of pieces) await this.write(p);
      },
      this.hashOnSealing,
    );
  }
  async commit(): Promise<void> {}
  async abort(): Promise<void> {}
  get bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Open the output: '-' is stdout (refused when it is a terminal). */
export async function openSink(path: string, opts: { force?: boolean } = {}): Promise<Sink> {
  if (path === '-') {
    if (process.stdout.isTTY) throw new BackupctlError(Exit.usage, 'refusing to write an archive to a terminal; redirect stdout or use -o FILE');
    return new StdoutSink();
  }
  try {
    const st = await stat(path);
    if (st.isDirectory()) throw new BackupctlError(Exit.io, `${path} is a directory; give a file name with -o`);
    if (!opts.force) throw new BackupctlError(Exit.io, `${path} already exists; use --force to replace it`);
  } catch (err) {
    if (err instanceof BackupctlError) throw err;
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(err, path, 'write');
  }
  await requireOutputDir(path);
  await removeLeftoverTemps(dirname(path));
  const tmp = tempNameFor(path);
  let fh: FileHandle;
  try {
    fh = await open(tmp, 'wx', 0o600);
  } catch (err) {
    throw ioError(err, dirname(path) || '.', 'create a file in');
  }
  return new FileSink(fh, tmp, path, Boolean(opts.force));
}
