// mkdir -p, one level at a time, with each level's own answer. Node's recursive mkdir loops
// forever where mkdir(2) says ENOENT under a parent that exists (/proc: 100% CPU, deaf to
// Ctrl-C, as it runs on the thread pool) and reports a read-only file system as ENOENT.
import { mkdirSync, rmdirSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { BackupctlError, Exit, ioError } from '../errors.js';

/** ENOENT from creating an entry in a directory that exists: the file system (proc, sys) takes no new entries. */
export function refusesEntries(dir: string): BackupctlError {
  return new BackupctlError(Exit.io, `cannot create anything in ${dir}: its file system does not allow new entries`);
}

/** Create `path` and its missing parents; returns the topmost directory this call made, if any. */
export function makeDirs(path: string): string | undefined {
  const missing: string[] = [];
  for (let p = resolve(path); ; p = dirname(p)) {
    let st;
    try {
      st = statSync(p, { throwIfNoEntry: false }); // following links, as mkdir -p does
    } catch (err) {
      throw ioError(err, p, 'read');
    }
    if (st) {
      if (!st.isDirectory()) throw new BackupctlError(Exit.io, `${p} is not a directory`);
      break;
    }
    missing.push(p);
    if (dirname(p) === p) break;
  }
  let made: string | undefined;
  for (const p of missing.reverse()) {
    try {
      mkdirSync(p);
      made ??= p;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && statSync(p, { throwIfNoEntry: false })?.isDirectory()) continue; // made meanwhile by another run
      if (code === 'ENOENT') throw refusesEntries(dirname(p)); // its parent exists: checked or made just above
      throw ioError(err, p, 'create directory');
    }
  }
  return made;
}

/**
 * Undo makeDirs(path), which made `topmost` and everything below it down to `path`: each of
 * those directories is removed, deepest first, while it is empty. One that is not (another run
 * restores into it or beside it now) stays, with everything above it.
 */
export function removeMadeDirs(path: string, topmost: string): void {
  for (let p = resolve(path); ; p = dirname(p)) {
    try {
      rmdirSync(p);
    } catch {
      return;
    }
    if (p === topmost || dirname(p) === p) return;
  }
}
