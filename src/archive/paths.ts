// Which entries may be restored. An archive is untrusted input (anyone holding the public
// recipients can write one), so every name, type and link target is checked before anything is
// written.
import { corruptError } from '../errors.js';
import { EntryType } from './format.js';
import { NO_FOLDING, foldKey, type Folding } from './name-folding.js';

const refusal = (path: string, why: string) => corruptError(`refusing to restore entry ${JSON.stringify(path)}: ${why}`);

export function checkPath(path: string): void {
  const bad = (why: string) => refusal(path, why);
  if (path.startsWith('/') || /^[A-Za-z]:/.test(path)) throw bad('absolute path');
  if (path.includes('\\') || path.includes('\0')) throw bad('backslash or NUL in path');
  for (const c of path.split('/')) {
    if (c === '..') throw bad('it climbs out of the target directory');
    if (c === '' || c === '.') throw bad('empty or "." path component');
  }
}

/**
 * A symbolic link's target is stored as it was read (absolute or climbing targets are legitimate:
 * nothing is ever written through a link); it must be something a link can hold. Other entries
 * have none.
 */
export function checkTarget(path: string, type: EntryType, target: string): void {
  if (type !== EntryType.Symlink) {
    if (target !== '') throw refusal(path, 'only a symbolic link has a link target');
  } else if (target === '' || target.includes('\0')) {
    throw refusal(path, 'empty link target or NUL in it');
  }
}

/**
 * Incremental checks across entries: each name and link target, duplicates (and names the
 * target file system takes for the same one: `folding`, see name-folding.ts), paths through links
 * or files.
 */
export class PathGuard {
  private readonly key: (path: string) => string;
  private readonly collision: string;
  private seen = new Map<string, EntryType>();
  /** Paths that some entry needs to be a directory (its ancestors), in whatever order they come. */
  private ancestors = new Set<string>();

  constructor(folding: Folding = NO_FOLDING) {
    this.key = foldKey(folding);
    const ignores = [folding.case && 'case', folding.unicode && 'Unicode normalisation'].filter(Boolean).join(' and ');
    this.collision = `it collides with another entry${ignores ? ` (the same name on this file system, which ignores ${ignores})` : ''}`;
  }

  add(path: string, type: EntryType, target: string): void {
    checkPath(path);
    checkTarget(path, type, target);
    const key = this.key(path);
    if (this.seen.has(key)) throw refusal(path, this.collision);
    const parts = key.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = this.seen.get(parts.slice(0, i).join('/'));
      if (parent !== undefined && parent !== EntryType.Dir) {
        throw refusal(path, `its parent is a ${parent === EntryType.Symlink ? 'symbolic link' : 'file'} in the archive`);
      }
      this.ancestors.add(parts.slice(0, i).join('/'));
    }
    if (type !== EntryType.Dir && this.ancestors.has(key)) {
      throw refusal(path, 'other entries lie beneath it but it is not a directory');
    }
    this.seen.set(key, type);
  }
}
