// DirHandles (archive/dir-handles.ts): a directory of DEST swapped for a link after it was first
// reached. Through /proc/self/fd (Linux) the swap changes nothing; with paths (other systems) the
// next step is refused, as the device and inode no longer match.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdtempSync, mkdirSync, readdirSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DirHandles } from '../../src/archive/dir-handles.js';

let root: string;
let dest: string;
let outside: string;
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'backupctl-handles-'));
  dest = join(root, 'dest');
  outside = join(root, 'outside');
  mkdirSync(join(dest, 'sub', 'deeper'), { recursive: true });
  mkdirSync(outside);
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const swap = (rel: string) => {
  renameSync(join(dest, rel), join(dest, `${rel}.real`));
  symlinkSync(outside, join(dest, rel));
};

describe.runIf(process.platform === 'linux')('through /proc/self/fd', () => {
  it('keeps writing into the directory first opened', () => {
    const h = new DirHandles(dest, true);
    writeFileSync(h.at('sub', 'one'), '1');
    swap('sub');
    writeFileSync(h.at('sub', 'two'), '2');
    writeFileSync(h.at('sub/deeper', 'three'), '3');
    h.close();
    expect(readdirSync(outside)).toEqual([]);
    expect(readdirSync(join(dest, 'sub.real')).sort()).toEqual(['deeper', 'one', 'two']);
    expect(readdirSync(join(dest, 'sub.real', 'deeper'))).toEqual(['three']);
  });

  it('never opens a link as a directory', () => {
    swap('sub');
    const h = new DirHandles(dest, true);
    expect(() => h.at('sub', 'x')).toThrow(expect.objectContaining({ code: 'ELOOP' }));
    h.close();
  });
});

describe('with paths', () => {
  it('refuses the step after a swap (ELOOP), and a link from the start', () => {
    const h = new DirHandles(dest, false);
    expect(h.at('sub/deeper', 'x')).toBe(join(dest, 'sub', 'deeper') + '/x');
    swap('sub');
    expect(() => h.at('sub/deeper', 'y')).toThrow(expect.objectContaining({ code: 'ELOOP' }));
    expect(() => new DirHandles(dest, false).at('sub', 'z')).toThrow(expect.objectContaining({ code: 'ELOOP' }));
    expect(readdirSync(outside)).toEqual([]);
  });

  it('refuses a directory replaced by another real directory (same path, other inode)', () => {
    const h = new DirHandles(dest, false);
    h.at('sub', 'x');
    renameSync(join(dest, 'sub'), join(dest, 'sub.old'));
    mkdirSync(join(dest, 'sub'));
    expect(() => h.at('sub', 'y')).toThrow(/changed during the restore/);
  });
});
