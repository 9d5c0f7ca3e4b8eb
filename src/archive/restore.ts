// Safe extraction. Everything is written into a private staging directory inside DEST first;
// entries are moved into place only after the whole selection has been read and authenticated,
// with no-clobber links (never check-then-rename), parents verified as real directories, and
// symlinks created last, so no link (stored or pre-existing) is ever followed. Any failure or
// interruption leaves DEST as it was; a killed commit is undone by the next restore (commit.ts;
// backupctl(1) "RESTORE SAFETY").
import { lstat, mkdtemp, realpath, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { BackupctlError, Exit, corruptError, ioError, usageError } from '../errors.js';
import { makeDirs, refusesEntries, removeMadeDirs } from '../util/make-dirs.js';
import { acquireLock, lockHeld, type Lock } from '../util/lock.js';
import { checkConflicts, type FileId, commit, recoverAbandoned, removeStaging, safeMode, secs, stagingPrefix } from './commit.js';
import { RESTORE_LOCK } from './restore-names.js';
import { EntryType } from './format.js';
import type { EntryMeta, IndexEntry } from './entries.js';
import { NO_FOLDING, probeFolding, type Folding } from './name-folding.js';
import { PathGuard } from './paths.js';
import { ExpectedIndex, RecordReader, StreamSource, checkIndexAndTail, readIndex, sameEntry, sameHead } from './records.js';
import { ArchiveFile, type ArchiveStream } from './reader.js';
import { StagingWriter } from './staging.js';
import type { DamageReport } from './damage.js';
import { explainDamage } from './salvage.js';
import { salvageIntoStaging } from './salvage-restore.js';

export interface RestoreOptions {
  archive: ArchiveFile | ArchiveStream;
  dest: string;
  only?: string[];
  force?: boolean;
  /** Restore every entry that is intact and report the others (salvage-restore.ts). */
  salvage?: boolean;
  signal?: AbortSignal;
  /** `total`: the bytes of the selected files, when the index comes first (a file, not a pipe). */
  onProgress?: (p: { bytes: number; entries: number; total?: number }) => void;
}

export interface RestoreResult {
  entries: number;
  files: number;
  bytes: number;
  replaced: number;
  /** With `salvage`: what is damaged and which entries are lost. */
  damage?: DamageReport;
}

export const selects = (only: string[] | undefined, path: string) =>
  !only || only.some((o) => path === o || path.startsWith(o + '/'));
export const isAncestorOfSelection = (only: string[] | undefined, path: string) =>
  !!only && only.some((o) => o.startsWith(path + '/'));

export async function restoreArchive(o: RestoreOptions): Promise<RestoreResult> {
  const only = normaliseOnly(o.only);
  if (o.salvage) return salvageRestore(o, only);
  try {
    // From a file, the whole index is read and checked before anything is created, DEST included
    // (names that only the target's file system would take for one are checked once it is probed).
    const index = o.archive instanceof ArchiveFile ? await readIndex(o.archive) : null;
    if (index) checkEntries(index, NO_FOLDING);
    return await stageAndCommit({ ...o, source: await sourceFile(o.archive) }, only, (staging, precheck) => {
      const folding = probeStaging(staging);
      if (index && (folding.case || folding.unicode)) checkEntries(index, folding);
      return extract(o, only, staging, precheck, folding, index);
    });
  } catch (err) {
    throw await explainRefusal(o.archive, err);
  }
}

/**
 * restore --salvage (salvage-restore.ts) in the same frame: the entries are known, and their
 * conflicts checked, once the walk is over. A pattern whose entries are all lost is reported
 * with them, not as one that matches nothing.
 */
async function salvageRestore(o: RestoreOptions, only: string[] | undefined): Promise<RestoreResult> {
  const patterns = only && [...only];
  let damage: DamageReport | undefined;
  const res = await stageAndCommit({ ...o, source: await sourceFile(o.archive) }, patterns, async (staging, precheck) => {
    const sel = { keep: (p: string) => selects(only, p) || isAncestorOfSelection(only, p), chosen: (p: string) => selects(only, p) };
    const { staged, report } = await salvageIntoStaging(o.archive, sel, staging, probeStaging(staging), o.signal, o.onProgress);
    precheck(staged);
    damage = report;
    const lost = (p: string) => report.lost.some((l) => l.path !== null && selects([p], l.path));
    if (patterns) patterns.splice(0, patterns.length, ...patterns.filter((p) => !lost(p)));
    return staged;
  });
  return { ...res, damage };
}

/** The archive file being read (an archive inside DEST may be among what --force would replace). */
async function sourceFile(a: ArchiveFile | ArchiveStream): Promise<FileId | undefined> {
  return a instanceof ArchiveFile ? stat(a.path).then((st) => ({ dev: st.dev, ino: st.ino }), () => undefined) : undefined;
}

export const normaliseOnly = (only?: string[]) => only?.map((p) => p.replace(/\/+$/, '').replace(/^\.\//, ''));

/**
 * The restore frame shared by archives and repository snapshots (ops/restore-snapshot.ts): make
 * DEST, stage the selection into a private directory inside it with `extract` (which returns the
 * staged entries), then commit them; on any failure DEST is left as it was. One restore at a time
 * holds DEST (lockDest): another one's recovery, conflict check or commit never runs against a
 * commit in progress, and a failed restore never takes away a DEST another one is filling.
 */
export async function stageAndCommit(
  o: { dest: string; force?: boolean; signal?: AbortSignal; source?: FileId },
  only: string[] | undefined,
  extract: (staging: string, precheck: (selection: readonly EntryMeta[]) => void) => Promise<EntryMeta[]>,
): Promise<RestoreResult> {
  // Before anything is made inside another restore's DIR (its commit would meet it); checked
  // again once DIR is locked (lockDest).
  refuseInsideRestore(resolve(o.dest), o.dest);
  // mkdir -p; remember the topmost directory it made, to remove again on failure.
  const createdDest = makeDirs(o.dest);
  let lock: Lock | null = null;
  let staging: string | null = null;
  let done = false;
  try {
    const st = await lstat(o.dest).catch((err) => { throw ioError(err, o.dest, 'read'); });
    if (!st.isDirectory() && !st.isSymbolicLink()) throw new BackupctlError(Exit.io, `${o.dest} is not a directory`);
    const dest = await realpath(o.dest);
    // The staging directory first: it is how a DEST that takes no new entries is told apart.
    staging = await mkdtemp(stagingPrefix(dest)).catch((err) => {
      throw (err as NodeJS.ErrnoException).code === 'ENOENT' ? refusesEntries(dest) : ioError(err, dest, 'write into');
    });
    lock = await lockDest(dest, o.dest);
    recoverAbandoned(dest); // a killed restore's commit is undone before anything is compared with DEST
    const staged = await extract(staging, (sel) => checkConflicts(sel, dest, !!o.force, o.source));
    // Per pattern, and not counting the parent directories staged for other patterns (as tar).
    const unmatched = only?.filter((p) => !staged.some((e) => selects([p], e.path))) ?? [];
    if (unmatched.length) throw usageError(`nothing in the archive matches ${unmatched.join(', ')}`);
    o.signal?.throwIfAborted();
    const replaced = commit(staged, staging, dest, !!o.force, o.source);
    done = true;
    const files = staged.filter((e) => e.type === EntryType.File);
    return { entries: staged.length, files: files.length, bytes: files.reduce((a, e) => a + Number(e.size), 0), replaced };
  } finally {
    if (staging) removeStaging(staging);
    lock?.release();
    // Only the directories made here, and only while empty: never what another run put there.
    if (!done && createdDest) removeMadeDirs(o.dest, createdDest);
  }
}

/**
 * DEST/.backupctl-restore.lock (util/lock.ts), held from before the recovery to the end; then the
 * locks of the directories above DEST. A restore into a directory above DEST looks at DEST's lock
 * in turn, after taking its own, wherever it puts entries (commit.ts plan): of two that start
 * together, at least one sees the other's lock.
 */
async function lockDest(dest: string, shown: string): Promise<Lock> {
  const lock = await acquireLock(join(dest, RESTORE_LOCK), shown);
  try {
    refuseInsideRestore(dest, shown);
  } catch (err) {
    lock.release();
    throw err;
  }
  return lock;
}

/** Exit 9 while a run that may be alive restores into a directory above `dir` (up to /). */
function refuseInsideRestore(dir: string, shown: string): void {
  for (let d = dir; d !== dirname(d); ) {
    d = dirname(d);
    const held = lockHeld(join(d, RESTORE_LOCK), `${d} (above ${shown})`);
    if (held) throw held;
  }
}

/**
 * A normal restore that meets damage still refuses, but names what is damaged and lost and how
 * much --salvage would recover (a stream cannot be read again to count).
 */
async function explainRefusal(a: ArchiveFile | ArchiveStream, err: unknown): Promise<unknown> {
  if (a instanceof ArchiveFile) {
    return explainDamage(a, err, (r) => `; nothing was restored; restore --salvage would recover the ${r.intact} intact entr${r.intact === 1 ? 'y' : 'ies'}`);
  }
  if (err instanceof BackupctlError && err.code === Exit.corrupt && err.detail?.segment !== undefined) {
    return new BackupctlError(Exit.corrupt, `${err.message}; nothing was restored; restore --salvage recovers every intact entry`, err.detail);
  }
  return err;
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
 * name is the one staged, and `precheck` is given the selection before any content is read;
 * from a pipe, each head is checked as it comes.
 */
async function extract(
  o: RestoreOptions,
  only: string[] | undefined,
  staging: string,
  precheck: (sel: readonly EntryMeta[]) => void,
  folding: Folding,
  index: IndexEntry[] | null,
): Promise<EntryMeta[]> {
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
      precheck(sel);
      const total = sel.reduce((n, e) => n + (e.type === EntryType.File ? Number(e.size) : 0), 0);
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
          o.onProgress?.({ bytes, entries: staged.length, total });
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
