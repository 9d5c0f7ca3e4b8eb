// restore's commit phase through the built CLI: a restore of 1,000 files killed during its
// commit (at chosen steps with BACKUPCTL_TEST_KILL_AT, and by a SIGKILL from outside), then the
// same command again; --force over a non-empty directory, and what it puts in an original's
// place synced before the original goes (filefrag(8) shows no delayed extent); a directory swapped for a symlink
// mid-commit; parents the archive has no record for; conflicts refused from the index before any
// content is read.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { lstat, mkdir, mkdtemp, readFile, readdir, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ArchiveFile } from '../../src/archive/reader.js';
import { CRAFT_MTIME_NS, craftArchive, type CraftSpec } from '../support/craft.js';
import { REPO, STACK_TRACE, exists, makeHome, newRecoveryCode, runCli, snapshot, startCli, stopped, type RecoveryCode, type SnapEntry } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
/**
 * 1,000 files in a few directories, plus symlinks and an empty directory; and its archive. The
 * kills come at steps of the commit, so the count proves nothing beyond giving each phase (and the
 * undo of a half-done commit) many steps; a restore of 20,000 cost seconds of CPU, a dozen times.
 */
const FILES = 1_000;
let tree: string;
let bigArchive: string;
let treeSnap: Record<string, SnapEntry>;
/** Step numbers of the commit: directories first, then files, then symlinks. */
let dirs = 0;
let files = 0;
let links = 0;

const code = () => ['--recovery-code-file', rc.file];
const LONG = 600_000;
const opts = (env: Record<string, string> = {}) => ({ configDir, env, timeoutMs: 180_000 });
const restoreBig = (dest: string, force: boolean, env?: Record<string, string>) =>
  startCli(['restore', bigArchive, '-d', dest, ...code(), ...(force ? ['--force'] : [])], opts(env));

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-commit-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  tree = join(home, 'tree');
  await execa(process.execPath, [join(REPO, 'fixtures/generate-export.mjs'), '--profile', 'entries', '--count', String(FILES), '--out', tree]);
  await mkdir(join(tree, 'links'));
  for (let i = 0; i < 5; i++) await symlink(`../_chat.txt#${i}`, join(tree, 'links', `l${i}`));
  await mkdir(join(tree, 'empty'));
  treeSnap = await snapshot(tree);
  for (const e of Object.values(treeSnap)) {
    if (e.type === 'dir') dirs++;
    else if (e.type === 'file') files++;
    else links++;
  }
  expect(files).toBeGreaterThanOrEqual(FILES);
  bigArchive = join(home, 'big.bkp');
  const r = await runCli(['create', tree, '-o', bigArchive], opts());
  expect(r.exitCode, r.stderr).toBe(0);
}, LONG);
afterAll(() => cleanup());

/**
 * Whether a file's data not yet on the disk can be seen here: filefrag(8) is there and the file
 * system delays allocation (ext4, XFS), so that a file just written has a delayed extent.
 */
const seesDelalloc = await (async () => {
  const dir = await mkdtemp(join(tmpdir(), 'backupctl-delalloc-probe-'));
  try {
    await writeFile(join(dir, 'probe'), 'x'.repeat(10_000));
    return (await delayedAllocation(dir, ['probe'])).has('probe');
  } catch {
    return false;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
})();

const stagingDirs = async (dest: string) => (await readdir(dest)).filter((n) => n.startsWith('.backupctl-restore-'));

/** Run the big restore with a kill point; it must die by SIGKILL there. */
async function killedAt(point: string, dest: string, force: boolean): Promise<void> {
  const r = await restoreBig(dest, force, { BACKUPCTL_TEST_KILL_AT: point });
  expect(r.signal, `${point}: ${r.stderr}`).toBe('SIGKILL');
}

/**
 * The tree's restore killed by SIGKILL from outside, where no kill point chose: stopped at step
 * `at` (the commit has started, with hundreds of steps to go), let run on for a few milliseconds
 * and killed wherever it is then, mid-step as often as not. (Killing once the journal appeared
 * raced the commit, which took 20,000 files to outlast the polling.) On a loaded machine the
 * rest of the commit can finish within those milliseconds, the kill then landing in the removal
 * of the staging directory: up to 5 tries, each into a new DEST (`make`), until it lands in the
 * commit (the journal there, no "committed" mark). Returns the last try's.
 */
async function killedFromOutside<T extends { dest: string }>(make: (attempt: number) => Promise<T>, force: boolean, at: number): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const d = await make(attempt);
    const p = restoreBig(d.dest, force, { BACKUPCTL_TEST_KILL_AT: `step-${at}:SIGSTOP` });
    await stopped(p.pid!);
    process.kill(p.pid!, 'SIGCONT');
    await new Promise((r) => setTimeout(r, 1 + Math.random() * 3));
    p.kill('SIGKILL');
    const r = await p;
    expect(r.signal, `the restore was not killed mid-commit (exit ${r.exitCode}): ${r.stderr}`).toBe('SIGKILL');
    const [staging] = await stagingDirs(d.dest);
    const inCommit = staging !== undefined && (await exists(join(d.dest, staging, 'journal'))) && !(await exists(join(d.dest, staging, 'committed')));
    if (inCommit || attempt === 4) return d;
  }
}

/**
 * The same command again: exit 0, DEST is the archive (and `extra`), no staging directory left.
 * With --force, directories that were there already keep their own times (they are merged into).
 */
async function sameCommandFinishes(dest: string, force: boolean, extra: Record<string, SnapEntry> = {}): Promise<void> {
  const r = await restoreBig(dest, force);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  expect(await stagingDirs(dest)).toEqual([]);
  expect(await restored(dest, force)).toEqual(restoredSnap({ ...treeSnap, ...extra }, force));
}
const restored = async (dest: string, force: boolean) => restoredSnap(await snapshot(dest), force);
const restoredSnap = (snap: Record<string, SnapEntry>, force: boolean) =>
  force ? Object.fromEntries(Object.entries(snap).map(([p, e]) => [p, e.type === 'dir' ? { ...e, mtimeMs: 0 } : e])) : snap;

/** A run that only recovers: --only matching nothing is a usage error, after the recovery. */
async function recoverOnly(dest: string): Promise<void> {
  const r = await runCli(['restore', bigArchive, '-d', dest, ...code(), '--only', 'no/such/entry'], opts());
  expect(r.exitCode, r.stderr).toBe(2);
  expect(await stagingDirs(dest)).toEqual([]);
}

describe('a restore of 1,000 files killed during its commit, then the same command', () => {
  const midFile = () => dirs + FILES / 2;
  const firstLink = () => dirs + files;

  for (const [name, point, placed] of [
    ['after the journal is written to its temporary name (nothing in DEST yet)', () => 'journal', () => 0],
    ['half-way through the files', () => `step-${midFile()}`, () => midFile()],
  ] as const) {
    it(`killed ${name}`, async () => {
      const dest = join(home, `kill-${point()}`);
      await killedAt(point(), dest, false);
      const [staging] = await stagingDirs(dest);
      expect(staging).toBeDefined();
      // What the killed run placed: `placed` steps (directories made count as entries too); its
      // staging directory and its lock on DEST (.backupctl-restore.lock) are not entries.
      const inDest = (await readdir(dest, { recursive: true })).filter((p) => !p.startsWith('.backupctl-restore'));
      expect(inDest.length).toBe(placed());
      await sameCommandFinishes(dest, false);
    }, LONG);
  }

  it('killed after the commit, before the staging directory is removed: the next restore only removes it', async () => {
    const dest = join(home, 'kill-committed');
    await killedAt('committed', dest, false);
    expect(await stagingDirs(dest)).toHaveLength(1);
    // The restore was complete: the same command (without --force) finds every entry there.
    const r = await restoreBig(dest, false);
    expect(r.exitCode).toBe(6);
    expect(String(r.stderr)).toMatch(new RegExp(`^backupctl: ${files + links} entries already exist in `));
    expect(await stagingDirs(dest)).toEqual([]);
    expect(await snapshot(dest)).toEqual(treeSnap);
  }, LONG);

  it('killed by SIGKILL from outside once the commit has started', async () => {
    const { dest } = await killedFromOutside(async (i) => ({ dest: join(home, `kill-outside-${i}`) }), false, dirs + 100);
    // Killed mid-commit: the journal is there and the commit was not marked finished.
    const [staging] = await stagingDirs(dest);
    expect(await exists(join(dest, staging!, 'journal'))).toBe(true);
    expect(await exists(join(dest, staging!, 'committed'))).toBe(false);
    await sameCommandFinishes(dest, false);
  }, LONG);
});

describe('--force over existing files, killed during the commit: no original is stranded', () => {
  /** DEST with an original at every 7th file, a file where a directory and a symlink go, and a file of the user's own. */
  async function destWithOriginals(name: string): Promise<{ dest: string; before: Record<string, SnapEntry>; mine: Record<string, SnapEntry> }> {
    const dest = join(home, name);
    const paths = Object.keys(treeSnap).filter((p) => treeSnap[p]!.type === 'file');
    for (const [i, p] of paths.entries()) {
      if (i % 7 !== 0) continue;
      await mkdir(join(dest, p, '..'), { recursive: true });
      await writeFile(join(dest, p), `original ${i}\n`, { mode: 0o600 });
    }
    await writeFile(join(dest, 'empty'), 'a file where the archive has a directory\n');
    await mkdir(join(dest, 'links'), { recursive: true });
    await writeFile(join(dest, 'links', 'l2'), 'a file where the archive has a symlink\n');
    await writeFile(join(dest, 'mine-only.txt'), 'not in the archive\n');
    const before = await snapshot(dest);
    return { dest, before, mine: { 'mine-only.txt': before['mine-only.txt']! } };
  }

  /** After a kill mid-commit: the next restore puts every original back under its name; the same command then finishes. */
  async function originalsComeBack(dest: string, before: Record<string, SnapEntry>, mine: Record<string, SnapEntry>): Promise<void> {
    const [staging] = await stagingDirs(dest);
    expect((await readdir(join(dest, staging!, '.replaced'))).length).toBeGreaterThan(0);
    await recoverOnly(dest);
    expect(await snapshot(dest)).toEqual(before);
    await sameCommandFinishes(dest, true, mine);
  }

  for (const [name, point] of [
    ['half-way through the files', () => `step-${dirs + FILES / 2}`],
  ] as const) {
    it(`killed ${name}: the next restore puts every original back under its name; the same command then finishes`, async () => {
      const { dest, before, mine } = await destWithOriginals(`force-${point()}`);
      await killedAt(point(), dest, true);
      await originalsComeBack(dest, before, mine);
    }, LONG);
  }

  it('killed after the commit: the next restore finishes it (originals removed, as --force promises)', async () => {
    const { dest, mine } = await destWithOriginals('force-committed');
    await killedAt('committed', dest, true);
    await recoverOnly(dest);
    expect(await restored(dest, true)).toEqual(restoredSnap({ ...treeSnap, ...mine }, true));
    await sameCommandFinishes(dest, true, mine);
  }, LONG);

  it('killed again while undoing the first killed run, then the same command', async () => {
    const { dest, mine } = await destWithOriginals('force-twice');
    await killedAt(`step-${dirs + (FILES * 3) / 4}`, dest, true);
    await killedAt(`undo-${FILES / 4}`, dest, true);
    await sameCommandFinishes(dest, true, mine);
  }, LONG);

  it('killed by SIGKILL from outside once the commit has started', async () => {
    const { dest, before, mine } = await killedFromOutside((i) => destWithOriginals(`force-outside-${i}`), true, dirs + 100);
    await originalsComeBack(dest, before, mine);
  }, LONG);

  // Staged content is not synced; what replaces an original must be before the original goes
  // with the staging directory, or a power loss just after leaves an empty file in its place.
  it.skipIf(!seesDelalloc)('what replaces an original is on disk before the original is removed; the rest is left to the system', async (ctx) => {
    const { dest, before } = await destWithOriginals('force-durable');
    const r = await restoreBig(dest, true);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const files = Object.keys(treeSnap).filter((p) => treeSnap[p]!.type === 'file' && treeSnap[p]!.size > 0);
    const replaced = files.filter((p) => before[p]);
    const others = files.filter((p) => !before[p]);
    expect(replaced.length).toBeGreaterThan(100);
    const pending = await delayedAllocation(dest, [...replaced, ...others]);
    // The other files, written a moment ago, still wait for their blocks; had the system written them
    // back meanwhile (memory pressure, a sync), nothing here could tell a synced file from them.
    if (!others.some((p) => pending.has(p))) ctx.skip();
    expect(replaced.filter((p) => pending.has(p))).toEqual([]);
  }, LONG);
});

/** Paths (relative to `dir`) of those `paths` whose data has no blocks on the disk yet (a delayed-allocation extent, filefrag(8)). */
async function delayedAllocation(dir: string, paths: string[]): Promise<Set<string>> {
  const { stdout } = await execa('filefrag', ['-v', ...paths], { cwd: dir });
  const pending = new Set<string>();
  for (const part of stdout.split(/^(?=File size of )/m)) {
    const name = /^File size of (.*) is \d+/.exec(part)?.[1];
    if (name !== undefined && /\bdelalloc\b/.test(part)) pending.add(name);
  }
  return pending;
}

async function waitFor<T>(probe: () => Promise<T | null | undefined | false | ''>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}

// ---------------------------------------------------------------------------------------------
// Small crafted archives.

let n = 0;
async function craft(specs: CraftSpec[], segmentSize?: number): Promise<string> {
  const file = join(home, `crafted-${++n}.bkp`);
  await craftArchive(file, rc.code, specs, segmentSize);
  return file;
}
/** Restore `file` (or from stdin) into `dest`. */
const restore = (file: string, dest: string, how: 'file' | 'stdin', ...extra: string[]) =>
  how === 'file'
    ? runCli(['restore', file, '-d', dest, ...code(), ...extra], opts())
    : runCli(['restore', '-', '-d', dest, ...code(), ...extra], { ...opts(), inputFile: file });
const oneLine = (stderr: string) => {
  expect(stderr).toMatch(/^backupctl: [^\n]+\n$/);
  expect(stderr).not.toMatch(STACK_TRACE);
};

describe('--force never deletes a directory tree it was not asked to replace', () => {
  for (const [kind, spec] of [['file', { path: 'Media' }], ['symlink', { path: 'Media', link: 'elsewhere' }]] as const) {
    for (const how of ['file', 'stdin'] as const) {
      it(`a ${kind} Media over a non-empty directory Media/ (${how}): exit 6 naming it, DEST untouched`, async () => {
        const file = await craft([{ path: 'a.txt' }, spec]);
        const dest = join(home, `tree-${kind}-${how}`);
        await mkdir(join(dest, 'Media', 'deep'), { recursive: true });
        await writeFile(join(dest, 'Media', 'deep', 'photo.jpg'), 'precious\n');
        const before = await snapshot(dest);
        const r = await restore(file, dest, how, '--force');
        expect(r.exitCode, r.stderr).toBe(6);
        oneLine(r.stderr);
        expect(r.stderr).toMatch(/refusing to replace the non-empty directory \S+\/Media with a file or link/);
        expect(await snapshot(dest)).toEqual(before);
        expect(await stagingDirs(dest)).toEqual([]);
      });
    }
  }

  it('an empty directory is replaced by the file (and without --force refused as existing)', async () => {
    const file = await craft([{ path: 'Media', data: 'now a file\n' }]);
    const dest = join(home, 'tree-empty');
    await mkdir(join(dest, 'Media'), { recursive: true });
    const refused = await restore(file, dest, 'file');
    expect(refused.exitCode).toBe(6);
    expect(refused.stderr).toMatch(/1 entry already exists/);
    const r = await restore(file, dest, 'file', '--force');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readFile(join(dest, 'Media'), 'utf8')).toBe('now a file\n');
    expect(await readdir(dest)).toEqual(['Media']);
  });
});

describe('a directory swapped for a symlink during the commit', () => {
  /** Many files for the racer, so that it swaps while they land; a few where the restore is stopped. */
  const RACED = 4_000;
  const STOPPED = 200;
  let racedArchive: string;
  let stoppedArchive: string;
  const subArchive = (count: number) => craft([{ path: 'sub', dir: true }, ...Array.from({ length: count }, (_, i) => ({ path: `sub/f${String(i).padStart(4, '0')}` }))], 1 << 16);
  beforeAll(async () => {
    racedArchive = await subArchive(RACED);
    stoppedArchive = await subArchive(STOPPED);
  });

  it('after the first file lands (the restore stopped there): every file goes into the directory that was checked, none through the link', async () => {
    const dest = join(home, 'swap-stopped');
    const outside = join(home, 'swap-outside-1');
    await mkdir(outside);
    // Steps: 0 makes sub, 1 links the first file; stopped before step 2.
    const p = startCli(['restore', stoppedArchive, '-d', dest, ...code()], opts({ BACKUPCTL_TEST_KILL_AT: 'step-2:SIGSTOP' }));
    await stopped(p.pid!);
    expect(await readdir(join(dest, 'sub'))).toEqual(['f0000']);
    await rename(join(dest, 'sub'), join(dest, 'sub.real'));
    await symlink(outside, join(dest, 'sub'));
    process.kill(p.pid!, 'SIGCONT');
    const r = await p;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await readdir(outside)).toEqual([]);
    expect((await readdir(join(dest, 'sub.real'))).length).toBe(STOPPED);
    expect((await lstat(join(dest, 'sub'))).isSymbolicLink()).toBe(true);
  });

  it('a process swapping it back and forth all through the restore: nothing is written outside DEST', async () => {
    const dest = join(home, 'swap-racing');
    const outside = join(home, 'swap-outside-2');
    await mkdir(outside);
    await mkdir(dest); // made here, so that a failed restore does not remove it under the racer
    const racer = execa(process.execPath, ['-e', `
      const fs = require('node:fs');
      const [dest, outside] = process.argv.slice(1);
      const sub = dest + '/sub', real = dest + '/sub.real';
      let swaps = 0;
      const end = Date.now() + 60000;
      while (Date.now() < end && !fs.existsSync(dest + '/.stop')) {
        // Swapped only once files are landing in it, and held as a link for 2 ms each time.
        try { if (fs.readdirSync(sub).length === 0) continue; } catch { continue; }
        try { fs.renameSync(sub, real); fs.symlinkSync(outside, sub); swaps++; const t = Date.now() + 2; while (Date.now() < t); fs.unlinkSync(sub); fs.renameSync(real, sub); } catch {}
      }
      console.log(swaps);`, dest, outside], { reject: false });
    const r = await restore(racedArchive, dest, 'file');
    await writeFile(join(dest, '.stop'), '').catch(() => {});
    const swaps = Number((await racer).stdout);
    expect(swaps).toBeGreaterThan(0);
    expect([0, 6], r.stderr).toContain(r.exitCode);
    if (r.exitCode !== 0) oneLine(r.stderr);
    expect(await readdir(outside)).toEqual([]);
  });
});

describe('parents the archive has no record for', () => {
  for (const how of ['file', 'stdin'] as const) {
    it(`are created, 0755 less the umask, also above a directory record that comes later (${how}); verify agrees`, async () => {
      const file = await craft([{ path: 'new/x.txt', data: 'x\n' }, { path: 'a/b/c/y.txt', data: 'y\n' }, { path: 'a', dir: true, mode: 0o750 }]);
      const v = await runCli(['verify', file, ...code()], opts());
      expect(v.exitCode, v.stderr).toBe(0);
      const dest = join(home, `parents-${how}`);
      const r = await restore(file, dest, how);
      expect(r.exitCode, r.stderr).toBe(0);
      // What mkdir gives a directory asked for 0755 under this umask (the CLI's is the same).
      const probe = join(home, `umask-probe-${how}`);
      await mkdir(probe, { mode: 0o755 });
      const implied = (await stat(probe)).mode & 0o7777;
      const got = await snapshot(dest);
      expect(Object.keys(got)).toEqual(['a', 'a/b', 'a/b/c', 'a/b/c/y.txt', 'new', 'new/x.txt']);
      for (const d of ['new', 'a/b', 'a/b/c']) expect(got[d]!.mode, d).toBe(implied);
      expect(got['a']).toMatchObject({ type: 'dir', mode: 0o750, mtimeMs: Number(CRAFT_MTIME_NS / 1_000_000n) });
      expect(await readFile(join(dest, 'a/b/c/y.txt'), 'utf8')).toBe('y\n');
    });
  }

  it('something else where a missing parent goes is refused, even with --force', async () => {
    const file = await craft([{ path: 'new/x.txt' }]);
    const dest = join(home, 'parents-file-there');
    await mkdir(dest);
    await writeFile(join(dest, 'new'), 'mine\n');
    const before = await snapshot(dest);
    const r = await restore(file, dest, 'file', '--force');
    expect(r.exitCode, r.stderr).toBe(6);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/\/new is not a directory: refusing to restore new\/x\.txt through it/);
    expect(await snapshot(dest)).toEqual(before);
  });
});

describe('conflicts are refused from the index, before any content is read', () => {
  let damaged: string;
  beforeAll(async () => {
    // 40 files over about a dozen 4 KiB segments; then the first segment's ciphertext damaged:
    // any read of content fails (exit 5), the index at the end still opens.
    damaged = await craft(Array.from({ length: 40 }, (_, i) => ({ path: `f${String(i).padStart(2, '0')}.txt`, data: Buffer.alloc(1000, i) })));
    const a = await ArchiveFile.open(damaged);
    const at = a.header.headerLength + 100;
    await a.close();
    const bytes = await readFile(damaged);
    bytes[at]! ^= 0x01;
    await writeFile(damaged, bytes);
  });

  it('the damaged payload is refused (exit 5) when it has to be read', async () => {
    const r = await restore(damaged, join(home, 'damaged-fresh'), 'file');
    expect(r.exitCode, r.stderr).toBe(5);
    expect(await exists(join(home, 'damaged-fresh'))).toBe(false);
  });

  it('from a file, an existing entry is refused with exit 6 without reading the payload; --force over a non-empty directory too', async () => {
    const dest = join(home, 'damaged-conflict');
    await mkdir(join(dest, 'f30.txt', 'inside'), { recursive: true });
    await writeFile(join(dest, 'f05.txt'), 'mine\n');
    await writeFile(join(dest, 'f30.txt', 'inside', 'keep'), 'mine\n');
    const before = await snapshot(dest);
    const r = await restore(damaged, dest, 'file');
    expect(r.exitCode, r.stderr).toBe(6);
    oneLine(r.stderr);
    expect(r.stderr).toMatch(/2 entries already exist in \S+ \(first: f05\.txt\); nothing was restored/);
    const f = await restore(damaged, dest, 'file', '--force');
    expect(f.exitCode, f.stderr).toBe(6);
    expect(f.stderr).toMatch(/non-empty directory \S+\/f30\.txt/);
    expect(await snapshot(dest)).toEqual(before);
    expect(await stagingDirs(dest)).toEqual([]);
  });

  it('from standard input there is no index up front: the payload is read first (exit 5 here)', async () => {
    const dest = join(home, 'damaged-stdin');
    await mkdir(dest);
    await writeFile(join(dest, 'f05.txt'), 'mine\n');
    const r = await restore(damaged, dest, 'stdin');
    expect(r.exitCode, r.stderr).toBe(5);
    expect(await readdir(dest)).toEqual(['f05.txt']);
  });
});
