// The snapshot repository on a local directory (backupctl-repository(5)), end to end through the
// built CLI: nightly backups that store only what changed, restored byte-identical; no secret for
// backup; the files cache is disposable; a fresh machine restores with a recovery code and then
// goes on backing up.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFile, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { STACK_TRACE, exists, makeExportTree, makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { backupJson, ok, repoBytes, repoFiles } from '../support/repo.js';
import { DedupKeys } from '../../src/repo/keys.js';
import { SealedFile } from '../../src/repo/sealed.js';
import { unwrapX25519 } from '../../src/keys/x25519.js';
import { b64decode } from '../../src/util/base64.js';
import { LocalStore } from '../../src/store/local.js';
import { BlobType, RepoIndex } from '../../src/repo/index.js';
import { PackWriter } from '../../src/repo/pack.js';
import { encodeEntry } from '../../src/repo/tree.js';
import { writeSnapshot } from '../../src/repo/snapshot.js';
import { EntryType } from '../../src/archive/format.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;
let repo: string;
const withCode = () => ({ configDir, env: { BACKUPCTL_RECOVERY_CODE: rc.code } });

/** A chat log of about `n` bytes: lines of text, as an export's _chat.txt. */
function chatText(n: number, seed: number): string {
  const words = 'ok yes no see you tomorrow at the station thanks haha photo sent lunch running late call me'.split(' ');
  let s = '';
  for (let i = seed; s.length < n; i++) s += `[${i}] ${['Alice', 'Bob', 'Zoë'][i % 3]}: ${Array.from({ length: 3 + (i % 7) }, (_, k) => words[(i * 7 + k * 5) % words.length]).join(' ')}\n`;
  return s;
}

/** Snapshot id → the tree it must restore to. */
const expected = new Map<string, Awaited<ReturnType<typeof snapshot>>>();

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-repo-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  src = join(home, 'export');
  await makeExportTree(src);
  await writeFile(join(src, 'big-chat.txt'), chatText(2_000_000, 0));
  repo = join(home, 'repo');
});
afterAll(() => cleanup());

/**
 * `n` photos IMG-000.jpg… in a new `dir`, of `from` to `from + spread` bytes from a fixed sequence
 * (stored content is not cut by content, so where packs end depends on the sizes alone); their bytes.
 */
async function writePhotos(dir: string, n: number, from: number, spread: number): Promise<number> {
  await mkdir(dir);
  let raw = 0;
  for (let i = 0; i < n; i++) {
    const size = from + ((i * 7919 * 104_729) % spread);
    await writeFile(join(dir, `IMG-${String(i).padStart(3, '0')}.jpg`), randomBytes(size));
    raw += size;
  }
  return raw;
}

/** Bytes of `r`'s packs. */
async function packedBytes(r: string): Promise<number> {
  let packed = 0;
  for (const [p, size] of await repoFiles(r)) if (p.startsWith('data/')) packed += size;
  return packed;
}

describe('repository: init, nightly backups, restore', () => {
  it('repo init needs no secret and leaves this machine only what backup needs', async () => {
    const j = await ok<{ id: string }>(['repo', 'init', repo], { configDir });
    expect(j.id).toMatch(/^[0-9a-f]{32}$/);
    const files = [...(await repoFiles(repo)).keys()].sort();
    expect(files).toEqual(['backupctl-repository', 'keys']);
    const held = JSON.parse(await readFile(join(configDir, 'repositories', `${j.id}.json`), 'utf8'));
    expect(Object.keys(held).sort()).toEqual(['dedupKey', 'generation', 'readPublic', 'repository', 'signPublic']);
    const again = await runCli(['repo', 'init', repo], { configDir });
    expect(again.exitCode).toBe(6);
    expect(again.stderr).toMatch(/already a backupctl repository/);
    // Never into a directory that holds something else (the export, a home directory).
    const full = await runCli(['repo', 'init', join(home, 'export')], { configDir });
    expect(full.exitCode).toBe(6);
    expect(full.stderr).toMatch(/is not empty/);
    expect(await exists(join(home, 'export', 'keys'))).toBe(false);
  });

  it('the first backup stores the export once; a night with nothing changed reads and stores almost nothing', async () => {
    const first = await backupJson(src, repo, { configDir });
    expected.set(first.snapshot, await snapshot(src));
    expect(first.bytesRead).toBe(first.bytes);
    expect(first.newChunks).toBeGreaterThan(20);
    expect(await repoBytes(repo)).toBeLessThan(first.bytes * 1.15 + 100_000); // Padmé: at most 12%
    const before = await repoBytes(repo);
    const night = await backupJson(src, repo, { configDir });
    expected.set(night.snapshot, await snapshot(src));
    expect(night.bytesRead).toBe(0); // the files cache: nothing read
    expect(night.newChunks).toBe(0);
    expect(await repoBytes(repo) - before).toBe(night.storedBytes);
    expect(night.storedBytes).toBeLessThan(2_000); // the snapshot file alone
  });

  it('a renamed photo costs no chunk; an appended chat log costs about one', async () => {
    const photo = 'Media/WhatsApp Images/IMG-20240312-WA0006.jpg';
    await rename(join(src, photo), join(src, 'Media/WhatsApp Images/Sent/moved.jpg'));
    const added = chatText(20_000, 999_999);
    await appendFile(join(src, 'big-chat.txt'), added);
    const before = await repoBytes(repo);
    const j = await backupJson(src, repo, { configDir });
    expected.set(j.snapshot, await snapshot(src));
    // The log's last chunk and the appended bytes (1 to 3 chunks), plus the changed tree chunk(s).
    expect(j.newChunks).toBeLessThanOrEqual(5);
    // Only the two files whose path or content changed were read.
    expect(j.bytesRead).toBe((await stat(join(src, 'big-chat.txt'))).size + (await stat(join(src, 'Media/WhatsApp Images/Sent/moved.jpg'))).size);
    const stored = (await repoBytes(repo)) - before;
    expect(stored).toBe(j.storedBytes);
    // Text compresses: well under the new bytes plus one largest chunk, though padded.
    expect(stored).toBeLessThan(Buffer.byteLength(added) + 256 * 1024);
  });

  it('a new photo is stored; every snapshot restores byte-identical', async () => {
    await writeFile(join(src, 'Media/WhatsApp Images/IMG-20240314-WA0020.jpg'), randomBytes(300_000));
    const before = await repoBytes(repo);
    const j = await backupJson(src, repo, { configDir });
    expected.set(j.snapshot, await snapshot(src));
    expect((await repoBytes(repo)) - before).toBeGreaterThan(300_000);
    expect((await repoBytes(repo)) - before).toBeLessThan(300_000 * 1.13 + 20_000);

    const list = await ok<{ snapshots: Array<{ id: string }> }>(['snapshots', '--repo', repo], { configDir });
    expect(list.snapshots.map((s) => s.id)).toEqual([...expected.keys()]);
    for (const [id, tree] of expected) {
      const out = join(home, `restore-${id}`);
      await ok(['restore', '--repo', repo, id.slice(0, 8), '-d', out], withCode());
      expect(await snapshot(out)).toEqual(tree);
    }
  });

  it('restore --only restores a part; latest is the newest snapshot', async () => {
    const out = join(home, 'only');
    await ok(['restore', '--repo', repo, 'latest', '-d', out, '--only', 'Media/WhatsApp Voice Notes'], withCode());
    const got = await snapshot(out);
    const all = [...expected.values()].at(-1)!;
    const want = Object.fromEntries(Object.entries(all).filter(([p]) => p === 'Media' || p.startsWith('Media/WhatsApp Voice Notes')));
    expect(got).toEqual(want);
  });

  it('export writes a snapshot as a single-file archive that restores and verifies as any other', async () => {
    const file = join(home, 'latest.bctl');
    const j = await ok<{ snapshot: string; files: number }>(['export', '--repo', repo, 'latest', '-o', file], withCode());
    expect(j.snapshot).toBe([...expected.keys()].at(-1));
    await ok(['verify', file], withCode());
    const out = join(home, 'from-export');
    await ok(['restore', file, '-d', out], withCode());
    expect(await snapshot(out)).toEqual([...expected.values()].at(-1));
    const again = await runCli(['export', '--repo', repo, 'latest', '-o', file], withCode());
    expect(again.exitCode).toBe(6); // never replaced without --force
  });

  it('what the backup machine holds opens no pack; a restore needs the code', async () => {
    const id = JSON.parse(await readFile(join(repo, 'backupctl-repository'), 'utf8')).id as string;
    const held = JSON.parse(await readFile(join(configDir, 'repositories', `${id}.json`), 'utf8'));
    const dedup = new DedupKeys(b64decode(held.dedupKey));
    const packs = [...(await repoFiles(repo)).keys()].filter((p) => p.startsWith('data/'));
    expect(packs.length).toBeGreaterThan(0);
    for (const p of packs) {
      const header = (await SealedFile.fromBytes(p, await readFile(join(repo, p)))).header;
      expect(header.slots.map((s) => s.type)).toEqual(['repo-pack']);
      // Neither the dedup key's pair nor anything else the machine holds is the read key.
      for (const type of ['repo-pack', 'repo-index', 'repo-snapshot']) expect(unwrapX25519(type, dedup.indexPair, header.slots[0]!)).toBeNull();
    }
    const out = join(home, 'nokey');
    const none = await runCli(['restore', '--repo', repo, 'latest', '-d', out], { configDir });
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toMatch(/no recovery code given/);
    const other = await newRecoveryCode(join(home, 'other-config'), join(home, 'other-code.txt'));
    const wrong = await runCli(['restore', '--repo', repo, 'latest', '-d', out], { configDir, env: { BACKUPCTL_RECOVERY_CODE: other.code } });
    expect(wrong.exitCode).toBe(4);
    for (const r of [none, wrong]) expect(r.stderr).not.toMatch(STACK_TRACE);
    expect(await exists(out)).toBe(false);
  });

  it('a deleted files cache: the next backup reads every file again and stores nothing twice', async () => {
    const id = JSON.parse(await readFile(join(repo, 'backupctl-repository'), 'utf8')).id as string;
    const cacheDir = join(configDir, 'repositories', `${id}.files`);
    expect((await readdir(cacheDir)).length).toBe(1);
    await rm(cacheDir, { recursive: true });
    const before = await repoBytes(repo);
    const j = await backupJson(src, repo, { configDir });
    expected.set(j.snapshot, await snapshot(src));
    expect(j.bytesRead).toBe(j.bytes);
    expect(j.newChunks).toBe(0);
    expect((await repoBytes(repo)) - before).toBeLessThan(2_000);
  });

  it('a fresh machine with only the repository and the recovery code lists, restores, then backs up', async () => {
    const fresh = join(home, 'fresh-config');
    const o = { configDir: fresh, env: { BACKUPCTL_RECOVERY_CODE: rc.code } };
    const list = await ok<{ snapshots: Array<{ id: string }> }>(['snapshots', '--repo', repo], o);
    expect(list.snapshots.length).toBe(expected.size);
    const out = join(home, 'fresh-restore');
    await ok(['restore', '--repo', repo, 'latest', '-d', out], o);
    expect(await snapshot(out)).toEqual([...expected.values()].at(-1));
    const denied = await runCli(['backup', out, '--repo', repo], { configDir: fresh });
    expect(denied.exitCode).toBe(4);
    await ok(['repo', 'unlock', repo], o);
    await writeFile(join(out, 'new-note.txt'), 'written on the new machine\n');
    const j = await backupJson(out, repo, { configDir: fresh }); // no code from here on
    expect(j.newChunks).toBeLessThanOrEqual(3); // the new file and the tree: the rest dedups
    const back = join(home, 'fresh-back');
    await ok(['restore', '--repo', repo, j.snapshot, '-d', back], withCode());
    expect(await snapshot(back)).toEqual(await snapshot(out));
  });

  it('bad input ends in one line and a documented code', async () => {
    const notRepo = await runCli(['backup', src, '--repo', join(home, 'export')], { configDir });
    expect(notRepo.exitCode).toBe(6);
    expect(notRepo.stderr).toMatch(/is not a backupctl repository/);
    const noSnap = await runCli(['restore', '--repo', repo, 'ffffffff', '-d', join(home, 'x')], withCode());
    expect(noSnap.exitCode).toBe(2);
    for (const r of [notRepo, noSnap]) {
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).not.toMatch(STACK_TRACE);
    }
    expect(await readdir(home)).not.toContain('x');
  });

  it('a repository inside DIR is left out of its snapshots (with a warning), so a night stores no old packs again', async () => {
    const dir = join(home, 'holds-its-repo');
    await makeExportTree(dir);
    const inner = join(dir, 'backups', 'repo');
    await ok(['repo', 'init', inner], { configDir });
    const first = await backupJson(dir, inner, { configDir });
    const night = await backupJson(dir, inner, { configDir });
    const r = await runCli(['backup', dir, '--repo', inner], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(`backupctl: warning: the repository backups/repo is inside ${dir}: it is left out of the snapshot`);
    expect(night.newChunks).toBe(0);
    expect(night.entries).toBe(first.entries);
    const out = join(home, 'holds-its-repo-restored');
    await ok(['restore', '--repo', inner, 'latest', '-d', out], withCode());
    const want = Object.fromEntries(Object.entries(await snapshot(dir)).filter(([p]) => p !== 'backups/repo' && !p.startsWith('backups/repo/')));
    expect(await snapshot(out)).toEqual(want);
  });

  it('a renamed file bigger than a pack, read again, does not close the night\'s pack early: one data pack and one tree pack', async () => {
    const dir = join(home, 'renames');
    await makeExportTree(dir);
    await writeFile(join(dir, 'Media', 'z-video.mp4'), randomBytes(3 << 20));
    const env = { BACKUPCTL_REPO_PACK_SIZE: String(1 << 20) };
    await ok(['repo', 'init', join(home, 'renames-repo')], { configDir });
    await backupJson(dir, join(home, 'renames-repo'), { configDir, env });
    await writeFile(join(dir, 'Media', 'a-new.jpg'), randomBytes(100_000)); // walked before the video…
    await writeFile(join(dir, 'Media', 'zz-new.jpg'), randomBytes(100_000)); // …and after it
    await rename(join(dir, 'Media', 'z-video.mp4'), join(dir, 'Media', 'z-video-renamed.mp4'));
    const night = await backupJson(dir, join(home, 'renames-repo'), { configDir, env });
    expect(night.bytesRead).toBeGreaterThan(3 << 20); // the renamed video is read again…
    expect(night.packs).toBe(2); // …but its stored chunks are taken out before the pack is judged full
  });

  /** Blobs moved between packs are where the packs' lists say: `verify --read-data` passes and `r` restores as `dir`. */
  async function readsBack(r: string, dir: string): Promise<void> {
    await ok(['verify', '--repo', r, '--read-data'], withCode());
    const out = `${r}-out`;
    await ok(['restore', '--repo', r, 'latest', '-d', out], withCode());
    expect(await snapshot(out)).toEqual(await snapshot(dir));
  }

  it('packs end where Padmé pads little, a blob taken out where that pads less: photos are stored with under 0.3% of overhead', async () => {
    // 200 photos of 50–400 KB into packs of about 4 MiB, where
    // Padmé pads to multiples of 128 KiB. Closed as soon as they reached 4 MiB, the packs carried
    // 1.6% of padding; closed where the padding was small, 0.84% of overhead in all; with a blob
    // taken out where that leaves less padding, and held for a later pack's padding, 0.18%.
    const dir = join(home, 'photos');
    const raw = await writePhotos(dir, 200, 50_000, 350_000);
    const r = join(home, 'photos-repo');
    await ok(['repo', 'init', r], { configDir });
    const before = await repoBytes(r);
    const b = await backupJson(dir, r, { configDir, env: { BACKUPCTL_REPO_PACK_SIZE: String(4 << 20) } });
    expect(b.packs).toBeGreaterThanOrEqual(10); // one of them the tree's
    // What it says it stored is what the repository grew by (two packs are written at once: their counts once raced).
    expect(b.storedBytes).toBe((await repoBytes(r)) - before);
    const packed = await packedBytes(r);
    // Besides padding: a header per pack, a tag per 64 KiB, 46 bytes per chunk, the tree (~0.1%).
    expect(packed / raw).toBeLessThan(1.003);
    expect(packed / raw).toBeGreaterThan(1);
    await readsBack(r, dir);
  });

  it('the padding of packs of nothing but a video\'s pieces is filled with blobs held from the photos before them', async () => {
    // Pieces of exactly 1 MiB put a pack's list and footer just past a multiple of Padmé's step
    // (32 KiB for packs of 1 MiB), wherever it ends: each of the video's 8 packs padded by a step.
    const dir = join(home, 'video-fill');
    let raw = await writePhotos(dir, 400, 10_000, 50_000);
    await writeFile(join(dir, 'VID-0.mp4'), randomBytes(8 << 20)); // walked after the photos
    raw += 8 << 20;
    const r = join(home, 'video-fill-repo');
    await ok(['repo', 'init', r], { configDir });
    await backupJson(dir, r, { configDir, env: { BACKUPCTL_REPO_PACK_SIZE: String(1 << 20) } });
    // Blobs held from the photo packs went into the video's padding: 1.0126 when each went to the next pack instead.
    expect((await packedBytes(r)) / raw).toBeLessThan(1.008);
    await readsBack(r, dir);
  });

  it('index files name up to four packs each, written once those are synced: 10 data packs in 3 index files, every byte counted; a night still adds 2', async () => {
    const dir = join(home, 'groups');
    await mkdir(join(dir, 'Media'), { recursive: true });
    for (let i = 0; i < 10; i++) await writeFile(join(dir, 'Media', `IMG-${i}.jpg`), randomBytes(1 << 20)); // a pack each
    const r = join(home, 'groups-repo');
    await ok(['repo', 'init', r], { configDir });
    const env = { BACKUPCTL_REPO_PACK_SIZE: String(1 << 20) };
    const indexFiles = async () => [...(await repoFiles(r)).keys()].filter((p) => p.startsWith('index/') && !p.split('/').at(-1)!.startsWith('.'));
    /** Bytes of the packs, index files and snapshots: what a backup reports as stored. */
    const stored = async () => [...(await repoFiles(r))].filter(([p]) => /^(data|index|snapshots)\/[^.]/.test(p.replace(/\/[0-9a-f]{2}\//, '/'))).reduce((a, [, n]) => a + n, 0);
    const first = await backupJson(dir, r, { configDir, env });
    expect(first.packs).toBe(11); // 10 data packs, 1 tree pack
    expect(await indexFiles()).toHaveLength(3 + 1); // 4 + 4 + 2 data packs, the tree pack
    expect(first.storedBytes).toBe(await stored()); // packs synced and indexed meanwhile are all counted
    // The temporary file opened ahead for a next pack that never came is removed.
    const temporary = async () => [...(await repoFiles(r)).keys()].filter((p) => p.split('/').at(-1)!.includes('backupctl-tmp'));
    expect(await temporary()).toEqual([]);
    await writeFile(join(dir, 'Media', 'IMG-new.jpg'), randomBytes(100_000));
    const night = await backupJson(dir, r, { configDir, env });
    expect(night.packs).toBe(2);
    expect(await indexFiles()).toHaveLength(4 + 2);
    expect(await temporary()).toEqual([]);
    const v = await ok<{ unindexed: number; duplicates: number }>(['verify', '--repo', r, '--read-data'], withCode());
    expect(v).toMatchObject({ unindexed: 0, duplicates: 0 });
  });

  it('inspect says what every repository file is, without a key', async () => {
    const kinds = new Map<string, string>();
    for (const p of (await repoFiles(repo)).keys()) {
      if (kinds.has(p.split('/')[0]!)) continue; // one of each kind
      const j = await ok<{ repository: string; authenticated?: boolean }>(['inspect', join(repo, p)], { configDir });
      kinds.set(p.split('/')[0]!, j.repository.split(' (')[0]!);
    }
    expect(Object.fromEntries(kinds)).toEqual({ 'backupctl-repository': 'marker', keys: 'keys file', data: 'pack', index: 'index file', snapshots: 'snapshot file' });
  });

  it('a hostile snapshot (written with the machine keys, as a thief of them could) is refused by restore, nothing written', async () => {
    // Everything an attacker holding this machine's keys can do: pack a chunk and a tree, and
    // seal a snapshot, with the repository's own writer.
    const store = new LocalStore(repo);
    const id = JSON.parse(await readFile(join(repo, 'backupctl-repository'), 'utf8')).id as string;
    const held = JSON.parse(await readFile(join(configDir, 'repositories', `${id}.json`), 'utf8'));
    const dedup = new DedupKeys(b64decode(held.dedupKey));
    const w = new PackWriter(store, { readPublic: b64decode(held.readPublic), dedupKey: b64decode(held.dedupKey) }, dedup, await RepoIndex.load(store, dedup));
    const evil = Buffer.from('escaped\n');
    const cid = dedup.chunkId(evil);
    await w.add(cid, BlobType.Data, evil, false);
    const tree = Buffer.concat([
      encodeEntry({ type: EntryType.File, path: 'fine.txt', mode: 0o644, mtimeNs: 0n, size: evil.length, target: '', chunks: [cid] }),
      encodeEntry({ type: EntryType.File, path: '../escape.txt', mode: 0o644, mtimeNs: 0n, size: evil.length, target: '', chunks: [cid] }),
    ]);
    const tid = dedup.chunkId(tree);
    await w.add(tid, BlobType.Tree, tree, true);
    await w.finish();
    const [snap] = await writeSnapshot(store, dedup, { time: new Date().toISOString(), host: 'attacker', source: '/x', tree: [tid.toString('hex')], stats: { entries: 2, files: 2, bytes: 16, newChunks: 2, storedBytes: 0 } });
    const parent = join(home, 'hostile');
    const dest = join(parent, 'dest');
    const r = await runCli(['restore', '--repo', repo, snap.id, '-d', dest], withCode());
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toMatch(/refusing to restore entry "\.\.\/escape\.txt"/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
    expect(await exists(parent)).toBe(false);
    expect(await exists(join(home, 'escape.txt'))).toBe(false);
  });

  it('repo rotate seals the keys to other recipients (only with --force when none is in the config): the removed code stops opening it, backups go on without a secret', async () => {
    const other = await newRecoveryCode(join(home, 'b-config'), join(home, 'b-code.txt'), 'code B');
    const toOthers = ['repo', 'rotate', repo, '--no-config', '--recipients-file', join(home, 'b-config', 'config.json')];
    const keysBefore = await readFile(join(repo, 'keys'));
    // Only to recipients not in this config: refused (exit 8) unless --force, and the keys file is untouched.
    const lockout = await runCli(toOthers, withCode());
    expect(lockout.exitCode, lockout.stderr).toBe(8);
    expect(lockout.stderr).toBe(`backupctl: refusing to seal the keys of ${repo} only to recipients that are not in your config: no key or code of yours would open it again, while this machine goes on backing up into it; add --force if it is meant for them alone\n`);
    expect((await readFile(join(repo, 'keys'))).equals(keysBefore)).toBe(true);
    await ok([...toOthers, '--force'], withCode());
    const first = [...expected.keys()][0]!;
    const refused = await runCli(['restore', '--repo', repo, first, '-d', join(home, 'rot-a')], withCode());
    expect(refused.exitCode).toBe(4);
    const out = join(home, 'rot-b');
    await ok(['restore', '--repo', repo, first, '-d', out], { configDir, env: { BACKUPCTL_RECOVERY_CODE: other.code } });
    expect(await snapshot(out)).toEqual(expected.get(first));
    const j = await backupJson(src, repo, { configDir }); // the machine's keys did not change
    expect(j.newChunks).toBe(0);
    const header = (await SealedFile.fromBytes('keys', await readFile(join(repo, 'keys')))).header;
    expect(header.slots.map((x) => x.label)).toEqual(['code B']);
  });
});
