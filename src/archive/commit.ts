// The commit phase of a restore (restore.ts): staged entries are moved from the private staging
// directory into DEST, each with an atomic no-clobber step, and every step is undone on failure.
import { chmodSync, constants, copyFileSync, linkSync, lstatSync, lutimesSync, mkdirSync, renameSync, rmdirSync, symlinkSync, unlinkSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { EntryType } from './format.js';
import type { EntryMeta } from './entries.js';

export const secs = (ns: bigint) => Number(ns) / 1e9;
/** Restored modes keep permissions and the sticky bit, never setuid/setgid. */
export const safeMode = (mode: number) => mode & 0o1777;

/**
 * Move staged entries into DEST; on any failure undo every step already taken. Synchronous calls:
 * nothing else runs meanwhile, and a promise and thread-pool round trip per call cost 15% of a
 * restore of 3,300 files.
 */
export function commit(staged: EntryMeta[], staging: string, dest: string, force: boolean): number {
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
