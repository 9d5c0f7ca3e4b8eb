// Hostile archives: anyone holding the public recipients can write one, and the CLI never makes
// these paths, so they are built through the library's writer. Restore (from a file and from
// standard input) must refuse each with exit 5 and write nothing, inside DIR or outside it.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdir, readdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import { STACK_TRACE, exists, makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { craftArchive, type EntrySpec } from '../support/craft.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
/** Where escaping entries would land; must stay empty. */
let outside: string;

/** Write an archive holding exactly `specs`, in that order, for the test's recovery code. */
function craft(name: string, specs: EntrySpec[]): Promise<string> {
  return craftArchive(join(home, `${name}.bkp`), [recipientFromEntry(recoveryRecipientEntry(rc.code, 'crafted'))], specs);
}

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-core-trav-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
});
afterAll(() => cleanup());
beforeEach(async () => {
  outside = join(home, `outside-${Math.random().toString(36).slice(2)}`);
  await mkdir(outside);
});

/** Home's entries that restores may legitimately leave: everything else appeared from an escape. */
async function strayInHome(): Promise<string[]> {
  return (await readdir(home)).filter((n) => !/^(config|code\.txt|outside-.*|.*\.bkp|dest-.*)$/.test(n));
}

async function expectRefused(file: string, why: RegExp) {
  const code = ['--recovery-code-file', rc.file];
  // From the file and from standard input, each into a new DIR (which must not be left behind)
  // and into one with content (which must be unchanged): four independent runs, started together.
  await Promise.all(([
    ['file', ['restore', file, '-d'], {}],
    ['stdin', ['restore', '-', '-d'], { inputFile: file }],
  ] as const).map(async ([how, args, opts]) => {
    const fresh = join(home, `dest-${how}-${Math.random().toString(36).slice(2)}`);
    const used = join(home, `dest-used-${how}-${Math.random().toString(36).slice(2)}`);
    await mkdir(join(used, 'a'), { recursive: true });
    await writeFile(join(used, 'a', 'mine.txt'), 'mine\n');
    const before = await snapshot(used);
    const [r, u] = await Promise.all([
      runCli([...args, fresh, ...code], { configDir, ...opts }),
      runCli([...args, used, ...code], { configDir, ...opts }),
    ]);
    expect(r.exitCode, `${how}: ${r.stderr}`).toBe(5);
    expect(r.stderr, how).toMatch(why);
    expect(r.stderr).toMatch(/^backupctl: [^\n]+\n$/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
    expect(await exists(fresh), how).toBe(false);
    expect(u.exitCode, `${how} (existing DIR): ${u.stderr}`).toBe(5);
    expect(await snapshot(used), how).toEqual(before);
  }));
  expect(await readdir(outside)).toEqual([]);
  expect(await strayInHome()).toEqual([]);
}

describe('entries that would escape DIR are refused (exit 5, nothing written)', () => {
  it('../x', async () => {
    await expectRefused(await craft('dotdot', [{ path: 'ok.txt' }, { path: '../escaped.txt' }]), /climbs out of the target directory/);
  });

  it('an absolute path', async () => {
    const abs = join(outside, 'abs.txt');
    await expectRefused(await craft('absolute', [{ path: abs }]), /absolute path/);
    expect(await exists(abs)).toBe(false);
  });

  it('a/../../x', async () => {
    await expectRefused(await craft('inner-dotdot', [{ path: 'a', dir: true }, { path: 'a/../../escaped.txt' }]), /climbs out/);
  });

  it('a symlink a -> OUTSIDE followed by a/x', async () => {
    await expectRefused(await craft('link-then-child', [{ path: 'a', link: outside }, { path: 'a/x' }]), /parent is a symbolic link/);
  });

  it('a/x first, then a symlink a -> OUTSIDE', async () => {
    await expectRefused(await craft('child-then-link', [{ path: 'a', dir: true }, { path: 'a/x' }, { path: 'b', link: outside }, { path: 'a', link: outside }]), /collides|not a directory/);
    await expectRefused(await craft('child-then-link2', [{ path: 'a/x' }, { path: 'a', link: outside }]), /not a directory/);
  });

  it('a file that is also a parent: f then f/x', async () => {
    await expectRefused(await craft('file-parent', [{ path: 'f' }, { path: 'f/x' }]), /parent is a file/);
  });
});

// Names that differ only in case or normal form collide only where the target's file system
// ignores that (see test/e2e/restore-names.test.ts and test/unit/name-folding.test.ts).
describe('entries that collide are refused (exit 5)', () => {
  it('a duplicated path', async () => {
    await expectRefused(await craft('dup', [{ path: 'x.txt', data: 'one' }, { path: 'x.txt', data: 'two' }]), /collides with another entry/);
  });
});

describe('links already in DIR are never written through', () => {
  /** DIR/sub -> OUTSIDE before the restore. */
  async function destWithLink(): Promise<string> {
    const dest = join(home, `dest-prelink-${Math.random().toString(36).slice(2)}`);
    await mkdir(dest);
    await symlink(outside, join(dest, 'sub'));
    return dest;
  }
  const code = () => ['--recovery-code-file', rc.file];

  for (const [name, specs] of [
    ['archive has the dir sub and sub/x', [{ path: 'sub', dir: true }, { path: 'sub/x' }]],
    ['archive has only sub/x (no dir entry)', [{ path: 'sub/x' }]],
    ['archive has only the dir sub/deeper', [{ path: 'sub/deeper', dir: true }]],
    ['archive has sub/deeper/x', [{ path: 'sub/deeper/x' }]],
  ] as Array<[string, EntrySpec[]]>) {
    it(name, async () => {
      const file = await craft(name.replace(/\W+/g, '-'), specs);
      for (const [how, args, opts] of [
        ['file', ['restore', file], {}],
        ['stdin', ['restore', '-'], { inputFile: file }],
      ] as const) {
        const dest = await destWithLink();
        const before = await snapshot(dest);
        const r = await runCli([...args, '-d', dest, ...code()], { configDir, ...opts });
        expect(r.exitCode, `${how}: ${r.stderr}`).not.toBe(0);
        expect([5, 6], `${how}: ${r.stderr}`).toContain(r.exitCode);
        expect(r.stderr).toMatch(/^backupctl: [^\n]+\n$/);
        expect(r.stderr).toMatch(/sub/);
        expect(await readdir(outside), how).toEqual([]);
        expect(await snapshot(dest), how).toEqual(before);
      }
    });
  }

  it('--force replaces the link itself, still never writing through it', async () => {
    const file = await craft('force-sub', [{ path: 'sub', dir: true }, { path: 'sub/x' }]);
    const dest = await destWithLink();
    const r = await runCli(['restore', file, '-d', dest, '--force', ...code()], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readdir(outside)).toEqual([]);
    const got = await snapshot(dest, { times: false });
    expect(got['sub']!.type).toBe('dir');
    expect(got['sub/x']!.type).toBe('file');
  });
});

describe('a well-formed crafted archive restores (the writer used above is sound)', () => {
  it('restores what it holds', async () => {
    const file = await craft('sound', [{ path: 'a', dir: true }, { path: 'a/x', data: 'hello' }, { path: 'l', link: 'a/x' }]);
    const dest = join(home, 'dest-sound');
    const r = await runCli(['restore', file, '-d', dest, '--recovery-code-file', rc.file], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    const got = await snapshot(dest, { times: false });
    expect(Object.keys(got)).toEqual(['a', 'a/x', 'l']);
    expect(got['l']!.target).toBe('a/x');
  });
});
