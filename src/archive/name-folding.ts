// Names that a file system takes for the same one: on Linux (ext4, tmpfs, xfs) every distinct
// byte string is a distinct name, while macOS (APFS, HFS+) by default and Windows (NTFS) ignore
// case, and APFS and HFS+ ignore the Unicode normal form too. Restore asks the target (probe)
// instead of assuming either; create warns about names that only such systems would merge.
import { lstatSync, openSync, closeSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';

/** What a file system ignores when it compares names. */
export interface Folding {
  case: boolean;
  unicode: boolean;
}

/** Every distinct name is distinct (Linux): only exact duplicates collide. */
export const NO_FOLDING: Folding = { case: false, unicode: false };
/** The worst of macOS and Windows: case and normal form both ignored. */
export const FOLD_ALL: Folding = { case: true, unicode: true };

/** The key under which two paths are the same name on a file system folding as `f`. */
export function foldKey(f: Folding): (path: string) => string {
  // ASCII is its own normal form: most names skip the costlier normalisation (100,000 names in a
  // directory: 55 ms of it).
  const nfc = (p: string) => (ASCII.test(p) ? p : p.normalize('NFC'));
  if (f.case && f.unicode) return (p) => nfc(nfc(p).toLowerCase());
  if (f.case) return (p) => p.toLowerCase();
  if (f.unicode) return nfc;
  return (p) => p;
}
const ASCII = /^[\x00-\x7f]*$/;

// The probe's name: an upper-case letter and a precomposed é (NFC), so that its lower-case and
// its decomposed (NFD) spellings are different byte strings.
const PROBE = '.backupctl-probe-\u00c9';
const PROBE_LOWER = '.backupctl-probe-\u00e9';
const PROBE_NFD = '.backupctl-probe-E\u0301';

/**
 * How the file system holding `dir` (an empty directory of ours) compares names: create a probe
 * file and look it up under its other spellings. Directories that fold differently from their
 * parent (ext4's per-directory casefold) follow `dir`, where staged entries are created.
 */
export function probeFolding(dir: string): Folding {
  const probe = join(dir, PROBE);
  closeSync(openSync(probe, 'wx', 0o600));
  try {
    const found = (name: string) => lstatSync(join(dir, name), { throwIfNoEntry: false }) !== undefined;
    return { case: found(PROBE_LOWER), unicode: found(PROBE_NFD) };
  } finally {
    unlinkSync(probe);
  }
}

/**
 * Names of one directory that are the same under `f`, as pairs (the first of each group with
 * each other one). Only siblings can collide: paths that differ above them are in directories
 * that are siblings themselves somewhere up the tree.
 */
export function collidingNames(names: readonly string[], f: Folding): Array<[string, string]> {
  const key = foldKey(f);
  const first = new Map<string, string>();
  const pairs: Array<[string, string]> = [];
  for (const n of names) {
    const k = key(n);
    const prev = first.get(k);
    if (prev === undefined) first.set(k, n);
    else pairs.push([prev, n]);
  }
  return pairs;
}

/**
 * Over a walk, the names that differ from a sibling only in case or normal form (which macOS or
 * Windows would merge): counted, and the first pair kept, for one warning at the end.
 */
export class FoldedNames {
  private count = 0;
  private first = '';

  /** The names of the directory at `rel` ('' for the top); null for names that are skipped. */
  note(rel: string, names: ReadonlyArray<string | null>): void {
    const pairs = collidingNames(names.filter((n): n is string => n !== null), FOLD_ALL);
    if (pairs.length === 0) return;
    if (this.count === 0) {
      const [a, b] = pairs[0]!.map((n) => (rel ? `${rel}/${n}` : n)) as [string, string];
      // Two normal forms of one name look the same: show them with their code points.
      const show = a.normalize('NFC') === b.normalize('NFC')
        ? (n: string) => JSON.stringify(n).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
        : (n: string) => JSON.stringify(n);
      this.first = `${show(a)} and ${show(b)}`;
    }
    this.count += pairs.length;
  }

  warning(): string | null {
    if (this.count === 0) return null;
    return `${this.count} name${this.count > 1 ? 's differ' : ' differs'} from another in the same directory only in case or Unicode normalisation (first: ${this.first}): ` +
      'all are archived and restore here, but a file system that ignores case or normalisation (macOS, Windows) cannot hold both, and restore refuses the archive there';
  }
}
