// A directory as archive entries: a stable, byte-wise sorted walk that never follows symlinks.
// Files are opened with O_NOFOLLOW and checked to be the inode that was listed; a file that
// changes while read is stored as read and flagged.
import { lstat, open, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { constants, type BigIntStats } from 'node:fs';
import { extname, join } from 'node:path';
import { EntryType } from './format.js';
import { SkipEntry, type OpenedContent, type SourceEntry } from './pack.js';
import { BackupctlError, Exit, ioError } from '../errors.js';

const CHUNK = 1 << 20;

/**
 * Read buffers, reused from file to file: a fresh 1 MiB buffer per read costs more than the read
 * itself (new pages to fault in and zero, then garbage to collect): about 0.8 s of CPU per GB.
 */
const spareBuffers: Buffer[] = [];
const MAX_SPARE = 8;
/** lstat calls in flight ahead of the entry being listed. */
const STAT_AHEAD = 32;
/** Reads in flight for a file bigger than one chunk. */
const READ_AHEAD = 3;

/** Extensions whose content is already compressed: stored, never run through the compressor. */
const STORED = new Set(
  'jpg jpeg png gif webp heic heif avif mp4 m4v mov mkv webm 3gp avi opus ogg oga mp3 m4a aac amr flac wav zip gz tgz zst xz bz2 7z rar apk pdf crypt14 crypt15 docx xlsx pptx'
    .split(' ')
    .map((e) => '.' + e),
);

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Opened content that can be given back unread (a file opened ahead that nobody claimed). */
interface FileContent extends OpenedContent {
  discard(): Promise<void>;
}

function fileContent(abs: string, listed: BigIntStats): () => Promise<FileContent> {
  return async () => {
    let fh: FileHandle;
    try {
      fh = await open(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new SkipEntry(`skipped ${abs}: it vanished before it could be read`);
      if (code === 'ELOOP') throw new SkipEntry(`skipped ${abs}: it was replaced by a symbolic link while listing`);
      throw new SkipEntry(ioError(err, abs, 'read').message.replace(/^cannot/, 'skipped: cannot'));
    }
    const st = await fh.stat({ bigint: true });
    if (st.ino !== listed.ino || st.dev !== listed.dev || !st.isFile()) {
      await fh.close();
      throw new SkipEntry(`skipped ${abs}: it was replaced while listing`);
    }
    let total = 0n;
    let changed = false;
    // Reads run ahead of the consumer into a ring of buffers: one read for a file that fits in a
    // chunk, READ_AHEAD for a bigger one (positional, so they overlap on the thread pool). A
    // yielded chunk is valid until the consumer asks for the next one. The first read starts
    // now, so a file opened ahead (see walkDirectory) has its data ready.
    const depth = listed.size > BigInt(CHUNK) ? READ_AHEAD : 1;
    const ring: Buffer[] = [];
    const reads: Array<Promise<{ bytesRead: number; buffer: Buffer }>> = [];
    let issued = 0;
    const issue = () => {
      const slot = issued % (depth + 1);
      const buf = (ring[slot] ??= spareBuffers.pop() ?? Buffer.allocUnsafe(CHUNK));
      const r = fh.read(buf, 0, CHUNK, issued * CHUNK);
      r.catch(() => {}); // a read error is reported when its chunk is asked for
      reads.push(r);
      issued++;
    };
    issue();
    // For a file that fits in one chunk, the fstat that checks for changes follows its read
    // right away, so a file opened ahead is finished before its turn.
    const statAfterRead = depth === 1 ? reads[0]!.then((r) => (r.bytesRead < CHUNK ? fh.stat({ bigint: true }) : null)) : null;
    statAfterRead?.catch(() => {});
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      await Promise.allSettled(reads); // no read may still be filling a buffer that goes back to the pool
      spareBuffers.push(...ring.slice(0, Math.max(0, MAX_SPARE - spareBuffers.length)));
      await statAfterRead?.catch(() => {});
      fh.close().catch(() => {}); // not waited for: nothing was written through it
    };
    async function* chunks(): AsyncGenerator<Uint8Array> {
      try {
        for (;;) {
          while (reads.length < depth) issue();
          const { bytesRead, buffer } = await reads.shift()!;
          if (bytesRead === 0) break;
          total += BigInt(bytesRead);
          yield buffer.subarray(0, bytesRead);
          // A short read is the end of a regular file: most files fit in one chunk, and a read
          // that would return 0 is not worth its round trip (growth is caught by the fstat below).
          if (bytesRead < CHUNK) break;
        }
        const after = (await statAfterRead) ?? (await fh.stat({ bigint: true }));
        changed = total !== listed.size || after.mtimeNs !== listed.mtimeNs || after.size !== listed.size || after.ctimeNs !== listed.ctimeNs;
      } catch (err) {
        throw ioError(err, abs, 'read');
      } finally {
        await release();
      }
    }
    return { chunks: chunks(), compressible: !STORED.has(extname(abs).toLowerCase()), changed: () => changed, discard: release };
  };
}

/** Entries listed ahead of the consumer; once it opens files, the files among them are opened too. */
const LOOKAHEAD = 8;

interface Slot {
  entry: SourceEntry;
  opened: Promise<FileContent> | null;
  claimed: boolean;
}

/**
 * Walk `root`; entry paths are relative with '/' separators. Special files (sockets, FIFOs,
 * devices) and unreadable directories are reported through `warn` and skipped.
 *
 * The listing runs LOOKAHEAD entries ahead, and once the consumer opens a file (the archive
 * writer opens every one), the next files are opened and their first read started while the
 * current one is hashed and sealed: thousands of small files would otherwise each cost several
 * thread-pool round trips (lstat, open, fstat, read, close) with the main thread waiting. A file
 * opened ahead and passed over without being opened is closed when the consumer moves on.
 */
export async function* walkDirectory(root: string, warn: (msg: string) => void, skipped: { count: number }): AsyncGenerator<SourceEntry> {
  const inner = listTree(root, warn, skipped);
  const window: Array<Promise<IteratorResult<Slot>>> = [];
  const listed: Slot[] = []; // in the window and already listed
  let eager = false;
  const openAhead = (s: Slot) => {
    s.opened = (s.entry.open as () => Promise<FileContent>)();
    s.opened.catch(() => {}); // a SkipEntry reaches the consumer when it opens the entry
  };
  const pull = () => {
    const p = inner.next().then((r): IteratorResult<Slot> => {
      if (r.done) return r;
      const s: Slot = { entry: r.value, opened: null, claimed: false };
      if (r.value.open) {
        listed.push(s);
        if (eager) openAhead(s);
      }
      return { done: false, value: s };
    });
    p.catch(() => {}); // a listing error reaches the consumer in its turn
    window.push(p);
  };
  const discard = async (s: Slot) => {
    if (s.opened && !s.claimed) await s.opened.then((c) => c.discard(), () => {});
  };
  try {
    for (;;) {
      while (window.length < LOOKAHEAD) pull();
      const r = await window.shift()!;
      if (r.done) return;
      const s = r.value;
      if (listed[0] === s) listed.shift();
      if (!s.entry.open) {
        yield s.entry;
        continue;
      }
      yield {
        ...s.entry,
        open: () => {
          s.claimed = true;
          if (!eager) {
            eager = true;
            for (const l of listed) if (!l.opened) openAhead(l);
          }
          if (!s.opened) openAhead(s);
          return s.opened!;
        },
      };
      await discard(s);
    }
  } finally {
    for (const p of window) await p.then((r) => (r.done ? undefined : discard(r.value)), () => {});
  }
}

/** The walk itself: depth first, names in byte order, one lstat per name. */
async function* listTree(root: string, warn: (msg: string) => void, skipped: { count: number }): AsyncGenerator<SourceEntry> {
  let rootSt;
  try {
    rootSt = await lstat(root, { bigint: true });
  } catch (err) {
    throw ioError(err, root, 'read');
  }
  if (!rootSt.isDirectory()) throw new BackupctlError(Exit.io, `${root} is not a directory`);

  async function* walk(absDir: string, rel: string): AsyncGenerator<SourceEntry> {
    let raw: Buffer[];
    try {
      raw = await readdir(absDir, { encoding: 'buffer' }); // raw bytes: tell real U+FFFD from bad UTF-8
    } catch (err) {
      if (rel === '') throw ioError(err, absDir, 'read');
      skipped.count++;
      warn(`skipped ${absDir}: ${ioError(err, absDir, 'read').message.replace(/^cannot read [^:]*: /, '')}`);
      return;
    }
    raw.sort(Buffer.compare);
    const names = raw.map((bytes) => {
      try {
        return strictUtf8.decode(bytes);
      } catch {
        return null;
      }
    });
    // lstat runs STAT_AHEAD names ahead: one at a time, each a thread-pool round trip behind the
    // reads and writes queued there, the listing would set the pace of the whole archive.
    const stats: Array<Promise<BigIntStats> | undefined> = [];
    const statAhead = (from: number) => {
      for (let j = from; j < Math.min(names.length, from + STAT_AHEAD); j++) {
        if (stats[j] || names[j] === null) continue;
        stats[j] = lstat(join(absDir, names[j]!), { bigint: true });
        stats[j]!.catch(() => {}); // reported in its turn
      }
    };
    for (let i = 0; i < raw.length; i++) {
      const name = names[i];
      if (name === null || name === undefined) {
        skipped.count++;
        warn(`skipped ${join(absDir, raw[i]!.toString('utf8'))}: its name is not valid UTF-8`);
        continue;
      }
      statAhead(i);
      const abs = join(absDir, name);
      const path = rel ? `${rel}/${name}` : name;
      let st: BigIntStats;
      try {
        st = await stats[i]!;
        stats[i] = undefined;
      } catch (err) {
        skipped.count++;
        warn(`skipped ${abs}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it vanished' : ioError(err, abs, 'read').message}`);
        continue;
      }
      const base = { path, mode: Number(st.mode & 0o7777n), mtimeNs: st.mtimeNs };
      if (st.isDirectory()) {
        yield { ...base, type: EntryType.Dir };
        yield* walk(abs, path);
      } else if (st.isFile()) {
        yield { ...base, type: EntryType.File, open: fileContent(abs, st) };
      } else if (st.isSymbolicLink()) {
        try {
          yield { ...base, type: EntryType.Symlink, target: await readlink(abs) };
        } catch (err) {
          skipped.count++;
          warn(`skipped ${abs}: ${ioError(err, abs, 'read').message}`);
        }
      } else {
        skipped.count++;
        warn(`skipped ${abs}: not a regular file, directory or symbolic link`);
      }
    }
  }
  yield* walk(root, '');
}
