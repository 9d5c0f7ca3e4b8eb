// The repository under kill -9, concurrency and damage (backupctl-repository(5) "CONSISTENCY"):
// a run killed at any write leaves no snapshot referring to missing data and the next run reuses
// what was completely written; two backups at once both succeed; prune yields to a live backup
// and breaks a dead one's lock; damage is named down to the files it costs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFile, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { STACK_TRACE, makeHome, newRecoveryCode, runCli, snapshot, startCli, stopped, type RecoveryCode } from '../support/cli.js';
import { backupJson, ok, repoFiles } from '../support/repo.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
/** Small packs, so that a backup of a few hundred KB writes many files. */
const PACKS = { BACKUPCTL_REPO_PACK_SIZE: String(96 << 10) };
const env = (extra: Record<string, string> = {}) => ({ configDir, env: { ...PACKS, BACKUPCTL_RECOVERY_CODE: rc.code, ...extra } });

interface VerifyJson {
  ok: boolean;
  damaged: Array<{ pack: string; problem: string }>;
  affected: Array<{ snapshot: string; paths: string[] }>;
  unindexed: number;
  duplicates: number;
  snapshots: number;
}

async function verify(repo: string, ...args: string[]): Promise<{ exitCode: number; j: VerifyJson; stderr: string }> {
  const r = await runCli(['--json', 'verify', '--repo', repo, ...args], env());
  return { exitCode: r.exitCode, j: JSON.parse(r.stdout.trim().split('\n').at(-1)!) as VerifyJson, stderr: r.stderr };
}

async function makeSource(dir: string, files: number, size: number): Promise<void> {
  await mkdir(join(dir, 'Media'), { recursive: true });
  for (let i = 0; i < files; i++) await writeFile(join(dir, 'Media', `IMG-${i}.jpg`), randomBytes(size));
  await writeFile(join(dir, '_chat.txt'), Array.from({ length: 3000 }, (_, i) => `[${i}] Alice: message number ${i} ok see you\n`).join(''));
}

async function newRepo(name: string): Promise<string> {
  const repo = join(home, name);
  await ok(['repo', 'init', repo], { configDir });
  return repo;
}

/** Run `args` with a kill at write 1, 2, 3, … until a run completes; after each kill, `check`. Returns the number of kills. */
async function killAtEveryWrite(args: string[], check: () => Promise<void>): Promise<number> {
  for (let n = 1; n < 200; n++) {
    const r = await runCli(args, env({ BACKUPCTL_TEST_KILL_AT_WRITE: String(n) }));
    if (r.exitCode === 0) return n - 1;
    expect(r.exitCode, `run killed at write ${n}: ${r.stderr}`).toBe(-1); // killed by SIGKILL: no exit code
    await check();
  }
  throw new Error('the run never completed');
}

/** restoreSnapshot with salvage, as `restore --repo … --salvage` runs it; the paths it lost. */
async function salvage(repo: string, id: string, dest: string): Promise<string[]> {
  const dist = (m: string) => import(new URL(`../../dist/${m}.js`, import.meta.url).href);
  const [{ LocalStore }, { openRepositoryKeys }, { RepoReader }, { listSnapshots, pickSnapshot }, { restoreSnapshot }, { recoveryIdentity }, { confirmFileKey }, { UnpackThreads }] = await Promise.all(
    ['store/local', 'ops/repository', 'repo/reader', 'repo/snapshot', 'ops/restore-snapshot', 'keys/recovery-code', 'archive/header', 'repo/unpack'].map(dist),
  );
  const store = new LocalStore(repo);
  const keys = await openRepositoryKeys(store, async (h: unknown) => confirmFileKey(h, await recoveryIdentity(rc.code).unwrap((h as { slots: unknown }).slots)));
  const reader = await RepoReader.open(store, keys);
  const threads = new UnpackThreads();
  try {
    const res = await restoreSnapshot({ reader, snapshot: pickSnapshot(await listSnapshots(store, reader.dedup), id), threads, listedAt: Date.now(), dest, salvage: true });
    return res.lost as string[];
  } finally {
    await threads.stop();
  }
}

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-repo-safety-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
});
afterAll(() => cleanup());

describe('repository: kill -9, concurrency, damage', () => {
  it('kill -9 at every write of a backup: always consistent, and the next runs reuse every indexed pack', async () => {
    const repo = await newRepo('killed-backup');
    const src = join(home, 'src-killed');
    await makeSource(src, 8, 60_000);
    const kills = await killAtEveryWrite(['backup', src, '--repo', repo], async () => {
      const v = await verify(repo);
      expect(v.exitCode, JSON.stringify(v.j)).toBe(0);
      expect(v.j.snapshots).toBe(0); // the snapshot file is the last write: none until a run completes
    });
    // Each killed run gets further than the last (it reuses what the others finished), so the
    // kills land on every kind of write: the lock, a pack, its index file, the tree, the snapshot.
    expect(kills).toBeGreaterThanOrEqual(5);
    const v = await verify(repo, '--read-data');
    expect(v.exitCode).toBe(0);
    expect(v.j.snapshots).toBe(1);
    expect(v.j.duplicates).toBe(0); // no chunk of a finished, indexed pack was stored again
    expect(v.j.unindexed).toBeGreaterThan(0); // packs killed before their index file: stored again
    const out = join(home, 'killed-restore');
    await ok(['restore', '--repo', repo, 'latest', '-d', out], env());
    expect(await snapshot(out)).toEqual(await snapshot(src));
    // The dead runs' locks were found stale and removed; prune removes their leftovers.
    const temporary = (p: string) => p.split('/').at(-1)!.startsWith('.');
    expect([...(await repoFiles(repo)).keys()].filter((p) => p.startsWith('locks/') && !temporary(p))).toEqual([]);
    expect([...(await repoFiles(repo)).keys()].filter(temporary).length).toBeGreaterThan(0);
    await ok(['prune', '--repo', repo], env());
    expect([...(await repoFiles(repo)).keys()].filter((p) => p.startsWith('locks/') || temporary(p))).toEqual([]);
    expect((await verify(repo, '--read-data')).j.unindexed).toBe(0);
  });

  it('kill -9 at every write of prune: every kept snapshot stays whole', async () => {
    const repo = await newRepo('killed-prune');
    const src = join(home, 'src-prune');
    await makeSource(src, 6, 50_000);
    await backupJson(src, repo, env());
    await rm(join(src, 'Media', 'IMG-0.jpg'));
    await rm(join(src, 'Media', 'IMG-1.jpg'));
    await appendFile(join(src, '_chat.txt'), 'one more line\n');
    const second = await backupJson(src, repo, env());
    const want = await snapshot(src);
    const forgot = await ok<{ remove: unknown[] }>(['forget', '--repo', repo, '--keep-last', '1'], env());
    expect(forgot.remove).toHaveLength(1);
    const kills = await killAtEveryWrite(['prune', '--repo', repo], async () => {
      const v = await verify(repo);
      expect(v.exitCode, JSON.stringify(v.j)).toBe(0);
      expect(v.j.snapshots).toBe(1);
    });
    expect(kills).toBeGreaterThan(0);
    const v = await verify(repo, '--read-data');
    expect(v.exitCode).toBe(0);
    const out = join(home, 'pruned-restore');
    await ok(['restore', '--repo', repo, second.snapshot, '-d', out], env());
    expect(await snapshot(out)).toEqual(want);
    // What only the forgotten snapshot needed is gone: the two deleted photos' 100 KB and more.
    const stored = [...(await repoFiles(repo)).entries()].filter(([p]) => p.startsWith('data/')).reduce((a, [, n]) => a + n, 0);
    expect(stored).toBeLessThan(4 * 50_000 * 1.13 + 60_000);
  });

  it('Ctrl-C during a backup: exit 130, the repository consistent, its lock gone', async () => {
    const repo = await newRepo('interrupted');
    const src = join(home, 'src-interrupted');
    await makeSource(src, 40, 250_000); // 10 MB in 96 KiB packs: over a hundred writes
    // Stopped at its third write (a pack), so that the backup, which takes tens of milliseconds,
    // cannot finish before Ctrl-C reaches it: the signal is delivered when it goes on.
    const child = startCli(['backup', src, '--repo', repo], env({ BACKUPCTL_TEST_KILL_AT_WRITE: '3:SIGSTOP' }));
    await stopped(child.pid!);
    child.kill('SIGINT');
    child.kill('SIGCONT');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(/interrupted/);
    expect(String(r.stderr)).not.toMatch(STACK_TRACE);
    const v = await verify(repo);
    expect(v.exitCode).toBe(0);
    expect(v.j.snapshots).toBe(0);
    expect(await readdir(join(repo, 'locks'))).toEqual([]);
  });

  it('two backups at once into one repository both succeed and both restore', async () => {
    const repo = await newRepo('concurrent');
    const a = join(home, 'src-a');
    const b = join(home, 'src-b');
    await makeSource(a, 6, 80_000);
    await makeSource(b, 6, 80_000);
    await writeFile(join(b, 'shared.bin'), await readFile(join(a, 'Media', 'IMG-0.jpg')));
    const [ra, rb] = await Promise.all([a, b].map((d) => startCli(['--json', 'backup', d, '--repo', repo], env())));
    expect([ra!.exitCode, rb!.exitCode]).toEqual([0, 0]);
    const v = await verify(repo, '--read-data');
    expect(v.exitCode).toBe(0);
    expect(v.j.snapshots).toBe(2);
    for (const [r, d] of [[ra!, a], [rb!, b]] as const) {
      const id = (JSON.parse(String(r.stdout)) as { snapshot: string }).snapshot;
      const out = join(home, `concurrent-${id}`);
      await ok(['restore', '--repo', repo, id, '-d', out], env());
      expect(await snapshot(out)).toEqual(await snapshot(d));
    }
  });

  it('prune yields to a live backup, and a dead run\'s lock is broken', async () => {
    const repo = await newRepo('locks');
    const src = join(home, 'src-locks');
    await makeSource(src, 2, 10_000);
    await backupJson(src, repo, env());
    const before = await repoFiles(repo);
    // A backup in progress: a shared lock held by a live process (this test's own).
    const live = { kind: 'shared', host: hostname(), pid: process.pid, operation: 'backup', time: new Date().toISOString() };
    await writeFile(join(repo, 'locks', 'aaaaaaaaaaaaaaaa'), JSON.stringify(live));
    const refused = await runCli(['prune', '--repo', repo], env());
    expect(refused.exitCode).toBe(9);
    expect(refused.stderr).toMatch(/in use \(backup on .*pid \d+/);
    expect(refused.stderr).not.toMatch(STACK_TRACE);
    expect(await repoFiles(repo)).toEqual(new Map([...before, ['locks/aaaaaaaaaaaaaaaa', JSON.stringify(live).length]]));
    // A prune in progress stops a backup the same way.
    await writeFile(join(repo, 'locks', 'aaaaaaaaaaaaaaaa'), JSON.stringify({ ...live, kind: 'exclusive', operation: 'prune' }));
    const blocked = await runCli(['backup', src, '--repo', repo], env());
    expect(blocked.exitCode).toBe(9);
    // The same lock from a process that has exited is stale: removed, and prune goes on.
    const dead = (await execa(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])).stdout;
    await writeFile(join(repo, 'locks', 'aaaaaaaaaaaaaaaa'), JSON.stringify({ ...live, pid: Number(dead) }));
    await ok(['prune', '--repo', repo], env());
    expect(await readdir(join(repo, 'locks'))).toEqual([]);
  });

  it('index files that are gone stay damage when listed again: verify and prune exit 5, prune deleting nothing', async () => {
    const repo = await newRepo('index-gone');
    const src = join(home, 'src-index-gone');
    await makeSource(src, 2, 30_000);
    await backupJson(src, repo, { configDir });
    const before = new Set((await repoFiles(repo)).keys());
    await writeFile(join(src, 'Media', 'IMG-new.jpg'), randomBytes(100_000));
    const second = await backupJson(src, repo, { configDir });
    const added = [...(await repoFiles(repo)).keys()].filter((p) => p.startsWith('index/') && !before.has(p));
    expect(added.length).toBeGreaterThan(0);
    for (const p of added) await rm(join(repo, p));
    const v = await verify(repo);
    expect(v.exitCode).toBe(5);
    expect(v.j).toMatchObject({ damaged: [{ pack: 'index', problem: 'chunks that snapshots need are in no index' }], affected: [{ snapshot: second.snapshot, paths: ['(tree)'] }], listedLate: { index: 0, packs: 0 } });
    const files = await repoFiles(repo);
    const p = await runCli(['prune', '--repo', repo], env());
    expect(p.exitCode, p.stderr).toBe(5);
    expect(p.stderr).toMatch(/^backupctl: the tree of snapshot [0-9a-f]{16}: chunk [0-9a-f]{16} is in no index \(the repository lost data\)\n$/);
    expect([...(await repoFiles(repo)).keys()].filter((f) => !f.startsWith('locks/'))).toEqual([...files.keys()].filter((f) => !f.startsWith('locks/')));
  });

  it('a damaged pack is named with the snapshots and files it costs; an unaffected snapshot still restores', async () => {
    const repo = await newRepo('damaged');
    const src = join(home, 'src-damaged');
    await makeSource(src, 2, 30_000);
    const first = await backupJson(src, repo, { configDir });
    const want = await snapshot(src);
    const packsBefore = new Set([...(await repoFiles(repo)).keys()].filter((p) => p.startsWith('data/')));
    await writeFile(join(src, 'Media', 'VID-new.mp4'), randomBytes(200_000));
    const second = await backupJson(src, repo, { configDir }); // default pack size: one data pack, one tree pack
    const added = [...(await repoFiles(repo)).entries()].filter(([p]) => p.startsWith('data/') && !packsBefore.has(p)).sort((x, y) => y[1] - x[1]);
    expect(added).toHaveLength(2);
    const [victim] = added[0]!; // the larger: the video's data pack
    const bytes = await readFile(join(repo, victim));
    bytes[bytes.length >> 1] ^= 0x40;
    await writeFile(join(repo, victim), bytes);

    const v = await verify(repo, '--read-data');
    expect(v.exitCode).toBe(5);
    expect(v.j.damaged.map((d) => d.pack)).toEqual([victim.split('/').at(-1)]);
    expect(v.j.affected).toEqual([{ snapshot: second.snapshot, paths: ['Media/VID-new.mp4'] }]);
    const human = await runCli(['verify', '--repo', repo, '--read-data'], env());
    expect(human.stdout).toContain(`lost: snapshot ${second.snapshot}: Media/VID-new.mp4`);

    const out = join(home, 'damaged-first');
    await ok(['restore', '--repo', repo, first.snapshot, '-d', out], env());
    expect(await snapshot(out)).toEqual(want);
    const bad = await runCli(['restore', '--repo', repo, second.snapshot, '-d', join(home, 'damaged-second')], env());
    expect(bad.exitCode).toBe(5);
    expect(bad.stderr).toMatch(/failed authentication/);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(await readdir(home)).not.toContain('damaged-second');

    // Salvage (restore's --salvage, when it is given): the intact files restored, the lost one
    // named. Run through the built modules: --salvage itself belongs to archive restore.
    const saved = join(home, 'damaged-salvage');
    const lost = await salvage(repo, second.snapshot, saved);
    expect(lost).toEqual(['Media/VID-new.mp4']);
    const all = await snapshot(src);
    delete all['Media/VID-new.mp4'];
    expect(await snapshot(saved)).toEqual(all);

    // A pack that is gone is found without reading any data.
    await rm(join(repo, victim));
    const gone = await verify(repo);
    expect(gone.exitCode).toBe(5);
    expect(gone.j.damaged).toEqual([{ pack: victim.split('/').at(-1), problem: 'missing' }]);
    expect(gone.j.affected).toEqual([{ snapshot: second.snapshot, paths: ['Media/VID-new.mp4'] }]);
  });
});
