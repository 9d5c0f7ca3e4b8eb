// Which names collide, given how the target file system compares names (probeFolding's answer,
// forced here both ways), and the probe itself on this machine's file systems (Linux: none).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FOLD_ALL, FoldedNames, NO_FOLDING, collidingNames, probeFolding, type Folding } from '../../src/archive/name-folding.js';
import { PathGuard } from '../../src/archive/paths.js';
import { EntryType } from '../../src/archive/format.js';

const NFC = 'Caf\u00e9.txt';
const NFD = 'Cafe\u0301.txt';

function guardWith(f: Folding, paths: Array<[string, EntryType]>): void {
  const g = new PathGuard(f);
  for (const [p, t] of paths) g.add(p, t, t === EntryType.Symlink ? 'x' : '');
}

describe('PathGuard under each answer of the probe', () => {
  const cases: Array<[string, Array<[string, EntryType]>, { case: boolean; unicode: boolean }]> = [
    // name pair, which foldings merge it
    ['A.txt / a.txt', [['A.txt', EntryType.File], ['a.txt', EntryType.File]], { case: true, unicode: false }],
    ['NFC / NFD é', [[NFC, EntryType.File], [NFD, EntryType.File]], { case: false, unicode: true }],
    ['NFC É / NFD é (both)', [['CAF\u00c9.txt', EntryType.File], [NFD, EntryType.File]], { case: true, unicode: true }],
    ['Dir/x and dir (a file) ', [['Dir/x', EntryType.File], ['dir', EntryType.File]], { case: true, unicode: false }],
    ['link L, then l/x beneath it', [['L', EntryType.Symlink], ['l/x', EntryType.File]], { case: true, unicode: false }],
  ];
  for (const [name, paths, mergedBy] of cases) {
    for (const f of [NO_FOLDING, { case: true, unicode: false }, { case: false, unicode: true }, FOLD_ALL]) {
      const merged = (f.case || !mergedBy.case) && (f.unicode || !mergedBy.unicode);
      it(`${name}: ${merged ? 'refused' : 'kept apart'} when the file system folds ${JSON.stringify(f)}`, () => {
        if (merged) expect(() => guardWith(f, paths)).toThrow(/collides with another entry|parent is a|beneath it/);
        else expect(() => guardWith(f, paths)).not.toThrow();
      });
    }
  }

  it('an exact duplicate is refused whatever the file system', () => {
    for (const f of [NO_FOLDING, FOLD_ALL]) expect(() => guardWith(f, [['x', EntryType.File], ['x', EntryType.File]])).toThrow(/collides/);
  });

  it('the message says what the file system ignores', () => {
    expect(() => guardWith(FOLD_ALL, [['A', EntryType.File], ['a', EntryType.File]])).toThrow(
      'refusing to restore entry "a": it collides with another entry (the same name on this file system, which ignores case and Unicode normalisation)',
    );
    expect(() => guardWith(NO_FOLDING, [['a', EntryType.File], ['a', EntryType.File]])).toThrow(/^refusing to restore entry "a": it collides with another entry$/);
  });

  it('link targets: a symlink needs one without NUL; other entries have none', () => {
    expect(() => new PathGuard().add('l', EntryType.Symlink, '')).toThrow(/empty link target/);
    expect(() => new PathGuard().add('l', EntryType.Symlink, 'a\0b')).toThrow(/NUL/);
    expect(() => new PathGuard().add('f', EntryType.File, '/etc/passwd')).toThrow(/only a symbolic link has a link target/);
    expect(() => new PathGuard().add('d', EntryType.Dir, 'x')).toThrow(/only a symbolic link/);
    expect(() => new PathGuard().add('l', EntryType.Symlink, '../../etc/passwd')).not.toThrow(); // stored as read: never followed
  });
});

describe('collidingNames (what create warns about)', () => {
  it('pairs each later name with the first of its group', () => {
    expect(collidingNames(['A.txt', 'B', 'a.txt', NFC, NFD, 'b', 'c'], FOLD_ALL)).toEqual([['A.txt', 'a.txt'], [NFC, NFD], ['B', 'b']]);
    expect(collidingNames(['A.txt', 'a.txt', NFC, NFD], NO_FOLDING)).toEqual([]);
  });
});

describe('FoldedNames (the one warning of a walk)', () => {
  it('none, one, then several, named by the first pair with its directory', () => {
    const f = new FoldedNames();
    f.note('', ['a', 'b', null]);
    expect(f.warning()).toBeNull();
    f.note('Media', ['X.jpg', null, 'x.jpg']);
    expect(f.warning()).toMatch(/^1 name differs from another in the same directory only in case or Unicode normalisation \(first: "Media\/X\.jpg" and "Media\/x\.jpg"\): /);
    f.note('', [NFD, NFC]);
    expect(f.warning()).toMatch(/^2 names differ .*\(first: "Media\/X\.jpg" and "Media\/x\.jpg"\)/);
    const g = new FoldedNames();
    g.note('d', [NFD, NFC]);
    expect(g.warning()).toContain('(first: "d/Cafe\\u0301.txt" and "d/Caf\\u00e9.txt")');
  });
});

describe('probeFolding on this machine', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'backupctl-probe-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('Linux file systems (here ext4 or tmpfs under the temp dir, and /dev/shm) fold nothing; the probe leaves nothing behind', async () => {
    expect(probeFolding(dir)).toEqual(NO_FOLDING);
    expect(await readdir(dir)).toEqual([]);
    const shm = await mkdtemp('/dev/shm/backupctl-probe-').catch(() => null);
    if (shm) {
      try {
        expect(probeFolding(shm)).toEqual(NO_FOLDING);
      } finally {
        await rm(shm, { recursive: true, force: true });
      }
    }
  });
});
