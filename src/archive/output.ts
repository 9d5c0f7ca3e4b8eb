// Where an archive is written: a file (temporary name in the target directory, fsync, rename —
// so an interrupted run never leaves a file under the final name) or stdout. Writes are
// queued with a bound on bytes in flight so reading, sealing and writing overlap.
import { open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { syncDir, tempNameFor } from '../util/fsutil.js';

export interface Sink {
  write(buf: Buffer): Promise<void>;
  /** Flush, sync and move into place. */
  commit(): Promise<void>;
  /** Remove any partial output. Safe to call more than once. */
  abort(): Promise<void>;
  readonly bytesWritten: number;
}

/** Bytes queued for writing before the producer waits. */
const MAX_QUEUED = 4 << 20;
/**
 * A background fdatasync is started every SYNC_EVERY bytes, so the disk writes the archive while
 * it is produced and the fsync before the rename only waits for the last part (a single fsync
 * at the end waited about 1.5 s per GB here, with nothing else to do).
 */
const SYNC_EVERY = 64 << 20;

/**
 * Buffers handed to a sink for good: nothing else holds them (the sealer's fresh ciphertext).
 * Once written they are freed at once by detaching their memory, instead of waiting for the
 * garbage collector: V8 lets about 64 MB of such external memory pile up before it collects,
 * which was a third of create's peak RSS.
 */
const disposables = new WeakSet<Buffer>();

/** Mark `buf` as the sink's to free once written; only a buffer that owns its whole memory. */
export function disposable(buf: Buffer): Buffer {
  if (buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength) disposables.add(buf);
  return buf;
}

function dispose(buf: Buffer): void {
  // ArrayBuffer.prototype.transfer is ES2024 (Node 20+); the project's lib is ES2023.
  if (disposables.delete(buf)) (buf.buffer as ArrayBuffer & { transfer(n: number): ArrayBuffer }).transfer(0);
}

/** Write all of `bufs` at `pos`, continuing after partial writes. */
async function writeAll(fh: FileHandle, bufs: Buffer[], pos: number): Promise<void> {
  while (bufs.length) {
    let { bytesWritten } = await fh.writev(bufs, pos);
    pos += bytesWritten;
    while (bufs.length && bytesWritten >= bufs[0]!.length) bytesWritten -= bufs.shift()!.length;
    if (bytesWritten) bufs[0] = bufs[0]!.subarray(bytesWritten);
  }
}

/** Remove temp files left by killed runs writing `path` (pid no longer alive). */
async function cleanStaleTemps(path: string): Promise<void> {
  const prefix = `.${basename(path)}.backupctl-tmp-`;
  let names: string[] = [];
  try {
    names = await readdir(dirname(path));
  } catch {
    return;
  }
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const pid = parseInt(n.slice(prefix.length), 10);
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = true;
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) await unlink(join(dirname(path), n)).catch(() => {});
  }
}

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

  constructor(
    private readonly fh: FileHandle,
    private readonly tmp: string,
    private readonly path: string,
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
        batch.forEach(dispose);
        this.queued -= n;
        const written = this.bytesWritten - this.queued;
        if (!this.syncing && written - this.syncedUpTo >= SYNC_EVERY) {
          this.syncedUpTo = written;
          this.syncing = this.fh
            .datasync()
            .catch((err: unknown) => void (this.failure ??= ioError(err, this.path, 'write')))
            .finally(() => (this.syncing = null));
        }
      }
    } catch (err) {
      this.failure ??= ioError(err, this.path, 'write');
    } finally {
      this.writing = null;
      this.batch = null;
    }
  }

  async commit(): Promise<void> {
    await this.writing;
    await this.syncing;
    if (this.failure) throw this.failure;
    try {
      await this.fh.sync();
      await this.fh.close();
      await rename(this.tmp, this.path);
      this.done = true;
    } catch (err) {
      throw ioError(err, this.path, 'write');
    }
    await syncDir(dirname(this.path));
  }

  async abort(): Promise<void> {
    if (this.done) return;
    this.done = true;
    await this.writing;
    await this.syncing;
    await this.fh.close().catch(() => {});
    await unlink(this.tmp).catch(() => {});
  }
}

class StdoutSink implements Sink {
  bytesWritten = 0;
  async write(buf: Buffer): Promise<void> {
    this.bytesWritten += buf.length;
    if (!process.stdout.write(buf, () => dispose(buf))) await new Promise<void>((res) => process.stdout.once('drain', res));
  }
  async commit(): Promise<void> {
    await new Promise<void>((res) => process.stdout.write('', () => res()));
  }
  async abort(): Promise<void> {}
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
  await cleanStaleTemps(path);
  const tmp = tempNameFor(path);
  let fh: FileHandle;
  try {
    fh = await open(tmp, 'wx', 0o600);
  } catch (err) {
    throw ioError(err, dirname(path) || '.', 'create a file in');
  }
  return new FileSink(fh, tmp, path);
}
