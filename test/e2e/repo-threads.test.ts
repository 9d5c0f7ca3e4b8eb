// The repository's threads (backupctl-repository(5) CONSISTENCY): a backup seals packs on a
// thread of its own, which writes them too, compresses text in batches and hashes stored content when it has the time, and
// writes two packs at once; a restore reads each pack once and writes it on two threads. Killed
// at any write they leave the repository consistent; a thread that fails ends the command in one
// line and leaves no temporary file; a chunk found stored only once its id is in is taken out of
// the pack again; a file spread over packs restores whole.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFile, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { STACK_TRACE, makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { backupJson, ok, repoBytes } from '../support/repo.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
/** Packs of 1.2 MiB: over the size sealed on a thread, and a few of them for a few MB. */
const PACKS = { BACKUPCTL_REPO_PACK_SIZE: String(1_200_000) };
const env = (extra: Record<string, string> = {}) => ({ configDir, env: { ...PACKS, BACKUPCTL_RECOVERY_CODE: rc.code, ...extra } });

/** Media of 300 KB, a video spread over packs (three pieces of up to 1 MiB) and a chat log. */
async function makeSource(dir: string): Promise<void> {
  await mkdir(join(dir, 'Media'), { recursive: true });
  for (let i = 0; i < 3; i++) await writeFile(join(dir, 'Media', `IMG-${i}.jpg`), randomBytes(300_000));
  await writeFile(join(dir, 'Media', 'VID-0.mp4'), randomBytes(2_200_000));
  // 13 KB, under the smallest chunk: one chunk whatever the key (52 KB were cut in two for about one key in six).
  await writeFile(join(dir, '_chat.txt'), Array.from({ length: 500 }, (_, i) => `[${i}] Bob: see you at ${i % 24}h\n`).join(''));
}

async function newRepo(name: string): Promise<string> {
  const repo = join(home, name);
  await ok(['repo', 'init', repo], { configDir });
  return repo;
}

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-repo-threads-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
});
afterAll(() => cleanup());

describe('repository threads', () => {
  it('kill -9 at every write of a backup that seals and writes packs on its thread: always consistent, then whole', async () => {
    const repo = await newRepo('killed');
    const src = join(home, 'src-killed');
    await makeSource(src);
    let kills = 0;
    for (let n = 1; n < 60; n++) {
      const r = await runCli(['backup', src, '--repo', repo], env({ BACKUPCTL_TEST_KILL_AT_WRITE: String(n) }));
      if (r.exitCode === 0) break;
      expect(r.exitCode, r.stderr).toBe(-1); // SIGKILL
      kills++;
      // No snapshot before a run completes; an index naming a pack that is not there stays named
      // by the index to the end, where verify would find it (no run deletes anything).
      expect((await readdir(join(repo, 'snapshots')).catch(() => [])).filter((n) => !n.startsWith('.'))).toEqual([]); // a killed write's temporary file aside
    }
    expect(kills).toBeGreaterThanOrEqual(5); // the lock, packs sealed on the thread, their index files, the tree, the snapshot
    const v = await runCli(['--json', 'verify', '--repo', repo, '--read-data'], env());
    expect(v.exitCode, v.stdout).toBe(0);
    expect(JSON.parse(v.stdout.trim().split('\n').at(-1)!)).toMatchObject({ snapshots: 1, duplicates: 0 });
    // The video is in more than one pack: restored whole, with its mode and time, by the restore threads.
    const out = join(home, 'killed-restore');
    await ok(['restore', '--repo', repo, 'latest', '-d', out], env());
    expect(await snapshot(out)).toEqual(await snapshot(src));
  });

  it('a sealing thread that fails ends the backup in one line, exit 1, with nothing committed and no cache left', async () => {
    const repo = await newRepo('failing');
    const src = join(home, 'src-failing');
    await makeSource(src);
    const r = await runCli(['backup', src, '--repo', repo], env({ BACKUPCTL_TEST_PACK_THREAD_FAILS: '1' }));
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^backupctl: a thread writing packs failed \(.*\); nothing refers to the packs it did not write/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
    expect(await readdir(join(repo, 'snapshots')).catch(() => [])).toEqual([]);
    expect(await readdir(join(repo, 'locks'))).toEqual([]);
    expect((await readdir(join(repo, 'data'), { recursive: true })).filter((n) => n.split('/').at(-1)!.startsWith('.'))).toEqual([]); // the pack's temporary file is gone
    const id = (JSON.parse(await readFile(join(repo, 'backupctl-repository'), 'utf8')) as { id: string }).id;
    expect(await readdir(join(configDir, 'repositories', `${id}.files`))).toEqual([]); // the new cache's temporary file is gone
    const j = await backupJson(src, repo, env()); // the next run completes
    expect(j.files).toBe(5);
  });

  it('a copy read in the same backup is stored once, also when its id comes from the sealing thread', async () => {
    const repo = await newRepo('copies');
    const src = join(home, 'src-copies');
    await makeSource(src);
    // Read after the video, once the first pack is on the sealing thread: its id likely comes from
    // there, too late to leave it out, so it is taken out again and the chat log after it moved down.
    await copyFile(join(src, 'Media', 'IMG-0.jpg'), join(src, 'Media', 'zz-IMG-0-copy.jpg'));
    const j = await backupJson(src, repo, env());
    // 3 photos, 3 pieces of the video, the chat log's chunk, the tree: the copy adds none.
    expect(j.newChunks).toBe(3 + 3 + 1 + 1);
    const media = 3 * 300_000 + 2_200_000;
    expect(await repoBytes(repo)).toBeLessThan(media * 1.13 + 100_000);
    const out = join(home, 'copies-restore');
    await ok(['restore', '--repo', repo, 'latest', '-d', out], env());
    expect(await snapshot(out)).toEqual(await snapshot(src));
  });

  it('text read once the sealing thread runs is compressed there in batches: a log that repeats itself stores its chunks once, compressed, and restores whole', async () => {
    // 300 KB of chat lines, varied enough that its chunks differ (a fixed sequence, not random: the
    // same bytes every run); three times that is under a batch, so copies meet in the batch gathered.
    let x = 1;
    const next = () => (x = (x * 1103515245 + 12345) % 2 ** 31);
    const words = ['see', 'you', 'at', 'the', 'station', 'tomorrow', 'photo', 'sent', 'ok', 'lol', 'dinner', 'when'];
    let once = '';
    for (let i = 0; once.length < 300_000; i++) once += `[${i}] ${next() % 2 ? 'Alice' : 'Bob'}: ${Array.from({ length: 6 }, () => words[next() % words.length]).join(' ')} ${next()}\n`;
    const stored = async (name: string, log: string) => {
      const repo = await newRepo(name);
      const src = join(home, `src-${name}`);
      await makeSource(src); // its media come first: the thread seals their packs before the log is read
      await writeFile(join(src, 'log.txt'), log);
      await backupJson(src, repo, env());
      const v = await ok<{ duplicates: number }>(['verify', '--repo', repo, '--read-data'], env());
      expect(v.duplicates).toBe(0);
      const out = join(home, `${name}-restore`);
      await ok(['restore', '--repo', repo, 'latest', '-d', out], env());
      expect(await snapshot(out)).toEqual(await snapshot(src));
      return repoBytes(repo);
    };
    const single = await stored('text-once', once);
    const thrice = await stored('text-thrice', once + once + once);
    // The copies' chunks are those of the first (met while it is still in the batch), but for the
    // chunks around where each starts: at most 2 of 256 KiB each.
    expect(thrice - single).toBeLessThan(4 * 256 * 1024);
    // And the log is stored compressed: its bytes in the repository are well under its length.
    const media = 3 * 300_000 + 2_200_000;
    expect(single - media * 1.13).toBeLessThan(0.6 * once.length);
  });
});
