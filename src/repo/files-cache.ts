// The files cache (backupctl-repository(5) "FILES CACHE"): per backed-up directory, each file's
// size, mtime, ctime and inode at the last backup and its chunk ids, so that an unchanged file is
// not read again. Only a shortcut: an entry is used only if every chunk it names is in the
// repository's index, and a missing or damaged cache just means files are read (and, their
// chunks being in the index already, nothing is stored twice).
//
// Neither the last backup's cache nor this one's is held in memory: both are files of records in
// walk order, the old one read along as the walk goes (a merge, as the walk asks for paths in the
// order it wrote them), the new one written as the backup goes and put in place once its
// snapshot is committed. 100,000 files held as strings and objects took about 60 MB.
import { createHash } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { configDir, ensureConfigDir } from '../config.js';
import { ioError } from '../errors.js';
import { removeLeftoverTemps, syncDir, tempNameFor } from '../util/fsutil.js';

export interface FileState {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

const MAGIC = 'backupctl-files-cache 3\n';
const BUF = 1 << 20;

export function filesCachePath(repoId: string, source: string): string {
  const key = createHash('sha256').update(source).digest('hex').slice(0, 16);
  return join(configDir(), 'repositories', `${repoId}.files`, `${key}.cache`);
}

/**
 * The order of the walk (archive/walk.ts): depth first, names compared as UTF-8 bytes, so a
 * directory comes before what is in it and "a/x" before "a-b". In UTF-16 code units, surrogates
 * (characters past U+FFFF) sort below U+E000-U+FFFF, in UTF-8 above: they are moved up.
 */
export function walkOrder(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x === 0x2f) return -1; // a's name ends here: a prefix of b's
    if (y === 0x2f) return 1;
    if (x >= 0xd800 && x <= 0xdfff) x += 0x10000;
    if (y >= 0xd800 && y <= 0xdfff) y += 0x10000;
    return x - y;
  }
  return a.length - b.length;
}

/**
 * One record: path length (u32), path (UTF-8), size, mtime, ctime, inode (each 8 bytes,
 * big-endian; the times signed), chunk count (u32), the chunk ids.
 */
interface Entry {
  path: string;
  head: Buffer;
  ids: Buffer;
}

/** The last backup's records, read in order. */
class RecordReader {
  private buf = Buffer.allocUnsafe(BUF);
  private pos = 0;
  private end = 0;
  private eof = false;

  constructor(private fd: number | null) {}

  /** At least `n` bytes buffered from `pos`, or false at the end of the file. */
  private fill(n: number): boolean {
    if (this.end - this.pos >= n) return true;
    if (this.fd === null || this.eof) return false;
    if (n > this.buf.length) {
      const bigger = Buffer.allocUnsafe(n + BUF);
      this.buf.copy(bigger, 0, this.pos, this.end);
      this.buf = bigger;
    } else this.buf.copy(this.buf, 0, this.pos, this.end);
    this.end -= this.pos;
    this.pos = 0;
    while (this.end < this.buf.length) {
      const got = readSync(this.fd, this.buf, this.end, this.buf.length - this.end, null);
      if (got === 0) {
        this.eof = true;
        break;
      }
      this.end += got;
    }
    return this.end - this.pos >= n;
  }

  next(): Entry | null {
    try {
      if (!this.fill(4)) return this.stop();
      const pathLen = this.buf.readUInt32BE(this.pos);
      if (!this.fill(4 + pathLen + 36)) return this.stop();
      const count = this.buf.readUInt32BE(this.pos + 4 + pathLen + 32);
      const len = 4 + pathLen + 36 + 32 * count;
      if (!this.fill(len)) return this.stop();
      const at = this.pos;
      this.pos += len;
      return {
        path: this.buf.toString('utf8', at + 4, at + 4 + pathLen),
        head: this.buf.subarray(at + 4 + pathLen, at + 4 + pathLen + 32),
        ids: this.buf.subarray(at + 4 + pathLen + 36, at + len),
      };
    } catch {
      return this.stop(); // unreadable from here on: the rest of the files are read
    }
  }

  stop(): null {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    this.end = this.pos = 0;
    return null;
  }
}

function stateHead(st: FileState): Buffer {
  const b = Buffer.allocUnsafe(32);
  b.writeBigUInt64BE(BigInt.asUintN(64, st.size), 0);
  b.writeBigInt64BE(BigInt.asIntN(64, st.mtimeNs), 8);
  b.writeBigInt64BE(BigInt.asIntN(64, st.ctimeNs), 16);
  b.writeBigUInt64BE(BigInt.asUintN(64, st.ino), 24);
  return b;
}

export class FilesCache {
  private ahead: Entry | null = null;
  /** Paths asked about by `unchanged` whose record `lookup` takes next (the walk lists a few names ahead). */
  private readonly asked = new Map<string, Buffer[] | null>();
  private out: Buffer = Buffer.allocUnsafe(BUF);
  private outAt = 0;
  private fd: number | null = null;
  private tmp: string | null = null;

  private constructor(
    private readonly path: string,
    private readonly prev: RecordReader,
  ) {
    this.ahead = prev.next();
  }

  static async load(repoId: string, source: string): Promise<FilesCache> {
    const path = filesCachePath(repoId, source);
    let fd: number | null = null;
    try {
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW);
      const head = Buffer.from(MAGIC + source + '\n');
      const got = Buffer.allocUnsafe(head.length);
      if (readSync(fd, got, 0, got.length, null) !== got.length || !got.equals(head)) throw new Error('another version or directory');
    } catch {
      if (fd !== null) closeSync(fd);
      fd = null; // none yet, or damaged: every file is read
    }
    const cache = new FilesCache(path, new RecordReader(fd));
    await cache.begin(source);
    return cache;
  }

  /** The record of `path` in the last backup, or null; records of paths before it are passed over. */
  private find(path: string): Entry | null {
    while (this.ahead && walkOrder(this.ahead.path, path) < 0) this.ahead = this.prev.next();
    if (!this.ahead || this.ahead.path !== path) return null;
    const e = this.ahead;
    // Copied out: the reader's buffer moves on.
    const found = { path: e.path, head: Buffer.from(e.head), ids: Buffer.from(e.ids) };
    this.ahead = this.prev.next();
    return found;
  }

  private match(path: string, st: FileState): Buffer[] | null {
    const e = this.find(path);
    if (!e || !e.head.equals(stateHead(st))) return null;
    const ids: Buffer[] = [];
    for (let o = 0; o < e.ids.length; o += 32) ids.push(e.ids.subarray(o, o + 32));
    return ids;
  }

  /** Is `path` as it was at the last backup? (whether its content will be read at all). Asked in walk order. */
  unchanged(path: string, st: FileState): boolean {
    const ids = this.match(path, st);
    this.asked.set(path, ids);
    return ids !== null;
  }

  /** The chunk ids recorded for `path` if it is exactly as it was then, else null. Asked in walk order. */
  lookup(path: string, st: FileState): Buffer[] | null {
    if (!this.asked.has(path)) return this.match(path, st);
    const ids = this.asked.get(path)!;
    this.asked.delete(path);
    return ids;
  }

  private async begin(source: string): Promise<void> {
    await ensureConfigDir(relative(configDir(), dirname(this.path)));
    await removeLeftoverTemps(dirname(this.path)); // of backups that were killed
    this.tmp = tempNameFor(this.path);
    try {
      this.fd = openSync(this.tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    } catch (err) {
      throw ioError(err, this.tmp, 'write');
    }
    this.put(Buffer.from(MAGIC + source + '\n'));
  }

  private put(b: Buffer): void {
    if (this.outAt + b.length > this.out.length) this.drain();
    if (b.length > this.out.length) writeSync(this.fd!, b);
    else this.outAt += b.copy(this.out, this.outAt);
  }

  private drain(): void {
    for (let at = 0; at < this.outAt; ) at += writeSync(this.fd!, this.out, at, this.outAt - at);
    this.outAt = 0;
  }

  /** What this backup saw of `path`, recorded in walk order. */
  record(path: string, st: FileState, chunks: readonly Buffer[]): void {
    const p = Buffer.from(path, 'utf8');
    const b = Buffer.allocUnsafe(4 + p.length + 36 + 32 * chunks.length);
    b.writeUInt32BE(p.length, 0);
    p.copy(b, 4);
    stateHead(st).copy(b, 4 + p.length);
    b.writeUInt32BE(chunks.length, 4 + p.length + 32);
    chunks.forEach((c, i) => c.copy(b, 4 + p.length + 36 + 32 * i));
    this.put(b);
  }

  /** Replace the cache with what this backup saw (once its snapshot is written). */
  async save(): Promise<void> {
    try {
      this.drain();
      fsyncSync(this.fd!);
      closeSync(this.fd!);
      this.fd = null;
      renameSync(this.tmp!, this.path);
      this.tmp = null;
    } catch (err) {
      this.discard();
      throw ioError(err, this.path, 'write');
    }
    await syncDir(dirname(this.path));
  }

  /** Let go of both files; the one being written is removed (the backup did not complete). */
  discard(): void {
    this.prev.stop();
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
    if (this.tmp) {
      try {
        unlinkSync(this.tmp);
      } catch {
        /* removed as a leftover by the next backup */
      }
    }
    this.tmp = null;
  }
}
