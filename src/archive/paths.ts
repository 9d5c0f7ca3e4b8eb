// Which entry paths may be restored. An archive is untrusted input (anyone holding the public
// recipients can write one), so every path is checked before anything is written.
import { corruptError } from '../errors.js';
import { EntryType } from './format.js';

/** The key two paths collide under on case-insensitive or normalising file systems. */
const foldKey = (p: string) => p.normalize('NFC').toLowerCase().normalize('NFC');

export function checkPath(path: string): void {
  const bad = (why: string) => corruptError(`refusing to restore entry ${JSON.stringify(path)}: ${why}`);
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) throw bad('absolute path');
  if (path.includes('\\') || path.includes('\0')) throw bad('backslash or NUL in path');
  for (const c of path.split('/')) {
    if (c === '..') throw bad('it climbs out of the target directory');
    if (c === '' || c === '.') throw bad('empty or "." path component');
  }
}

/** Incremental checks across entries: duplicates, case/Unicode collisions, paths through links or files. */
export class PathGuard {
  private seen = new Map<string, EntryType>();
  /** Paths that some entry needs to be a directory (its ancestors), in whatever order they come. */
  private ancestors = new Set<string>();

  add(path: string, type: EntryType): void {
    checkPath(path);
    const key = foldKey(path);
    const prev = this.seen.get(key);
    if (prev !== undefined) {
      throw corruptError(`refusing to restore entry ${JSON.stringify(path)}: it collides with another entry (same name after case or Unicode normalisation)`);
    }
    const parts = key.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = this.seen.get(parts.slice(0, i).join('/'));
      if (parent !== undefined && parent !== EntryType.Dir) {
        throw corruptError(`refusing to restore entry ${JSON.stringify(path)}: its parent is a ${parent === EntryType.Symlink ? 'symbolic link' : 'file'} in the archive`);
      }
      this.ancestors.add(parts.slice(0, i).join('/'));
    }
    if (type !== EntryType.Dir && this.ancestors.has(key)) {
      throw corruptError(`refusing to restore entry ${JSON.stringify(path)}: other entries lie beneath it but it is not a directory`);
    }
    this.seen.set(key, type);
  }
}
