// Safe extraction. Everything is written into a private staging directory inside DEST first;
// entries are moved into place only after the whole selection has been read and authenticated,
// with no-clobber links (never check-then-rename), parents verified as real directories, and
// symlinks created last, so no link (stored or pre-existing) is ever followed. Any failure or
// interruption leaves DEST as it was. Node has no openat(2), so the remaining window is a local
// attacker who can write to DEST swapping a checked directory for a link during the commit:
// see backupctl(1) "RESTORE SAFETY".
import { chmodSync, constants, copyFileSync, linkSync, lstatSync, lutimesSync, mkdirSync, renameSync, rmSync, rmdirSync, symlinkSync, unlinkSync, utimesSync } from 'node:fs';
import { lstat, mkdtemp, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupctlError, Exit, corruptError, ioError, usageError } from '../errors.js';
import { makeDirs, refusesEntries } from '../util/make-dirs.js';
import { EntryType } from './format.js';
import type { EntryMeta, IndexEntry } from './entries.js';
import { NO_FOLDING, probeFolding, type Folding } from './name-folding.js';
import { PathGuard } from './paths.js';
import { ExpectedIndex, RecordReader, StreamSource, checkIndexAndTail, readIndex, sameEntry, sameHead } from './records.js';
import { ArchiveFile, type ArchiveStream } from './reader.js';
import { StagingWriter } from './staging.js';
import { utimeArg } from './times.js';

export interface RestoreOptions {
  archive: ArchiveFile | ArchiveStream;
  dest: string;
  only?: string[];
  force?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: { bytes: number; entries: number }) => void;
}

export interface RestoreResult {
  entries: number;
  files: number;
  bytes: number;
  replaced: number;
}

const selects = (only: string[] | undefined, path: string) =>
  !only || only.some((o) => path === o || path.startsWith(o + '/'));
const isAncestorOfSelection = (only: string[] | undefined, path: string) =>
  !!only && only.some((o) => o.startsWith(path + '/'));

/** A recorded time as utimes takes it, exactly as the platform allows (times.ts); commit() sets times with it too. */
const secs = utimeArg;
/** Restored modes keep permissions and the sticky bit, never setuid/setgid. */
const safeMode = (mode: number) => mode & 0o1777;

/**
 * rm -rf, best effort. The synchronous rm walks the tree natively: for 100,000 staged files the
 * promise version took 280 MB (a promise per entry, all at once) and three times as long.
 */
function removeTree(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    /* best effort: what is left is named .backupctl-restore-* */
  }
}

export async function restoreArchive(o: RestoreOptions): Promise<RestoreResult> {
  const only = o.only?.map((p) => p.replace(/\/+$/, '').replace(/^\.\//, ''));
  // From a file, the whole index is read and checked before anything is created, DEST included
  // (names that only the target's file system would take for one are checked once it is probed).
  const index = o.archive instanceof ArchiveFile ? await readIndex(o.archive) : null;
  if (index) checkEntries(index, NO_FOLDING);
  // mkdir -p; remember the topmost directory it made, to remove again on failure.
  const createdDest = makeDirs(o.dest);
  let dest: string;
  let staging: string | null = null;
  try {
    const st = await lstat(o.dest).catch((err) => { throw ioError(err, o.dest, 'read'); });
    if (!st.isDirectory() && !st.isSymbolicLink()) throw new BackupctlError(Exit.io, `${o.dest} is not a directory`);
    dest = await realpath(o.dest);
    staging = await mkdtemp(join(dest, '.backupctl-restore-')).catch((err) => {
      throw (err as NodeJS.ErrnoException).code === 'ENOENT' ? refusesEntries(dest) : ioError(err, dest, 'write into');
    });
    const folding = probeStaging(staging);
    if (index && (folding.case || folding.unicode)) checkEntries(index, folding);
    const staged = await extract(o, only, staging, folding, index);
    // Per pattern, and not counting the parent directories staged for other patterns (as tar).
    const unmatched = only?.filter((p) => !staged.some((e) => selects([p], e.path))) ?? [];
    if (unmatched.length) throw usageError(`nothing in the archive matches ${unmatched.join(', ')}`);
    o.signal?.throwIfAborted();
    const replaced = commit(staged, staging, dest, !!o.force);
    const files = staged.filter((e) => e.type === EntryType.File);
    return { entries: staged.length, files: files.length, bytes: files.reduce((a, e) => a + Number(e.size), 0), replaced };
  } catch (err) {
    if (createdDest) removeTree(createdDest);
    throw err;
  } finally {
    if (staging) removeTree(staging);
  }
}

/** How DEST's file system compares names, asked in the (empty) staging directory. */
function probeStaging(staging: string): Folding {
  try {
    return probeFolding(staging);
  } catch (err) {
    throw ioError(err, staging, 'write into');
  }
}

/** Every entry of the index, checked before anything is written (the guard's map freed after). */
function checkEntries(index: readonly IndexEntry[], folding: Folding): void {
  const guard = new PathGuard(folding);
  for (const e of index) guard.add(e.path, e.type, e.target);
}

const mismatch = (path: string) => corruptError(`the index does not match the payload at ${JSON.stringify(path)}`);

/**
 * Read the selection into staging; returns the staged entries in archive order. Names reach the
 * staging thread only once checked: from a file (`index`: its index, already checked), each
 * record's head must equal its index entry before any of its content is used, and the index's
 * name is the one staged; from a pipe, each head is checked as it comes.
 */
async function extract(o: RestoreOptions, only: string[] | undefined, staging: string, folding: Folding, index: IndexEntry[] | null): Promise<EntryMeta[]> {
  const staged: EntryMeta[] = [];
  let bytes = 0;
  const wanted = (p: string) => selects(only, p) || isAncestorOfSelection(only, p);

  // Staged files are written behind the reading, on their own thread (see StagingWriter).
  const writer = new StagingWriter(staging);
  const settle = () => writer.finish();
  // Paths relative to the staging directory ('' is the directory itself).
  const madeDirs = new Set<string>(['']);
  const stagedDir = async (dir: string) => {
    if (madeDirs.has(dir)) return; // one mkdir per directory, not one per file
    await writer.mkdir(dir);
    madeDirs.add(dir);
  };

  /** `head`: checked (the index entry it equals, or guarded as it came). */
  const extractRecord = async (reader: RecordReader, head: Parameters<RecordReader['content']>[0], keep: boolean) => {
    if (keep && head.type === EntryType.Dir) await stagedDir(head.path);
    if (!keep || head.type !== EntryType.File) return reader.content(head, () => {});
    await stagedDir(head.path.slice(0, Math.max(0, head.path.lastIndexOf('/'))));
    // Hashing goes to whichever thread has the time: on two cores, either one doing it all was
    // the slower of the two. The staging thread checks the tail's hash when it closes the file.
    const stagingHashes = writer.keepsUp();
    await writer.open(head.path, stagingHashes);
    const meta = await reader.content(
      head,
      async (chunk) => {
        o.signal?.throwIfAborted();
        bytes += chunk.length;
        await writer.write(chunk);
      },
      stagingHashes,
    );
    await writer.close(safeMode(meta.mode), secs(meta.mtimeNs), stagingHashes ? meta.sha256 : null, head.path);
    return meta;
  };

  try {
    const a = o.archive;
    if (a instanceof ArchiveFile && index) {
      const sel = index.filter((e) => wanted(e.path));
      const full = sel.length === index.length;
      const runs: Array<{ entries: IndexEntry[]; offset: number; length: number }> = full
        ? [{ entries: index, offset: 0, length: index.length ? index[index.length - 1]!.offset + index[index.length - 1]!.length : 0 }]
        : sel.map((e) => ({ entries: [e], offset: e.offset, length: e.length }));
      for (const run of runs) {
        const reader = new RecordReader(new StreamSource(a.range(run.offset, run.length)));
        reader.src.position = run.offset;
        for (const e of run.entries) {
          const rec = await reader.next();
          if (rec.kind !== 'entry' || rec.offset !== e.offset || !sameHead(rec.head, e)) throw mismatch(e.path);
          if (!sameEntry(await extractRecord(reader, e, true), e)) throw mismatch(e.path);
          staged.push(e); // the index's own entry: no second copy of every entry
          o.onProgress?.({ bytes, entries: staged.length });
        }
      }
      await settle();
      return staged;
    }

    // A pipe: check paths as they come, and the index against what was seen at the end.
    const src = new StreamSource(a.plaintext());
    const reader = new RecordReader(src);
    const expected = new ExpectedIndex();
    const guard = new PathGuard(folding);
    for (;;) {
      const rec = await reader.next();
      if (rec.kind === 'index') {
        await checkIndexAndTail(src, rec.offset, expected);
        await settle();
        return staged;
      }
      guard.add(rec.head.path, rec.head.type, rec.head.target);
      const keep = wanted(rec.head.path);
      const meta = await extractRecord(reader, rec.head, keep);
      expected.add(meta, rec.offset, src.position - rec.offset);
      if (keep) staged.push(meta);
      o.onProgress?.({ bytes, entries: staged.length });
    }
  } catch (err) {
    await writer.stop(); // nothing may still be writing when staging is removed
    throw err;
  }
}

/**
 * Move staged entries into DEST; on any failure undo every step already taken. Synchronous calls:
 * nothing else runs meanwhile, and a promise and thread-pool round trip per call cost 15% of a
 * restore of 3,300 files.
 */
function commit(staged: EntryMeta[], staging: string, dest: string, force: boolean): number {
  const order = [
    ...staged.filter((e) => e.type === EntryType.Dir),
    ...staged.filter((e) => e.type === EntryType.File),
    ...staged.filter((e) => e.type === EntryType.Symlink),
  ];
  const exists = (p: string) => {
    try {
      return lstatSync(p, { throwIfNoEntry: false }) ?? null;
    } catch (err) {
      throw ioError(err, p, 'read');
    }
  };
  // No-clobber pre-check so that the common conflict changes nothing at all.
  if (!force) {
    const clash: string[] = [];
    for (const e of order) {
      const st = exists(join(dest, e.path));
      if (st && !(e.type === EntryType.Dir && st.isDirectory())) clash.push(e.path);
    }
    if (clash.length) {
      throw new BackupctlError(Exit.io, `${clash.length} entr${clash.length === 1 ? 'y' : 'ies'} already exist in ${dest} (first: ${clash[0]}); nothing was restored; use --force to replace them`);
    }
  }
  // The steps taken, to undo in reverse: (position in `order`) * 4 + what was done to its final
  // path. Numbers, not a closure (and its captured strings) per entry.
  const PLACED = 0, MADE_DIR = 1, MOVED_ASIDE = 2;
  const done: number[] = [];
  const aside = join(staging, '.replaced');
  let asideCount = 0;
  const asidePath = (k: number) => join(aside, String(k));
  const moveAside = (i: number, p: string) => {
    if (asideCount === 0) mkdirSync(aside, { mode: 0o700 });
    renameSync(p, asidePath(asideCount));
    asideCount++;
    done.push(i * 4 + MOVED_ASIDE);
  };
  const undo = () => {
    let k = asideCount;
    for (const step of done.reverse()) {
      const final = join(dest, order[step >> 2]!.path);
      const what = step & 3;
      try {
        if (what === PLACED) unlinkSync(final);
        else if (what === MADE_DIR) rmdirSync(final);
        else renameSync(asidePath(--k), final);
      } catch {
        /* best effort: undo as much as can be undone */
      }
    }
  };
  const createdDirs: EntryMeta[] = [];
  // Every parent must be a real directory: a link already in DEST (sub -> /etc) is never written
  // through, even for an entry whose parent has no directory record in the archive.
  const realDirs = new Set<string>();
  const checkParents = (path: string) => {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const rel = parts.slice(0, i).join('/');
      if (realDirs.has(rel)) continue;
      const st = exists(join(dest, rel));
      if (st && !st.isDirectory()) {
        throw new BackupctlError(Exit.io, `${join(dest, rel)} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}: refusing to restore ${path} through it; nothing was restored`);
      }
      if (st) realDirs.add(rel);
    }
  };
  try {
    for (const [i, e] of order.entries()) {
      checkParents(e.path);
      const final = join(dest, e.path);
      const from = join(staging, e.path);
      if (e.type === EntryType.Dir) {
        const st = exists(final);
        if (st?.isDirectory()) continue; // merge into an existing real directory (lstat: not a link)
        if (st) moveAside(i, final);
        mkdirSync(final, { mode: 0o700 });
        done.push(i * 4 + MADE_DIR);
        createdDirs.push(e);
        continue;
      }
      const place = () => {
        if (e.type === EntryType.Symlink) {
          symlinkSync(e.target, final);
          try {
            lutimesSync(final, secs(e.mtimeNs), secs(e.mtimeNs));
          } catch {
            /* not every platform can */
          }
          return;
        }
        try {
          linkSync(from, final); // atomic no-clobber: fails with EEXIST, never overwrites
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EXDEV' && code !== 'EMLINK') throw err;
          copyFileSync(from, final, constants.COPYFILE_EXCL); // file systems without hard links
          chmodSync(final, safeMode(e.mode));
          utimesSync(final, secs(e.mtimeNs), secs(e.mtimeNs));
        }
      };
      try {
        place();
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !force) throw err;
        moveAside(i, final);
        place();
      }
      done.push(i * 4 + PLACED);
    }
  } catch (err) {
    undo();
    if (err instanceof BackupctlError) throw err;
    throw ioError(err, dest, 'restore into');
  }
  // Directory modes and times last (adding entries changes a directory's mtime), deepest first.
  for (const e of createdDirs.reverse()) {
    const final = join(dest, e.path);
    for (const step of [() => chmodSync(final, safeMode(e.mode)), () => utimesSync(final, secs(e.mtimeNs), secs(e.mtimeNs))]) {
      try {
        step();
      } catch {
        /* best effort: the content is in place */
      }
    }
  }
  return asideCount;
}
