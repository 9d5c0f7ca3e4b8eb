// A directory as archive entries: a stable, byte-wise sorted walk that never follows symlinks.
// Files are opened with O_NOFOLLOW and checked to be the inode that was listed; a file that
// changes while read is stored as read and flagged.
import { lstat, open, opendir, readlink } from 'node:fs/promises';
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
const MAX_SPARE = 16;

/** Extensions whose content is already compressed: stored, never run through the compressor. */
const STORED = new Set(
  'jpg jpeg png gif webp heic heif avif mp4 m4v mov mkv webm 3gp avi opus ogg oga mp3 m4a aac amr flac wav zip gz tgz zst xz bz2 7z rar apk pdf crypt14 crypt15 docx xlsx pptx'
    .split(' ')
    .map((e) => '.' + e),
);

const byteOrder = (a: string, b: string) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));

function fileContent(abs: string, listed: BigIntStats): () => Promise<OpenedContent> {
  return async () => {
    let fh;
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
    // A yielded chunk is valid until the consumer asks for the next one: two buffers alternate,
    // one being read into (on the thread pool) while the other is hashed and sealed.
    async function* chunks(): AsyncGenerator<Uint8Array> {
      const handle = fh!;
      const bufs = [spareBuffers.pop() ?? Buffer.allocUnsafe(CHUNK), spareBuffers.pop() ?? Buffer.allocUnsafe(CHUNK)];
      let next = handle.read(bufs[0]!, 0, CHUNK, null);
      try {
        for (let k = 1; ; k ^= 1) {
          const { bytesRead, buffer } = await next;
          if (bytesRead === 0) break;
          next = handle.read(bufs[k]!, 0, CHUNK, null);
          total += BigInt(bytesRead);
          yield buffer.subarray(0, bytesRead);
        }
        const after = await handle.stat({ bigint: true });
        changed = total !== listed.size || after.mtimeNs !== listed.mtimeNs || after.size !== listed.size || after.ctimeNs !== listed.ctimeNs;
      } catch (err) {
        throw ioError(err, abs, 'read');
      } finally {
        await next.catch(() => {}); // no read may still be filling a buffer that goes back to the pool
        await handle.close();
        if (spareBuffers.length < MAX_SPARE) spareBuffers.push(...bufs);
      }
    }
    return { chunks: chunks(), compressible: !STORED.has(extname(abs).toLowerCase()), changed: () => changed };
  };
}

/**
 * Walk `root`; entry paths are relative with '/' separators. Special files (sockets, FIFOs,
 * devices) and unreadable directories are reported through `warn` and skipped.
 */
export async function* walkDirectory(root: string, warn: (msg: string) => void, skipped: { count: number }): AsyncGenerator<SourceEntry> {
  let rootSt;
  try {
    rootSt = await lstat(root, { bigint: true });
  } catch (err) {
    throw ioError(err, root, 'read');
  }
  if (!rootSt.isDirectory()) throw new BackupctlError(Exit.io, `${root} is not a directory`);

  async function* walk(absDir: string, rel: string): AsyncGenerator<SourceEntry> {
    let names: string[];
    try {
      const dir = await opendir(absDir);
      names = [];
      for await (const d of dir) names.push(d.name);
    } catch (err) {
      if (rel === '') throw ioError(err, absDir, 'read');
      skipped.count++;
      warn(`skipped ${absDir}: ${ioError(err, absDir, 'read').message.replace(/^cannot read [^:]*: /, '')}`);
      return;
    }
    names.sort(byteOrder);
    for (const name of names) {
      const abs = join(absDir, name);
      const path = rel ? `${rel}/${name}` : name;
      if (name.includes('\uFFFD')) {
        skipped.count++;
        warn(`skipped ${abs}: its name is not valid UTF-8`);
        continue;
      }
      let st: BigIntStats;
      try {
        st = await lstat(abs, { bigint: true });
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
