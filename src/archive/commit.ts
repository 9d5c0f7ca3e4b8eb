// The commit phase of a restore (restore.ts): staged entries are moved from the private staging
// directory into DEST, each with an atomic no-clobber step, through directories reached without
// following links (dir-handles.ts). A journal written before the first step (commit-journal.ts)
// lets a later restore undo a commit that was killed; a failure undoes it at once, the same way.
import { utimeArg } from './times.js';
import {
  chmodSync, closeSync, constants, copyFileSync, fsyncSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, opendirSync, readSync,
  readdirSync, readlinkSync, renameSync, rmSync, rmdirSync, symlinkSync, unlinkSync, utimesSync, type Stats,
} from 'node:fs';
import { basename, join } from 'node:path';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { lockHeld } from '../util/lock.js';
import { RESTORE_LOCK, STAGING, STAGING_NAME, restoreKeeps } from './restore-names.js';
import { identityAlive, processIdentity } from '../util/process-identity.js';
import { Had, REPLACED, isCommitted, killPointsSet, markCommitted, readJournal, testKillPoint, writeJournal, type Journal, type JournalStep, type Times } from './commit-journal.js';
import { DirHandles, splitPath } from './dir-handles.js';
import { syncDirSync } from '../util/fsutil.js';
import { EntryType } from './format.js';
import type { EntryMeta } from './entries.js';

/** A recorded time as utimes takes it, exactly as the platform allows (times.ts). */
export const secs = utimeArg;
/** Restored modes keep permissions and the sticky bit, never setuid/setgid. */
export const safeMode = (mode: number) => mode & 0o1777;

/** Mode of a parent directory the archive has no record for (as mkdir -p; the umask applies). */
const IMPLIED_DIR_MODE = 0o755;

/** A file by device and inode: the archive a restore reads, which --force never replaces. */
export interface FileId {
  dev: number;
  ino: number;
}

/** A step of the commit: an entry, or a missing parent directory (`meta` null). */
interface Step extends JournalStep {
  meta: EntryMeta | null;
}

/** The prefix for mkdtemp of this process's staging directory in DEST. */
export const stagingPrefix = (dest: string) => join(dest, `${STAGING}${processIdentity()}-`);
const exists = (p: string): Stats | null => {
  try {
    return lstatSync(p, { throwIfNoEntry: false }) ?? null;
  } catch (err) {
    throw ioError(err, p, 'read');
  }
};
const code = (err: unknown) => (err as NodeJS.ErrnoException).code;
const entries = (n: number) => `${n} entr${n === 1 ? 'y' : 'ies'}`;

function nonEmptyDir(p: string): boolean {
  const d = opendirSync(p);
  try {
    return d.readSync() !== null;
  } finally {
    d.closeSync();
  }
}

/**
 * The steps, in order: directories (with the missing parents, parents first), then files, then
 * symlinks; each marked with what is at its path now. Throws, before anything is changed, on a
 * name restore keeps for itself (restoreKeeps) and on every conflict the restore would meet:
 * existing entries without --force, a non-empty directory where --force would put a file or link
 * (it never deletes a tree it was not asked to replace), something other than a directory where a
 * missing parent would go, the archive being read (`source`) where --force would put an entry of
 * its own.
 */
function plan(staged: readonly EntryMeta[], dest: string, force: boolean, source?: FileId): Journal & { steps: Step[] } {
  const dirs = new Map<string, Step>();
  const files: Step[] = [];
  const links: Step[] = [];
  for (const e of staged) {
    const step: Step = { type: e.type, path: e.path, target: e.type === EntryType.Symlink ? e.target : '', had: Had.nothing, meta: e };
    if (e.type === EntryType.Dir) dirs.set(e.path, step);
    else (e.type === EntryType.File ? files : links).push(step);
  }
  for (const e of staged) {
    for (let i = e.path.indexOf('/'); i > 0; i = e.path.indexOf('/', i + 1)) {
      const p = e.path.slice(0, i);
      if (!dirs.has(p)) dirs.set(p, { type: EntryType.Dir, path: p, target: '', had: Had.nothing, meta: null });
    }
  }
  const depth = (p: string) => { let n = 0; for (let i = p.indexOf('/'); i >= 0; i = p.indexOf('/', i + 1)) n++; return n; };
  const order = [...dirs.values()].map((s) => [depth(s.path), s] as const).sort((a, b) => a[0] - b[0]).map(([, s]) => s);
  order.push(...files, ...links);
  for (const s of order) {
    const name = s.path.slice(s.path.lastIndexOf('/') + 1);
    const what = restoreKeeps(name);
    if (what) {
      throw new BackupctlError(Exit.io, `refusing to restore ${JSON.stringify(s.meta ? s.path : firstUnder(staged, s.path))}: restore keeps the name ${name} for ${what} in every directory it restores into; nothing was restored; --only restores the other entries`);
    }
  }

  // Only entries whose parent is already a real directory can meet anything; beneath a
  // directory still to be made, everything is new (and is never looked up through a link).
  const real = new Set<string>(['']);
  const clash: string[] = [];
  const trees: string[] = [];
  for (const s of order) {
    const [parent] = splitPath(s.path);
    if (!real.has(parent)) continue;
    const p = join(dest, s.path);
    const st = exists(p);
    if (!st) continue;
    if (s.type === EntryType.Dir && st.isDirectory()) {
      // Not into a directory another restore is filling (restore.ts lockDest).
      const inner = lockHeld(join(p, RESTORE_LOCK), `${p} (where this restore puts entries)`);
      if (inner) throw inner;
      s.had = Had.dir;
      s.times = times(st);
      real.add(s.path);
      continue;
    }
    s.had = Had.other;
    if (force && source && st.ino === source.ino && st.dev === source.dev) {
      throw new BackupctlError(Exit.io, `refusing to replace ${p} with the entry of that name: it is the archive being restored; nothing was restored`);
    }
    if (!s.meta) {
      throw new BackupctlError(Exit.io, `${p} is ${st.isSymbolicLink() ? 'a symbolic link' : 'not a directory'}: refusing to restore ${firstUnder(staged, s.path)} through it; nothing was restored`);
    } else if (!force) clash.push(s.path);
    else if (st.isDirectory() && nonEmptyDir(p)) trees.push(s.path);
  }
  if (clash.length) {
    throw new BackupctlError(Exit.io, `${entries(clash.length)} already exist${clash.length === 1 ? 's' : ''} in ${dest} (first: ${clash[0]}); nothing was restored; use --force to replace them`);
  }
  if (trees.length) {
    throw new BackupctlError(Exit.io, `refusing to replace the non-empty directory ${join(dest, trees[0]!)}${trees.length > 1 ? ` (and ${trees.length - 1} more)` : ''} with a file or link: --force replaces files and links, never a directory tree; nothing was restored`);
  }
  return { destTimes: times(exists(dest)!), steps: order };
}

const times = (st: Stats): Times => [st.atimeMs, st.mtimeMs];

/** The conflicts the commit would meet, checked from the index before any data is read (throws). */
export function checkConflicts(selection: readonly EntryMeta[], dest: string, force: boolean, source?: FileId): void {
  plan(selection, dest, force, source);
}

const firstUnder = (staged: readonly EntryMeta[], dir: string) => staged.find((e) => e.path.startsWith(dir + '/'))!.path;

/**
 * Move staged entries into DEST; returns how many existing entries --force replaced. Synchronous
 * calls: nothing else runs meanwhile, and a promise and thread-pool round trip per call cost 15%
 * of a restore of 3,300 files.
 */
export function commit(staged: EntryMeta[], staging: string, dest: string, force: boolean, source?: FileId): number {
  const journal = plan(staged, dest, force, source);
  const order = journal.steps;
  const handles = openHandles(dest);
  try {
    writeJournal(staging, dest, journal);
    const stagingRel = basename(staging);
    const aside = join(staging, REPLACED);
    /** Steps whose original was moved aside. */
    const movedAside: number[] = [];
    /** Move what is at `final` to .replaced/I; a directory only if empty (never a tree). */
    const moveAside = (i: number, s: Step, final: string) => {
      if (movedAside.length === 0) mkdirSync(aside, { mode: 0o700 });
      const to = join(aside, String(i));
      renameSync(final, to);
      movedAside.push(i);
      // Checked again after the move: it may have been made or filled since the plan (a tree moved
      // aside would go with the staging directory).
      if (lstatSync(to).isDirectory() && nonEmptyDir(to)) {
        throw new BackupctlError(Exit.io, s.type === EntryType.Dir
          ? `${join(dest, s.path)} was made during the restore and is not empty: --force replaces files, links and empty directories, never a directory tree; nothing was restored`
          : `refusing to replace the non-empty directory ${join(dest, s.path)} with a file or link: --force replaces files and links, never a directory tree; nothing was restored`);
      }
    };
    try {
      for (let i = 0; i < order.length; i++) {
        if (killPointsSet) testKillPoint(`step-${i}`);
        const s = order[i]!;
        const [parent, name] = splitPath(s.path);
        const final = handles.at(parent, name);
        if (s.type === EntryType.Dir) {
          if (s.had === Had.dir) {
            handles.self(s.path); // still a real directory (opened without following a link)
            continue;
          }
          const make = () => mkdirSync(final, { mode: s.meta ? 0o700 : IMPLIED_DIR_MODE });
          try {
            make();
          } catch (err) {
            if (code(err) !== 'EEXIST' || !force || !s.meta) throw err;
            moveAside(i, s, final);
            make();
          }
          continue;
        }
        const from = `${handles.self(stagingRel)}/${s.path}`;
        try {
          place(s, from, final);
        } catch (err) {
          if (code(err) !== 'EEXIST' || !force) throw err;
          moveAside(i, s, final);
          place(s, from, final);
        }
      }
      syncReplacements(order, movedAside, handles);
    } catch (err) {
      undo(journal, staging, handles);
      if (err instanceof BackupctlError) throw err;
      // A directory of DEST that changed is named; a step's own path is a /proc/self/fd one.
      const path = (err as NodeJS.ErrnoException).path;
      throw ioError(err, path?.startsWith(dest) ? path : dest, 'restore into');
    }
    // Directory modes and times last (adding entries changes a directory's mtime), deepest first.
    for (let i = order.length - 1; i >= 0; i--) {
      const e = order[i]!.meta;
      if (e?.type !== EntryType.Dir || order[i]!.had === Had.dir) continue;
      try {
        const self = handles.self(e.path);
        chmodSync(self, safeMode(e.mode));
        utimesSync(self, secs(e.mtimeNs), secs(e.mtimeNs));
      } catch {
        /* best effort: the content is in place */
      }
    }
    markCommitted(staging);
    return movedAside.length;
  } finally {
    handles.close();
  }
}

/**
 * What replaces an original is on disk before the "committed" mark lets the original go with the
 * staging directory: staged content is not synced, and a file system may write a file's data long
 * after its name (ext4's delayed allocation, up to 30 s), so a power loss just after the removal
 * left an empty file where the original had been. Each replacing file, then each directory it is
 * in; a failure undoes the commit like any other.
 */
function syncReplacements(order: readonly Step[], moved: readonly number[], handles: DirHandles): void {
  const dirs = new Set<string>();
  for (const i of moved) {
    const [parent, name] = splitPath(order[i]!.path);
    if (order[i]!.type === EntryType.File) {
      const fd = openSync(handles.at(parent, name), constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
    }
    dirs.add(parent);
  }
  for (const d of dirs) syncDirSync(handles.self(d));
}

function openHandles(dest: string): DirHandles {
  try {
    return new DirHandles(dest);
  } catch (err) {
    throw ioError(err, dest, 'restore into');
  }
}

/** Create a file (a hard link to its staged copy) or a symlink at `final`; never overwrites. */
function place(s: Step, from: string, final: string): void {
  const e = s.meta!;
  if (s.type === EntryType.Symlink) {
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
    const c = code(err);
    if (c !== 'EPERM' && c !== 'ENOTSUP' && c !== 'EXDEV' && c !== 'EMLINK') throw err;
    copyFileSync(from, final, constants.COPYFILE_EXCL); // file systems without hard links
    chmodSync(final, safeMode(e.mode));
    utimesSync(final, secs(e.mtimeNs), secs(e.mtimeNs));
  }
}

/**
 * Undo the steps of a commit that did not finish, last first: remove what it made (a file only if
 * it is the staged file or a copy of it, a link only if it points where the archive said, a
 * directory only if empty), put every original --force moved aside back under its name, and give
 * the directories merged into their times back. Where an original was there but has not been
 * moved aside, what is there may be that original: it is left.
 */
function undo(j: Journal, staging: string, handles: DirHandles): void {
  const stagingRel = basename(staging);
  const aside = join(staging, REPLACED);
  let kept = 0;
  for (let i = j.steps.length - 1; i >= 0; i--) {
    if (killPointsSet) testKillPoint(`undo-${i}`);
    const s = j.steps[i]!;
    const original = join(aside, String(i));
    const moved = exists(original) !== null;
    let final: string | null = null;
    try {
      final = handles.at(...splitPath(s.path));
    } catch {
      /* its parent is gone or not a directory: nothing of this restore is there */
    }
    const st = final ? exists(final) : null;
    try {
      if (final && st && s.had !== Had.dir) {
        if (s.type === EntryType.Dir) {
          if (st.isDirectory()) {
            rmdirSync(final);
            handles.forget(s.path);
          }
        } else if (made(s, st, final, `${handles.self(stagingRel)}/${s.path}`, moved || s.had === Had.nothing)) unlinkSync(final);
      }
      if (moved) {
        if (!final || exists(final)) throw new Error('in the way');
        renameSync(original, final);
      }
    } catch {
      if (moved) kept++; // left in .replaced: the staging directory is kept (removeStaging)
    }
  }
  // Deepest first (steps are in depth order), DEST last: removing entries changed them.
  const back = (rel: string, [a, m]: Times) => {
    try {
      utimesSync(handles.self(rel), a / 1000, m / 1000);
    } catch {
      /* best effort: only times */
    }
  };
  for (let i = j.steps.length - 1; i >= 0; i--) if (j.steps[i]!.times) back(j.steps[i]!.path, j.steps[i]!.times!);
  back('', j.destTimes);
  if (kept) {
    throw new BackupctlError(Exit.io, `an interrupted restore could not put back ${entries(kept)} it replaced; they are kept in ${aside} (numbered as the steps of ${join(staging, 'journal')})`);
  }
}

/** Is `st` at `final` what this restore made for step `s`? `sure`: nothing else can be there. */
function made(s: JournalStep, st: Stats, final: string, staged: string, sure: boolean): boolean {
  if (s.type === EntryType.Symlink) return sure && st.isSymbolicLink() && readlinkSync(final) === s.target;
  if (!st.isFile()) return false;
  const mine = exists(staged);
  if (!mine) return false;
  if (mine.ino === st.ino && mine.dev === st.dev) return true;
  // A copy (file systems without hard links), possibly cut short by the kill.
  return sure && st.size <= mine.size && samePrefix(final, staged, st.size);
}

function samePrefix(a: string, b: string, n: number): boolean {
  const fa = openSync(a, constants.O_RDONLY | constants.O_NOFOLLOW);
  const fb = openSync(b, constants.O_RDONLY);
  try {
    const ba = Buffer.allocUnsafe(1 << 16);
    const bb = Buffer.allocUnsafe(1 << 16);
    for (let off = 0; off < n; ) {
      const k = readSync(fa, ba, 0, Math.min(ba.length, n - off), off);
      if (k === 0 || readSync(fb, bb, 0, k, off) !== k || !ba.subarray(0, k).equals(bb.subarray(0, k))) return false;
      off += k;
    }
    return true;
  } finally {
    closeSync(fa);
    closeSync(fb);
  }
}

/**
 * Remove a staging directory, unless it still holds originals an undo could not put back (those
 * stay for the user, or for the next restore into DEST to try again). Best effort.
 */
export function removeStaging(staging: string): void {
  try {
    if (!isCommitted(staging) && readdirSync(join(staging, REPLACED)).length) return;
  } catch {
    /* no originals moved aside */
  }
  removeTree(staging);
}

/**
 * rm -rf, best effort. The synchronous rm walks the tree natively: for 100,000 staged files the
 * promise version took 280 MB (a promise per entry, all at once) and three times as long.
 */
function removeTree(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    /* best effort: a staging directory left is removed by a later restore into DEST */
  }
}

/**
 * Staging directories in DEST whose owner is dead: a commit they were in is finished (journal
 * marked committed) or undone (journal without the mark), then they are removed. Each is first
 * renamed to carry this process's identity, so two restores never recover the same one and a
 * recovery that is killed in turn is taken up again by the next. Live owners' are not touched.
 */
export function recoverAbandoned(dest: string): void {
  let names: string[];
  try {
    names = readdirSync(dest);
  } catch (err) {
    throw ioError(err, dest, 'read');
  }
  for (const name of names) {
    const m = STAGING_NAME.exec(name);
    if (!m || identityAlive(m[1]!)) continue;
    const claimed = join(dest, `${STAGING}${processIdentity()}-${m[2]}`);
    try {
      renameSync(join(dest, name), claimed);
    } catch (err) {
      if (code(err) === 'ENOENT') continue; // another restore took it
      throw ioError(err, join(dest, name), 'recover');
    }
    if (!isCommitted(claimed)) {
      const j = readJournal(claimed);
      if (j) {
        const handles = openHandles(dest);
        try {
          undo(j, claimed, handles);
        } finally {
          handles.close();
        }
      }
    }
    removeStaging(claimed);
  }
}
