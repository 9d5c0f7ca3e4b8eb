// verify: authenticate every segment, parse every record, check every content hash and the
// index against the stream. On damage, a salvage walk (salvage.ts) names every entry it costs.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { constants } from 'node:fs';
import { access, lstat, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ioError } from '../errors.js';
import { EntryType } from './format.js';
import type { IndexEntry } from './entries.js';
import { ExpectedIndex, RecordReader, StreamSource, checkIndexAndTail, readIndex } from './records.js';
import { explainDamage } from './salvage.js';
import { PathGuard } from './paths.js';
import type { ArchiveFile } from './reader.js';

export interface VerifyResult {
  entries: number;
  files: number;
  bytes: number;
  segments: number;
  changedWhileRead: string[];
}

/**
 * Authenticate and parse the whole payload in one pass. Memory grows only with the path checks
 * (one key per entry): the index is checked against a running hash of the entries met
 * (ExpectedIndex), not against a second copy of every entry.
 */
/** `bytes`: of the payload's plaintext read so far, which ends at ArchiveFile.plainSize. */
type Progress = (p: { bytes: number; entries: number }) => void;
/** With `withIndex` (the default), the index is decoded once everything has verified, and returned. */
export async function verifyArchive(a: ArchiveFile, onProgress?: Progress, signal?: AbortSignal, withIndex?: true): Promise<VerifyResult & { index: IndexEntry[] }>;
export async function verifyArchive(a: ArchiveFile, onProgress: Progress | undefined, signal: AbortSignal | undefined, withIndex: false): Promise<VerifyResult>;
export async function verifyArchive(a: ArchiveFile, onProgress?: Progress, signal?: AbortSignal, withIndex = true): Promise<VerifyResult & { index?: IndexEntry[] }> {
  const res: VerifyResult = { entries: 0, files: 0, bytes: 0, segments: 0, changedWhileRead: [] };
  try {
    res.segments = a.segmentCount;
    const src = new StreamSource(a.plaintext());
    const reader = new RecordReader(src);
    const expected = new ExpectedIndex();
    // An archive that restore would refuse does not verify either (restore also refuses names
    // that the target's file system takes for one: that depends on the target, not the archive).
    const guard = new PathGuard();
    const count = (chunk: Buffer) => void (res.bytes += chunk.length);
    for (;;) {
      signal?.throwIfAborted();
      const rec = await reader.next();
      if (rec.kind === 'index') {
        await checkIndexAndTail(src, rec.offset, expected);
        onProgress?.({ bytes: a.plainSize, entries: res.entries });
        return withIndex ? { ...res, index: await readIndex(a) } : res;
      }
      guard.add(rec.head.path, rec.head.type, rec.head.target);
      const meta = await reader.content(rec.head, count);
      expected.add(meta, rec.offset, src.position - rec.offset);
      res.entries++;
      if (meta.type === EntryType.File) res.files++;
      if (meta.flags & 1) res.changedWhileRead.push(meta.path);
      onProgress?.({ bytes: src.position, entries: res.entries });
    }
  } catch (err) {
    // Damage (not authenticated data that breaks the format): name every entry it costs.
    throw await explainDamage(a, err);
  }
}

export interface Difference {
  path: string;
  problem: string;
}

async function hashFile(p: string): Promise<Buffer> {
  const h = createHash('sha256');
  for await (const c of createReadStream(p, { highWaterMark: 1 << 20 })) h.update(c as Buffer);
  return h.digest();
}

/** `dir` can be compared with (a readable directory): checked before any long work, exit 6 if not. */
export async function checkComparisonDir(dir: string): Promise<void> {
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    await access(dir, constants.R_OK | constants.X_OK);
  } catch (err) {
    throw ioError(err, dir, 'compare with');
  }
}

/** Compare the archive's entries with a directory tree (after the archive itself verified). */
export async function compareWithDirectory(index: IndexEntry[], dir: string): Promise<Difference[]> {
  const diffs: Difference[] = [];
  const inArchive = new Set(index.map((e) => e.path));
  for (const e of index) {
    const p = join(dir, e.path);
    const st = await lstat(p).catch(() => null);
    if (!st) {
      diffs.push({ path: e.path, problem: 'missing from the directory' });
      continue;
    }
    const type = st.isDirectory() ? EntryType.Dir : st.isSymbolicLink() ? EntryType.Symlink : st.isFile() ? EntryType.File : -1;
    if (type !== e.type) {
      diffs.push({ path: e.path, problem: 'different type' });
      continue;
    }
    if ((st.mode & 0o7777) !== e.mode) diffs.push({ path: e.path, problem: `mode ${(st.mode & 0o7777).toString(8)} vs ${e.mode.toString(8)} in the archive` });
    if (e.type === EntryType.File) {
      if (BigInt(st.size) !== e.size) diffs.push({ path: e.path, problem: `size ${st.size} vs ${e.size} in the archive` });
      else if (!(await hashFile(p)).equals(e.sha256)) diffs.push({ path: e.path, problem: 'content differs' });
    } else if (e.type === EntryType.Symlink && (await readlink(p)) !== e.target) {
      diffs.push({ path: e.path, problem: 'link target differs' });
    }
  }
  async function extra(abs: string, rel: string): Promise<void> {
    for (const d of await readdir(abs, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (!inArchive.has(r)) diffs.push({ path: r, problem: 'not in the archive' });
      else if (d.isDirectory()) await extra(join(abs, d.name), r);
    }
  }
  await extra(dir, '');
  return diffs;
}
