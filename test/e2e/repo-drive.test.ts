// The snapshot repository on Google Drive (`--repo drive:NAME`, backupctl-repository(5) "ON GOOGLE
// DRIVE"), end to end through the built CLI against the Drive fake on 127.0.0.1: nights of
// backups restored byte-identical with the API calls, files created and bytes moved asserted as
// bounds; the same under Drive's failure modes; a backup killed mid-pack resumed without sending
// acknowledged bytes again; a fresh machine restoring and backing up; prune beside a backup; a
// dead machine's lock; a one-file restore reading by range; `drive list`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { DriveFake, type Fault } from '../support/drive-fake/server.js';
import { STACK_TRACE, makeHome, newRecoveryCode, onlyJson, runCli, snapshot, startCli, type RecoveryCode } from '../support/cli.js';
import { ok, type BackupJson } from '../support/repo.js';

const MiB = 1024 * 1024;
const KiB = 1024;
let fake: DriveFake;
let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;
const REPO = 'drive:nightly';

/** A token file as `drive login` leaves it, so that expired access tokens are refreshed. */
async function logIn(dir: string): Promise<void> {
  const t = fake.issueLogin();
  await writeFile(join(dir, 'drive-token.json'), JSON.stringify({ version: 1, clientId: fake.clientId, clientSecret: fake.clientSecret, tokens: { access_token: t.access, refresh_token: t.refresh, token_type: 'Bearer' }, loggedIn: new Date().toISOString() }), { mode: 0o600 });
}
const env = (extra: Record<string, string> = {}) => ({
  BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl,
  BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl,
  BACKUPCTL_RETRY_BASE_MS: '5',
  BACKUPCTL_DRIVE_LIST_SETTLE_MS: '0',
  BACKUPCTL_DEBUG: '1',
  ...extra,
});
const opts = (extra: Record<string, string> = {}, dir = configDir) => ({ configDir: dir, env: env(extra), timeoutMs: 60_000 });
/** Resumable uploads in 256 KiB chunks and packs of 1 MiB, so that small data crosses many chunks. */
const SMALL_CHUNKS = { BACKUPCTL_DRIVE_CHUNK_SIZE: String(256 * KiB), BACKUPCTL_REPO_PACK_SIZE: String(MiB) };

function chatText(n: number, seed: number): string {
  const words = 'ok yes no see you tomorrow at the station thanks haha photo sent lunch running late call me'.split(' ');
  let s = '';
  for (let i = seed; s.length < n; i++) s += `[${i}] ${['Alice', 'Bob', 'Zoë'][i % 3]}: ${Array.from({ length: 3 + (i % 7) }, (_, k) => words[(i * 7 + k * 5) % words.length]).join(' ')}\n`;
  return s;
}

interface Cost {
  calls: number;
  created: number;
  up: number;
  down: number;
}
/** Run `fn` with the fake's counters zeroed: what it cost on Drive. */
async function counted<T>(fn: () => Promise<T>): Promise<[T, Cost]> {
  fake.resetCounters();
  const r = await fn();
  return [r, { calls: fake.apiCalls, created: fake.filesCreated, up: fake.uploadBytesReceived, down: fake.downloadBytesSent }];
}
const figures: string[] = [];

/** Snapshot id -> the tree it must restore to; the ones restored already. */
const expected = new Map<string, Awaited<ReturnType<typeof snapshot>>>();
const restored = new Set<string>();
const backup = async (extra: Record<string, string> = {}, dir = configDir) => {
  const b = await ok<BackupJson>(['backup', src, '--repo', REPO], opts(extra, dir));
  expected.set(b.snapshot, await snapshot(src));
  return b;
};
/**
 * Restore every snapshot not restored yet, each once, and one of those with the same content
 * (a night with nothing changed shares every pack with the night before): CLI runs are what
 * the time goes into.
 */
const restoredTrees = new Set<string>();
async function restoresAll(extra: Record<string, string> = {}): Promise<void> {
  for (const [id, tree] of expected) {
    if (restored.has(id) || restoredTrees.has(JSON.stringify(tree))) continue;
    restored.add(id);
    restoredTrees.add(JSON.stringify(tree));
    const dest = join(home, `restored-${id}-${randomBytes(4).toString('hex')}`);
    await ok(['restore', '--repo', REPO, id, '-d', dest, '--recovery-code-file', rc.file], opts(extra));
    expect(await snapshot(dest), `snapshot ${id}`).toEqual(tree);
  }
}
/** Repository paths on Drive held by more than one file. */
const duplicatedPaths = () => {
  const n = new Map<string, number>();
  for (const f of fake.files.values()) if (f.appProperties.backupctlPath && !f.appProperties.backupctlPath.endsWith('/')) n.set(f.appProperties.backupctlPath, (n.get(f.appProperties.backupctlPath) ?? 0) + 1);
  return [...n].filter(([, k]) => k > 1).map(([p]) => p);
};

beforeAll(async () => {
  fake = await new DriveFake({ maxPageItems: 1000, emptyFirstPage: false }).start();
  ({ home, configDir, cleanup } = await makeHome('backupctl-repo-drive-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  await logIn(configDir);
  src = join(home, 'export');
  await mkdir(join(src, 'Media'), { recursive: true });
  await writeFile(join(src, '_chat.txt'), chatText(1_000_000, 0));
  for (let i = 0; i < 4; i++) await writeFile(join(src, 'Media', `IMG-${i}.jpg`), randomBytes(MiB));
});
afterAll(async () => {
  console.log(`repository on Drive, per run:\n${figures.join('\n')}`);
  await fake?.stop();
  await cleanup?.();
});

describe('repository on Google Drive', () => {
  it('a night costs a handful of calls and files: nothing changed <= 5 calls, 1% <= 15 calls and 5 files; every snapshot restores', async () => {
    const [init] = await counted(() => ok<{ id: string }>(['repo', 'init', REPO], opts()));
    expect(init.id).toMatch(/^[0-9a-f]{32}$/);
    const again = await runCli(['repo', 'init', REPO], opts());
    expect(again.exitCode).toBe(6);
    expect(again.stderr).toMatch(/already a backupctl repository/);

    const [first, firstCost] = await counted(() => backup());
    figures.push(`first backup (${(first.bytes / 1e6).toFixed(1)} MB): ${JSON.stringify(firstCost)}`);
    expect(firstCost.up).toBeLessThan(first.storedBytes + 100 * KiB);

    const [, unchanged] = await counted(() => backup());
    figures.push(`night, nothing changed: ${JSON.stringify(unchanged)}`);
    expect(unchanged.calls).toBeLessThanOrEqual(5);
    expect(unchanged.created).toBeLessThanOrEqual(1); // the snapshot (the lock file is this machine's, taken again)
    expect(unchanged.up).toBeLessThan(10 * KiB);
    expect(unchanged.down).toBe(0); // index files come from the cache

    // A 1% night: the chat log grows by 1%, a new photo.
    await appendFile(join(src, '_chat.txt'), chatText(10_000, 99_999));
    await writeFile(join(src, 'Media', 'IMG-new.jpg'), randomBytes(300_000));
    const newBytes = 10_000 + 300_000;
    const [pct, pctCost] = await counted(() => backup());
    figures.push(`night, 1% changed (${newBytes} new bytes): ${JSON.stringify(pctCost)}`);
    expect(pct.bytesRead).toBeLessThan(1_400_000); // the files cache: only the changed files are read
    expect(pctCost.calls).toBeLessThanOrEqual(15);
    expect(pctCost.created).toBeLessThanOrEqual(5); // data pack + its index, tree pack + its index, snapshot
    expect(pctCost.up).toBeLessThanOrEqual(1.1 * newBytes + MiB);

    const list = await ok<{ snapshots: unknown[] }>(['snapshots', '--repo', REPO], opts());
    expect(list.snapshots).toHaveLength(3);
    const [, restoreCost] = await counted(() => restoresAll());
    figures.push(`restore of the snapshots with distinct content (2 of 3): ${JSON.stringify(restoreCost)}`);
    // No folder of data/ nears Drive's item limit: packs are spread over 16 shard folders.
    const shards = [...fake.files.values()].filter((f) => /^data\/[0-9a-f]\/$/.test(f.appProperties.backupctlPath ?? ''));
    expect(shards).toHaveLength(16);
  });

  it('restoring one file downloads at most its stored size plus 2 MB (ranges of the packs it uses)', async () => {
    const [r, cost] = await counted(() => ok(['restore', '--repo', REPO, 'latest', '-d', join(home, 'one'), '--only', 'Media/IMG-2.jpg', '--recovery-code-file', rc.file], opts()));
    expect(r).toMatchObject({ ok: true });
    expect(await readFile(join(home, 'one', 'Media', 'IMG-2.jpg'))).toEqual(await readFile(join(src, 'Media', 'IMG-2.jpg')));
    figures.push(`restore of one 1 MiB file: ${JSON.stringify(cost)}`);
    // The tree's pack is small enough to come whole with its header; the file's pack in two
    // requests: its header, then the segments the file needs (before: 3 requests a pack).
    const media = fake.requests.filter((q) => q.on === 'media');
    const perPack = new Map<string, number>();
    for (const q of media) perPack.set(q.path.split('/')[4]!, (perPack.get(q.path.split('/')[4]!) ?? 0) + 1);
    expect([...perPack.values()].sort()).toEqual([1, 2]);
    expect(cost.down).toBeLessThanOrEqual(MiB + 2e6);
    expect(fake.requests.filter((q) => q.on === 'media').every((q) => q.path.includes('/revisions/'))).toBe(true); // pinned revisions
    // A snapshot out of the Drive repository as a single-file archive, which opens like any.
    const out = join(home, 'latest.bctl');
    await ok(['export', '--repo', REPO, 'latest', '-o', out, '--recovery-code-file', rc.file], opts());
    await ok(['verify', out, '--recovery-code-file', rc.file], opts());
  });

  it("under Drive's failures (5xx, 429, 403 rate limits, cut and lost chunks, lost create replies, expired sessions and tokens, cut downloads) nights complete and restore", async () => {
    const faults: Fault[] = [
      { on: 'session', action: { status: 503 } },
      { on: 'chunk', skip: 1, action: { status: 500 } },
      { on: 'chunk', skip: 2, action: { status: 429, retryAfter: 0 } },
      { on: 'chunk', skip: 3, action: { status: 403, reason: 'userRateLimitExceeded' } },
      { on: 'chunk', skip: 4, action: { drop: true } },
      { on: 'chunk', skip: 6, action: { expireSession: true } },
      { on: 'chunk', skip: 8, action: { expireToken: true } },
      { on: 'chunk', final: true, action: { loseResponse: true } }, // the file is complete; only the reply is lost
      { on: 'upload', skip: 1, action: { status: 403, reason: 'rateLimitExceeded' } },
      { on: 'upload', skip: 2, action: { loseResponse: true } }, // created, reply lost: the retry makes a second file
      { on: 'list', action: { status: 502 } },
    ];
    fake.inject(...faults);
    for (let i = 0; i < 3; i++) await writeFile(join(src, 'Media', `VID-${i}.mp4`), randomBytes(700_000));
    await appendFile(join(src, '_chat.txt'), chatText(20_000, 123_456));
    const b = await backup(SMALL_CHUNKS);
    expect(b.packs).toBeGreaterThan(1);
    expect(fake.pendingFaults()).toEqual([]);
    expect(duplicatedPaths()).toHaveLength(1); // the lost create reply

    fake.inject({ on: 'media', skip: 1, action: { drop: true } }, { on: 'media', skip: 4, action: { status: 503 } }, { on: 'get', action: { status: 500 } });
    await restoresAll();
    // A duplicate is never counted twice: the four snapshots so far, once each.
    const ids = (await ok<{ snapshots: Array<{ id: string }> }>(['snapshots', '--repo', REPO], opts())).snapshots.map((x) => x.id);
    expect(ids.sort()).toEqual([...expected.keys()].sort());
    // A quota error is fatal with what to do; the next run goes on.
    fake.inject({ on: 'upload', action: { status: 403, reason: 'storageQuotaExceeded' } });
    await writeFile(join(src, 'note.txt'), 'one more\n');
    const full = await runCli(['backup', src, '--repo', REPO], opts());
    expect(full.exitCode).toBe(8);
    expect(full.stderr).toMatch(/storage is full/);
    expect(full.stderr).not.toMatch(STACK_TRACE);
    // prune (locked) first uploads what the failed run left in the outbox, then removes the extra copy, and nothing a snapshot needs.
    fake.resetCounters();
    await ok(['prune', '--repo', REPO, '--recovery-code-file', rc.file], opts());
    expect(duplicatedPaths()).toEqual([]);
    expect(fake.filesCreated).toBeGreaterThan(0); // the failed run's snapshot and index went up
    // verify reads every byte of every pack left: prune kept what the snapshots need.
    await ok(['verify', '--repo', REPO, '--read-data', '--recovery-code-file', rc.file], opts());
  });

  it('a backup killed mid-pack resumes the upload session next time without sending acknowledged bytes again', async () => {
    const video = randomBytes(3 * MiB);
    await writeFile(join(src, 'Media', 'VID-long.mp4'), video);
    const env4 = { ...SMALL_CHUNKS, BACKUPCTL_REPO_PACK_SIZE: String(4 * MiB) };
    // The 6th chunk never gets a reply (the network went away): 5 x 256 KiB are acknowledged.
    fake.inject({ on: 'chunk', skip: 5, action: { hang: true } });
    fake.resetCounters();
    const child = startCli(['backup', src, '--repo', REPO], opts(env4));
    for (let i = 0; i < 400 && fake.requests.filter((r) => r.on === 'chunk').length < 6; i++) await new Promise((r) => setTimeout(r, 25));
    await new Promise((r) => setTimeout(r, 200));
    process.kill(-child.pid!, 'SIGKILL');
    await child.catch(() => {});
    const acked = 5 * 256 * KiB;
    const sentBefore = fake.uploadBytesReceived;
    expect(sentBefore).toBeGreaterThan(acked);

    const [b, cost] = await counted(() => backup(env4));
    figures.push(`backup after kill -9 mid-pack (${acked} bytes acknowledged before): ${JSON.stringify(cost)}`);
    // The pack is finished from where Drive stood; its index went up before this run looked: nothing stored twice.
    const packBytes = [...fake.files.values()].filter((f) => f.appProperties.backupctlPath?.startsWith('data/') && f.revisions.length).map((f) => f.revisions.at(-1)!.content.length);
    const biggest = Math.max(...packBytes);
    expect(cost.up).toBeLessThan(biggest - acked + 200 * KiB);
    expect(b.newChunks).toBeLessThan(5);
    expect(fake.requests.some((r) => r.on === 'probe')).toBe(true); // asked Drive where it stood
    // ... and went on from there: the first chunk sent starts at the first byte not acknowledged.
    expect(fake.requests.find((r) => r.on === 'chunk')?.contentRange).toMatch(new RegExp(`^bytes ${acked}-`));
    await restoresAll();
  });

  it('a fresh machine (new config, recovery code) restores, then backs up into the same repository storing nothing twice', async () => {
    const { configDir: other, cleanup: done } = await makeHome('backupctl-repo-drive-2-');
    try {
      await mkdir(other, { recursive: true, mode: 0o700 });
      await logIn(other);
      await ok(['repo', 'unlock', REPO, '--recovery-code-file', rc.file], opts({}, other));
      const dest = join(home, 'fresh-restore');
      await ok(['restore', '--repo', REPO, 'latest', '-d', dest, '--recovery-code-file', rc.file], opts({}, other));
      expect(await snapshot(dest)).toEqual(await snapshot(src));
      const [b, cost] = await counted(() => backup({}, other));
      figures.push(`fresh machine, first backup (no cache): ${JSON.stringify(cost)}`);
      expect(b.newChunks).toBe(0);
      expect(cost.up).toBeLessThan(20 * KiB);
    } finally {
      await done();
    }
  });

  it('forget --prune beside a concurrent backup: both finish or one waits its turn (9), and nothing a snapshot needs is lost', async () => {
    await appendFile(join(src, '_chat.txt'), chatText(5_000, 777));
    const a = startCli(['--json', 'backup', src, '--repo', REPO], opts());
    const p = startCli(['--json', 'forget', '--repo', REPO, '--keep-last', '3', '--prune', '--recovery-code-file', rc.file], opts());
    const [ra, rp] = await Promise.all([a, p]);
    expect([0, 9]).toContain(ra.exitCode);
    expect([0, 9]).toContain(rp.exitCode);
    expect(ra.stderr + rp.stderr).not.toMatch(STACK_TRACE);
    if (ra.exitCode === 0) expected.set(onlyJson<{ snapshot: string }>(ra).snapshot, await snapshot(src));
    const live = new Set((await ok<{ snapshots: Array<{ id: string }> }>(['snapshots', '--repo', REPO], opts())).snapshots.map((s) => s.id));
    for (const id of expected.keys()) if (!live.has(id)) expected.delete(id);
    await ok(['verify', '--repo', REPO, '--read-data', '--recovery-code-file', rc.file], opts());
  });

  it('prune never deletes on one listing: a snapshot Drive did not list at first stops it (9) before anything is deleted', async () => {
    await writeFile(join(src, 'Media', 'IMG-lag.jpg'), randomBytes(100_000));
    const b = await backup();
    // Drive's listings lag: the new snapshot file is missing from prune's first two listings (the
    // one that finds the keys file and the one after its lock), as if just written.
    const snap = [...fake.files.values()].find((f) => f.appProperties.backupctlPath === `snapshots/${b.snapshot}`)!;
    fake.hideFromListings(snap.id, 2);
    const before = new Set(fake.files.keys());
    const p = await runCli(['prune', '--repo', REPO, '--recovery-code-file', rc.file], opts());
    expect(p.exitCode, p.stderr).toBe(9);
    expect(p.stderr).toBe(`backupctl: drive:nightly changed while prune looked at it (snapshots/${b.snapshot} was not listed by Drive yet): nothing was deleted; try again when other runs have finished\n`);
    expect([...before].filter((id) => !fake.files.has(id))).toEqual([]); // nothing deleted
    await ok(['prune', '--repo', REPO, '--recovery-code-file', rc.file], opts());
    await restoresAll();
  });

  it('index files and packs Drive did not list yet are no damage: verify, restore and prune list again after the settle time, find them and go on', async () => {
    const under = (dir: string) => [...fake.files.values()].filter((f) => f.appProperties.backupctlPath?.startsWith(dir));
    const before = new Set(under('').map((f) => f.id));
    await writeFile(join(src, 'Media', 'IMG-unlisted.jpg'), randomBytes(100_000));
    const b = await backup();
    const fresh = under('index/').filter((f) => !before.has(f.id));
    const packs = under('data/').filter((f) => !before.has(f.id) && !f.appProperties.backupctlPath!.endsWith('/'));
    expect(Math.min(fresh.length, packs.length)).toBeGreaterThan(0);
    // Left out of the listings a run takes before it reads the index (verify: one; prune: the one
    // that finds the keys file and the one after its lock), as if just written.
    const hide = (listings: number) => fresh.forEach((f) => fake.hideFromListings(f.id, listings));
    hide(1);
    const v = await runCli(['--json', 'verify', '--repo', REPO, '--recovery-code-file', rc.file], opts());
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
    expect(onlyJson(v)).toMatchObject({ ok: true, damaged: [], affected: [], listedLate: { index: fresh.length, packs: 0 } });
    hide(1);
    const data = await runCli(['verify', '--repo', REPO, '--read-data', '--recovery-code-file', rc.file], opts());
    expect(data.exitCode, data.stdout + data.stderr).toBe(0);
    expect(data.stderr).toContain(`note: ${fresh.length} index file(s) of a backup that had just finished were listed only the second time, and verified\n`);
    // The packs, left out of the listing of data/ (index files listed): not "missing" either.
    packs.forEach((f) => fake.hideFromListings(f.id, 1));
    const vp = await runCli(['--json', 'verify', '--repo', REPO, '--read-data', '--recovery-code-file', rc.file], opts());
    expect(vp.exitCode, vp.stdout + vp.stderr).toBe(0);
    expect(onlyJson(vp)).toMatchObject({ ok: true, damaged: [], affected: [], listedLate: { index: 0, packs: packs.length } });
    hide(1);
    const dest = join(home, 'restored-unlisted');
    const r = await runCli(['restore', '--repo', REPO, 'latest', '-d', dest, '--recovery-code-file', rc.file], opts());
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await snapshot(dest)).toEqual(expected.get(b.snapshot));
    hide(2);
    const p = await runCli(['prune', '--repo', REPO, '--recovery-code-file', rc.file], opts());
    expect(p.exitCode, p.stderr).toBe(0);
    await ok(['verify', '--repo', REPO, '--read-data', '--recovery-code-file', rc.file], opts());
    await restoresAll();
  });

  it('repo rotate --new-read-key on Drive: later nights seal to the new key, still in a handful of calls, and restore', async () => {
    await ok(['repo', 'rotate', REPO, '--new-read-key', '--recovery-code-file', rc.file], opts());
    await writeFile(join(src, 'Media', 'IMG-after-rotate.jpg'), randomBytes(200_000));
    await backup();
    const [, night] = await counted(() => backup());
    figures.push(`night, nothing changed, after a rotate (read-key file cached): ${JSON.stringify(night)}`);
    expect(night.calls).toBeLessThanOrEqual(5);
    expect(night.down).toBe(0);
    await restoresAll();
  });

  it("a dead machine's lock blocks prune with what to do; repo break-lock removes stale locks, --all a fresh one", async () => {
    const root = [...fake.files.values()].find((f) => f.appProperties.backupctlRepository === '1')!;
    const locks = [...fake.files.values()].find((f) => f.appProperties.backupctlPath === 'locks/')!;
    const plant = (name: string, minutesAgo: number) =>
      fake.addFile(
        { name, parents: [locks.id], appProperties: { backupctlRepo: root.id, backupctlPath: `locks/${name}`, backupctlKind: 'meta' } },
        Buffer.from(JSON.stringify({ kind: 'shared', host: 'laptop-lost', pid: 4242, operation: 'backup', time: new Date(Date.now() - minutesAgo * 60_000).toISOString() }) + '\n'),
      );
    plant('0000000000000001', 10);
    plant('0000000000000002', 120);
    const blocked = await runCli(['prune', '--repo', REPO, '--recovery-code-file', rc.file], opts());
    expect(blocked.exitCode).toBe(9);
    expect(blocked.stderr).toMatch(/in use \(backup on laptop-lost, pid 4242.*backupctl repo break-lock drive:nightly --all/);
    const kept = await ok<{ removed: unknown[]; kept: unknown[] }>(['repo', 'break-lock', REPO], opts());
    expect(kept.kept).toEqual([expect.objectContaining({ host: 'laptop-lost' })]);
    expect(fake.findByName('0000000000000002')).toEqual([]); // stale: gone (with prune's look at it, or now)
    const all = await ok<{ removed: Array<{ host: string }> }>(['repo', 'break-lock', REPO, '--all'], opts());
    expect(all.removed.map((l) => l.host)).toEqual(['laptop-lost']);
    await ok(['prune', '--repo', REPO, '--recovery-code-file', rc.file], opts());
  });

  it('drive list shows the repository apart from archives; push goes on working; a repository gone from Drive is refused', async () => {
    const archive = join(home, 'one.bkp');
    expect((await runCli(['create', src, '-o', archive], opts())).exitCode).toBe(0);
    expect((await runCli(['push', archive], opts())).exitCode).toBe(0);
    const l = await ok<{ files: Array<{ name: string }>; repositories: Array<{ name: string; repo: string }> }>(['drive', 'list'], opts());
    expect(l.files.map((f) => f.name)).toEqual(['one.bkp']);
    expect(l.repositories).toEqual([expect.objectContaining({ name: 'nightly', repo: 'drive:nightly' })]);
    const text = await runCli(['drive', 'list'], opts());
    expect(text.stdout).toMatch(/^repository .* drive:nightly$/m);
    // The cache is not trusted over Drive: a repository whose marker is gone there is refused, not written into.
    for (const f of fake.findByName('backupctl-repository')) fake.files.delete(f.id);
    const gone = await runCli(['backup', src, '--repo', REPO], opts());
    expect(gone.exitCode).toBe(6);
    expect(gone.stderr).toMatch(/^backupctl: drive:nightly is no longer a backupctl repository \(its backupctl-repository file is gone from Drive\)/);
    expect(fake.findByName('nightly')).toHaveLength(1); // no second repository folder made
    const bad = await runCli(['snapshots', '--repo', 'drive:a/b'], opts());
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/^backupctl: bad repository name "a\/b" in drive:a\/b: give drive:NAME[^\n]*\n$/);
  });

  it('a file whose chunks lie apart in a pack is read with one request for them: Drive reads through what lies between (2 MiB at most)', async () => {
    // One pack holds a, then d (1 MiB, 16 segments), then b; the file ab (a then b) needs a's and
    // b's chunks from it, and the one chunk spanning their join from the second night's pack.
    // 3,000 small files make a tree of several chunks, which come in one request too.
    const repo = 'drive:gaps';
    const dir = join(home, 'gaps');
    await mkdir(join(dir, 'm'), { recursive: true });
    for (let i = 0; i < 3000; i++) await writeFile(join(dir, 'm', `note-${i}.txt`), `note ${i}\n`);
    const a = randomBytes(1.5 * MiB);
    const b = randomBytes(1.5 * MiB);
    await writeFile(join(dir, '1-a.bin'), a);
    await writeFile(join(dir, '2-d.bin'), randomBytes(MiB));
    await writeFile(join(dir, '3-b.bin'), b);
    await ok(['repo', 'init', repo], opts());
    await ok(['backup', dir, '--repo', repo], opts());
    await writeFile(join(dir, '4-ab.bin'), Buffer.concat([a, b]));
    await ok(['backup', dir, '--repo', repo], opts());
    const [, cost] = await counted(() => ok(['restore', '--repo', repo, 'latest', '-d', join(home, 'gaps-out'), '--only', '4-ab.bin', '--recovery-code-file', rc.file], opts()));
    expect(await readFile(join(home, 'gaps-out', '4-ab.bin'))).toEqual(Buffer.concat([a, b]));
    const perPack = new Map<string, number>();
    for (const q of fake.requests.filter((r) => r.on === 'media')) perPack.set(q.path.split('/')[4]!, (perPack.get(q.path.split('/')[4]!) ?? 0) + 1);
    figures.push(`restore of a 3 MiB file from two packs, its chunks apart in one: ${JSON.stringify(cost)}, requests per pack ${JSON.stringify([...perPack.values()])}`);
    // Every pack in two requests: its header, then what the restore needs of it (before: 3, 4 for
    // the one with the gap, and one more per chunk of the tree).
    expect(Math.max(...perPack.values())).toBeLessThanOrEqual(2);
    expect(cost.down).toBeLessThanOrEqual(4 * MiB + 2e6); // d is read through once
  });
});
