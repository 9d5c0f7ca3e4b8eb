// What a restore may do to DIR. Two restores into one DIR at once (backupctl(1) RESTORE SAFETY
// "One restore at a time"): the first, stopped in its commit (BACKUPCTL_TEST_KILL_AT=
// step-0:SIGSTOP), holds DIR; a second one, of another archive or a repository snapshot, into a
// new or an existing DIR, is exit 9 naming it and changes nothing; the first then completes
// alone. A failed restore removes only the directories it made and only while empty, never a
// sibling DIR another restore filled meanwhile; a killed restore's lock is taken over by the
// next. A restore inside another one's DIR is exit 9, and one above another's DIR too when it has
// entries to put there. --force never replaces the archive being restored when it lies in DIR
// under the name of one of its entries. Entries named as restore's own files are refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chown, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { join } from 'node:path';
import { craftArchive } from '../support/craft.js';
import { STACK_TRACE, exists, makeHome, newRecoveryCode, runCli, startCli, stopped, type RecoveryCode } from '../support/cli.js';
import { ok } from '../support/repo.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let archiveA: string;
let archiveB: string;
let repo: string;

const code = () => ['--recovery-code-file', rc.file];
const env = (extra: Record<string, string> = {}) => ({ configDir, env: extra });
const restoreA = (dest: string, extra?: Record<string, string>) => startCli(['restore', archiveA, '-d', dest, ...code()], env(extra));
/** Stopped at the first step of its commit: the journal is written, DIR not yet changed. */
const STOP_IN_COMMIT = { BACKUPCTL_TEST_KILL_AT: 'step-0:SIGSTOP' };

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-restore-lock-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  archiveA = await craftArchive(join(home, 'a.bkp'), rc.code, [{ path: 'a.txt' }, { path: 'same.txt', data: 'from A\n' }]);
  archiveB = await craftArchive(join(home, 'b.bkp'), rc.code, [{ path: 'b.txt' }, { path: 'same.txt', data: 'from B\n' }]);
  const src = join(home, 'src');
  await mkdir(src);
  await writeFile(join(src, 'r.txt'), 'from the repository\n');
  repo = join(home, 'repo');
  await ok(['repo', 'init', repo], { configDir });
  await ok(['backup', src, '--repo', repo], { configDir });
});
afterAll(() => cleanup());

/** Every file under `dir` with its text, and every other entry as its name only. */
async function contents(dir: string): Promise<Record<string, string | null>> {
  const out: Record<string, string | null> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const rel = join(e.parentPath, e.name).slice(dir.length + 1);
    out[rel] = e.isFile() ? await readFile(join(dir, rel), 'utf8') : null;
  }
  return out;
}

function refusedAsLocked(r: { exitCode: number; stderr: string }, dest: string, pid: number): void {
  expect(r.exitCode, r.stderr).toBe(9);
  expect(r.stderr).toBe(`backupctl: ${dest} is in use by another backupctl run (pid ${pid}); try again when it has finished\n`);
  expect(r.stderr).not.toMatch(STACK_TRACE);
}

describe('two restores into one DIR at once', () => {
  it('a new DIR: a second archive restore and a repository restore are exit 9 naming the first, which then completes alone', async () => {
    const dest = join(home, 'new');
    const a = restoreA(dest, STOP_IN_COMMIT);
    await stopped(a.pid!);
    refusedAsLocked(await runCli(['restore', archiveB, '-d', dest, ...code()], env()), dest, a.pid!);
    refusedAsLocked(await runCli(['restore', '--repo', repo, 'latest', '-d', dest, ...code()], env()), dest, a.pid!);
    process.kill(a.pid!, 'SIGCONT');
    const r = await a;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    // Only A's entries: no staging directory, no lock, nothing of B.
    expect(await contents(dest)).toEqual({ 'a.txt': 'content of a.txt\n', 'same.txt': 'from A\n' });
  });

  it('an existing DIR held by a repository restore: an archive restore with --force is exit 9 and replaces nothing', async () => {
    const dest = join(home, 'existing');
    await mkdir(dest);
    await writeFile(join(dest, 'same.txt'), 'the user’s own\n');
    const a = startCli(['restore', '--repo', repo, 'latest', '-d', dest, ...code()], env(STOP_IN_COMMIT));
    await stopped(a.pid!);
    refusedAsLocked(await runCli(['restore', archiveB, '-d', dest, '--force', ...code()], env()), dest, a.pid!);
    process.kill(a.pid!, 'SIGCONT');
    const r = await a;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await contents(dest)).toEqual({ 'r.txt': 'from the repository\n', 'same.txt': 'the user’s own\n' });
  });
});

describe('a restore into a directory inside another one\'s DIR', () => {
  const heldAbove = (r: { exitCode: number; stderr: string }, above: string, dest: string, pid: number) => {
    expect([r.exitCode, r.stderr]).toEqual([9, `backupctl: ${above} (above ${dest}) is in use by another backupctl run (pid ${pid}); try again when it has finished\n`]);
  };

  it('inside a DIR being restored into: exit 9 naming it, before anything is made (a new DIR), also through a link (checked once locked)', async () => {
    const top = join(home, 'outer');
    await mkdir(join(top, 'existing'), { recursive: true });
    await symlink(join(top, 'existing'), join(home, 'alias'));
    const a = restoreA(top, STOP_IN_COMMIT);
    await stopped(a.pid!);
    heldAbove(await runCli(['restore', archiveB, '-d', join(top, 'new', 'deeper'), ...code()], env()), top, join(top, 'new', 'deeper'), a.pid!);
    heldAbove(await runCli(['restore', '--repo', repo, 'latest', '-d', join(top, 'existing'), ...code()], env()), top, join(top, 'existing'), a.pid!);
    heldAbove(await runCli(['restore', archiveB, '-d', join(home, 'alias'), ...code()], env()), top, join(home, 'alias'), a.pid!);
    process.kill(a.pid!, 'SIGCONT');
    const r = await a;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await contents(top)).toEqual({ 'a.txt': 'content of a.txt\n', existing: null, 'same.txt': 'from A\n' });
  });

  it('above a DIR being restored into: exit 9 naming it when it has entries to put there; one without runs', async () => {
    const top = join(home, 'around');
    const inner = join(top, 'sub');
    const a = restoreA(inner, STOP_IN_COMMIT);
    await stopped(a.pid!);
    const into = await craftArchive(join(home, 'into-sub.bkp'), rc.code, [{ path: 'sub', dir: true }, { path: 'sub/deeper/s.txt' }]);
    const r1 = await runCli(['restore', into, '-d', top, '--force', ...code()], env());
    expect([r1.exitCode, r1.stderr]).toEqual([9, `backupctl: ${inner} (where this restore puts entries) is in use by another backupctl run (pid ${a.pid}); try again when it has finished\n`]);
    // Its entries and the other restore's do not meet: a directory of DIR that already holds something.
    const beside = await runCli(['restore', archiveB, '-d', top, ...code()], env());
    expect(beside.exitCode, beside.stderr).toBe(0);
    process.kill(a.pid!, 'SIGCONT');
    const r = await a;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await contents(top)).toEqual({ 'b.txt': 'content of b.txt\n', 'same.txt': 'from B\n', sub: null, 'sub/a.txt': 'content of a.txt\n', 'sub/same.txt': 'from A\n' });
  });

  it.runIf(process.getuid?.() === 0)('only the user\'s own lock files above count: another user\'s, a link to /dev/zero and a FIFO hold nothing; an unreadable own one is named (exit 9)', async () => {
    const top = join(home, 'planted');
    await mkdir(top);
    const lock = join(top, '.backupctl-restore.lock');
    const plant = [
      async () => { await writeFile(lock, 'not a lock\n'); await chown(lock, 4242, 4242); },
      () => symlink('/dev/zero', lock),
      async () => { await execa('mkfifo', [lock]); },
    ];
    for (const [i, make] of plant.entries()) {
      await make();
      const r = await runCli(['restore', archiveA, '-d', join(top, `sub-${i}`), ...code()], env());
      expect(r.exitCode, r.stderr).toBe(0);
      await rm(lock);
    }
    await writeFile(lock, 'not a lock\n');
    const dest = join(top, 'sub-own');
    const r = await runCli(['restore', archiveA, '-d', dest, ...code()], env());
    expect([r.exitCode, r.stderr]).toEqual([9, `backupctl: ${top} (above ${dest}) is locked (${lock}); remove that file if no backupctl is running\n`]);
  });

  it('a killed restore above does not hold a restore inside its DIR', async () => {
    const top = join(home, 'killed-above');
    const k = await restoreA(top, { BACKUPCTL_TEST_KILL_AT: 'step-1' });
    expect(k.signal, String(k.stderr)).toBe('SIGKILL');
    const r = await runCli(['restore', archiveB, '-d', join(top, 'sub'), ...code()], env());
    expect(r.exitCode, r.stderr).toBe(0);
  });
});

describe('a lock file that is not a file', () => {
  it('a FIFO or a link (to /dev/zero) in DIR\'s lock\'s place is held and named (exit 9), never opened for reading through', async () => {
    for (const [name, make] of [['fifo', (p: string) => execa('mkfifo', [p])], ['link', (p: string) => symlink('/dev/zero', p)]] as const) {
      const dest = join(home, `odd-lock-${name}`);
      await mkdir(dest);
      const lock = join(dest, '.backupctl-restore.lock');
      await make(lock);
      const r = await runCli(['restore', archiveA, '-d', dest, ...code()], { ...env(), timeoutMs: 10_000 });
      expect([r.exitCode, r.stderr]).toEqual([9, `backupctl: ${dest} is locked (${lock}); remove that file if no backupctl is running\n`]);
    }
  });
});

describe('a restore that fails', () => {
  it('removes only the new directories it made, and only while empty: a sibling DIR restored meanwhile and a file put in its DIR stay', async () => {
    const top = join(home, 'top');
    const destA = join(top, 'a');
    const destB = join(top, 'b');
    const a = restoreA(destA, STOP_IN_COMMIT); // makes top and top/a
    await stopped(a.pid!);
    const b = await runCli(['restore', archiveB, '-d', destB, ...code()], env());
    expect(b.exitCode, b.stderr).toBe(0);
    await writeFile(join(destA, 'same.txt'), 'put there meanwhile\n'); // A's commit now meets it
    process.kill(a.pid!, 'SIGCONT');
    const r = await a;
    expect(r.exitCode, String(r.stderr)).toBe(6);
    expect(await contents(top)).toEqual({ a: null, 'a/same.txt': 'put there meanwhile\n', b: null, 'b/b.txt': 'content of b.txt\n', 'b/same.txt': 'from B\n' });
  });

  it('removes a new DIR it made when nothing else is in it', async () => {
    const dest = join(home, 'gone', 'deeper');
    const r = await runCli(['restore', archiveA, '-d', dest, '--only', 'no-such-entry', ...code()], env());
    expect(r.exitCode, r.stderr).toBe(2);
    expect(await exists(join(home, 'gone'))).toBe(false);
  });
});

describe('a restore killed during its commit', () => {
  it('leaves its lock, which the next restore into DIR takes over (and removes when done)', async () => {
    const dest = join(home, 'killed');
    const k = await restoreA(dest, { BACKUPCTL_TEST_KILL_AT: 'step-1' });
    expect(k.signal, String(k.stderr)).toBe('SIGKILL');
    expect(await exists(join(dest, '.backupctl-restore.lock'))).toBe(true);
    const r = await runCli(['restore', archiveA, '-d', dest, ...code()], env());
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await contents(dest)).toEqual({ 'a.txt': 'content of a.txt\n', 'same.txt': 'from A\n' });
  });
});

describe('--force and a directory made in DIR during the commit', () => {
  it('where the archive has a directory that was not there: refused (exit 6), never moved aside with what is in it', async () => {
    const dest = join(home, 'made-meanwhile');
    await mkdir(dest);
    const archive = await craftArchive(join(home, 'with-dir.bkp'), rc.code, [{ path: 'sub', dir: true }, { path: 'sub/f.txt' }]);
    const a = startCli(['restore', archive, '-d', dest, '--force', ...code()], env(STOP_IN_COMMIT));
    await stopped(a.pid!);
    await mkdir(join(dest, 'sub'));
    await writeFile(join(dest, 'sub', 'user.txt'), 'put there meanwhile\n');
    process.kill(a.pid!, 'SIGCONT');
    const r = await a;
    expect([r.exitCode, String(r.stderr)]).toEqual([6, `backupctl: ${join(dest, 'sub')} was made during the restore and is not empty: --force replaces files, links and empty directories, never a directory tree; nothing was restored\n`]);
    expect(await contents(dest)).toEqual({ sub: null, 'sub/user.txt': 'put there meanwhile\n' });
  });
});

describe('--force and the archive being restored', () => {
  it('an entry of the same name as the archive, which lies in DIR: refused (exit 6), the archive and DIR unchanged', async () => {
    const dest = join(home, 'holds-archive');
    await mkdir(dest);
    // An archive that holds an older copy of itself (made elsewhere, then moved into DIR).
    const inDest = await craftArchive(join(dest, 'x.bkp'), rc.code, [{ path: 'x.bkp', data: 'an older x.bkp\n' }, { path: 'y.txt' }]);
    const before = await readFile(inDest);
    const r = await runCli(['restore', inDest, '-d', dest, '--force', ...code()], env());
    expect(r.exitCode, r.stderr).toBe(6);
    expect(r.stderr).toBe(`backupctl: refusing to replace ${inDest} with the entry of that name: it is the archive being restored; nothing was restored\n`);
    expect((await readFile(inDest)).equals(before)).toBe(true);
    expect(await readdir(dest)).toEqual(['x.bkp']);
  });
});

describe('names restore keeps for itself in DIR', () => {
  const refusal = (path: string, name: string, what: string) =>
    `backupctl: refusing to restore ${JSON.stringify(path)}: restore keeps the name ${name} for ${what} in every directory it restores into; nothing was restored; --only restores the other entries\n`;
  const LOCK = '.backupctl-restore.lock';

  it('an archive entry named as its lock: refused (exit 6) with --force too, DIR as it was and unlocked; --only restores the rest', async () => {
    const archive = await craftArchive(join(home, 'lock-entry.bkp'), rc.code, [{ path: LOCK, data: 'not a lock\n' }, { path: 'ok.txt' }]);
    const fresh = join(home, 'reserved-new');
    const r = await runCli(['restore', archive, '-d', fresh, ...code()], env());
    expect([r.exitCode, r.stderr]).toEqual([6, refusal(LOCK, LOCK, 'its lock')]);
    expect(await exists(fresh)).toBe(false);
    // Before, --force replaced the lock being held with the entry, which then held DIR for ever.
    const dest = join(home, 'reserved-existing');
    await mkdir(dest);
    await writeFile(join(dest, 'mine.txt'), 'the user’s own\n');
    const f = await runCli(['restore', archive, '-d', dest, '--force', ...code()], env());
    expect([f.exitCode, f.stderr]).toEqual([6, refusal(LOCK, LOCK, 'its lock')]);
    expect(await contents(dest)).toEqual({ 'mine.txt': 'the user’s own\n' });
    const rest = await runCli(['restore', archive, '-d', dest, '--only', 'ok.txt', ...code()], env());
    expect(rest.exitCode, rest.stderr).toBe(0);
    expect(await contents(dest)).toEqual({ 'mine.txt': 'the user’s own\n', 'ok.txt': 'content of ok.txt\n' });
  });

  it('create and backup of a DIR a killed restore left its lock and staging directory in: stored, each named in a warning that says what a restore of it will do and how to finish the killed one', async () => {
    const dest = join(home, 'killed-into');
    await mkdir(dest);
    await writeFile(join(dest, 'mine.txt'), 'the user’s own\n');
    const killed = await runCli(['restore', archiveA, '-d', dest, '--force', ...code()], env({ BACKUPCTL_TEST_KILL_AT: 'step-1' }));
    expect(killed.exitCode).toBe(-1); // SIGKILL in its commit
    const left = (await readdir(dest)).filter((n) => n.startsWith('.backupctl-restore'));
    left.sort(); // the staging directory's name sorts before the lock's
    expect(left).toEqual([expect.stringMatching(/^\.backupctl-restore-\d+\.\d+-[A-Za-z0-9]{6}$/), LOCK]);
    const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.includes('has a name restore keeps for'));
    const expected = left.map((n) =>
      `backupctl: warning: ${join(dest, n)} has a name restore keeps for ${n === LOCK ? 'its lock' : 'its staging directories'}: stored, but a restore of this backup refuses it (--only restores the rest); if a restore into ${dest} was killed, run it again to finish or undo it`);
    const c = await runCli(['create', dest, '-o', join(home, 'killed-into.bkp')], env());
    expect(c.exitCode, c.stderr).toBe(0);
    expect(warnings(c.stderr)).toEqual(expected);
    const b = await runCli(['backup', dest, '--repo', repo], env());
    expect(b.exitCode, b.stderr).toBe(0);
    expect(warnings(b.stderr)).toEqual(expected);
  });

  it('at any depth, in any case, the lock breaker and a staging directory\'s name (the next restore would remove it as a dead run\'s)', async () => {
    for (const [specs, path, name, what] of [
      [[{ path: 'sub', dir: true }, { path: 'sub/.BACKUPCTL-RESTORE.LOCK.BREAK' }], 'sub/.BACKUPCTL-RESTORE.LOCK.BREAK', '.BACKUPCTL-RESTORE.LOCK.BREAK', 'its lock'],
      // No record for the directory itself: the entry beneath it is named.
      [[{ path: 'a.txt' }, { path: 'x/.backupctl-restore-1.1-abcdef/journal', data: 'kept by the user\n' }], 'x/.backupctl-restore-1.1-abcdef/journal', '.backupctl-restore-1.1-abcdef', 'its staging directories'],
    ] as const) {
      const archive = await craftArchive(join(home, 'reserved.bkp'), rc.code, [...specs]);
      const dest = join(home, 'reserved-deep');
      const r = await runCli(['restore', archive, '-d', dest, ...code()], env());
      expect([r.exitCode, r.stderr]).toEqual([6, refusal(path, name, what)]);
      expect(await exists(dest)).toBe(false);
    }
  });

  it('a snapshot holding a file named as the lock: refused (exit 6) as an archive', async () => {
    const src = join(home, 'src-with-lock');
    await mkdir(join(src, 'deep'), { recursive: true });
    await writeFile(join(src, 'deep', LOCK), 'backed up while a restore ran into it\n');
    const snapRepo = join(home, 'repo-with-lock');
    await ok(['repo', 'init', snapRepo], { configDir });
    await ok(['backup', src, '--repo', snapRepo], { configDir });
    const dest = join(home, 'reserved-snapshot');
    const r = await runCli(['restore', '--repo', snapRepo, 'latest', '-d', dest, ...code()], env());
    expect([r.exitCode, r.stderr]).toEqual([6, refusal(`deep/${LOCK}`, LOCK, 'its lock')]);
    expect(await exists(dest)).toBe(false);
  });
});
