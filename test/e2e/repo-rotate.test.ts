// `repo rotate` of a repository (backupctl-repository(5) "KEYS", "THE PUBLISHED READ KEY"), through
// the built CLI: with --new-read-key, a keys file copied before the rotation (what a removed
// recipient may have kept) opens the old snapshots and no new pack; a machine set up before the
// rotation switches to the new read key by itself and says so, and refuses a read-key file that
// is forged, older or gone; kill -9 at every write of a rotate leaves a working repository.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFile, copyFile, cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { STACK_TRACE, makeHome, newRecoveryCode, onlyJson, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { backupJson, ok, repoFiles } from '../support/repo.js';
import { LocalStore } from '../../src/store/local.js';
import { openRepositoryKeys } from '../../src/ops/repository.js';
import { packIdentity } from '../../src/repo/keys.js';
import { PackReader, packIdOf } from '../../src/repo/pack.js';
import { recoveryIdentity } from '../../src/keys/recovery-code.js';
import { confirmFileKey, type ParsedHeader } from '../../src/archive/header.js';
import { publicKeyOf } from '../../src/keys/x25519.js';
import { b64encode } from '../../src/util/base64.js';
import { encodeReadKey } from '../../src/repo/read-key.js';

let home: string;
let cleanup: () => Promise<void>;
/** Machine A rotates (its config holds code A); code B is the recipient removed; machine C was set up with code B before. */
let cfgA: string;
let cfgB: string;
let cfgC: string;
let codeA: RecoveryCode;
let codeB: RecoveryCode;
let src: string;
let repo: string;
const withCode = (configDir: string, c: RecoveryCode) => ({ configDir, env: { BACKUPCTL_RECOVERY_CODE: c.code } });

/** The repository's keys, unlocked through the library with a recovery code. */
const keysWith = (dir: string, c: RecoveryCode) =>
  openRepositoryKeys(new LocalStore(dir), async (h: ParsedHeader) => confirmFileKey(h, (await recoveryIdentity(c.code).unwrap(h.slots))!));

const packs = async (dir: string) => new Map([...(await repoFiles(dir))].filter(([p]) => p.startsWith('data/')));
const withoutReadKey = (files: Map<string, number>) => new Map([...files].filter(([p]) => p !== 'read-key'));

beforeAll(async () => {
  ({ home, configDir: cfgA, cleanup } = await makeHome('backupctl-repo-rotate-'));
  cfgB = join(home, 'config-b');
  cfgC = join(home, 'config-c');
  codeA = await newRecoveryCode(cfgA, join(home, 'code-a.txt'), 'code A');
  codeB = await newRecoveryCode(cfgB, join(home, 'code-b.txt'), 'code B');
  src = join(home, 'export');
  await mkdir(join(src, 'Media'), { recursive: true });
  await writeFile(join(src, 'Media', 'IMG-1.jpg'), randomBytes(60_000));
  await writeFile(join(src, '_chat.txt'), Array.from({ length: 2000 }, (_, i) => `[${i}] Alice: message ${i}\n`).join(''));
  repo = join(home, 'repo');
});
afterAll(() => cleanup());

describe('repo rotate --new-read-key', () => {
  const expected = new Map<string, Awaited<ReturnType<typeof snapshot>>>();
  let id: string;

  it("a keys file copied before the rotation opens the old snapshots and no new pack; a machine set up before switches to the new key; every snapshot restores", async () => {
    ({ id } = await ok<{ id: string }>(['repo', 'init', repo, '--recipients-file', join(cfgB, 'config.json')], { configDir: cfgA }));
    const first = await backupJson(src, repo, { configDir: cfgA });
    expected.set(first.snapshot, await snapshot(src));
    await ok(['repo', 'unlock', repo], withCode(cfgC, codeB));
    // What the removed holder of code B kept: the keys file as it was (and the marker beside it).
    const holder = join(home, 'holder');
    await mkdir(holder);
    for (const f of ['keys', 'backupctl-repository']) await copyFile(join(repo, f), join(holder, f));
    const oldPacks = await packs(repo);

    const r = await runCli(['repo', 'rotate', repo, '--new-read-key'], withCode(cfgA, codeA));
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(`No longer with: recovery "code B" (${codeB.fingerprint})`);
    expect(r.stderr).toMatch(/new read key \(generation 1\); the keys file keeps the earlier one, so every snapshot still restores/);
    expect(r.stderr).toMatch(/a copy of the keys file made before now .* reads no data stored from now on/);
    expect(r.stderr).toMatch(/that copy still opens every snapshot written before now.*Its dedup key.*list of snapshots.*which chunks are equal.*a key of their own/);

    // Machine C backs up after the rotation without a secret: it switches, and says so.
    await writeFile(join(src, 'Media', 'IMG-2.jpg'), randomBytes(50_000));
    await appendFile(join(src, '_chat.txt'), '[2000] Bob: after the rotation\n');
    const c = await runCli(['--json', 'backup', src, '--repo', repo], { configDir: cfgC });
    expect(c.exitCode, c.stderr).toBe(0);
    expect(c.stderr).toMatch(/the read key of .* was renewed \(generation 1, .*\): this machine seals new data to it from now on/);
    const second = onlyJson<{ snapshot: string }>(c).snapshot;
    expected.set(second, await snapshot(src));
    const held = JSON.parse(await readFile(join(cfgC, 'repositories', `${id}.json`), 'utf8'));
    const published = JSON.parse(await readFile(join(repo, 'read-key'), 'utf8'));
    expect({ generation: held.generation, readPublic: held.readPublic, signPublic: held.signPublic }).toEqual({ generation: 1, readPublic: published.keys[0].readPublic, signPublic: published.keys[0].signPublic });

    // Through the library: the old read secret opens no pack written after the rotation, the current keys open each.
    const store = new LocalStore(repo);
    const oldKeys = await keysWith(holder, codeB);
    const keys = await keysWith(repo, codeA);
    expect(oldKeys.generation).toBe(0);
    expect(keys.generation).toBe(1);
    const newPacks = [...(await packs(repo))].filter(([p]) => !oldPacks.has(p));
    expect(newPacks.length).toBeGreaterThanOrEqual(2); // content and tree
    for (const [path, size] of newPacks) {
      await expect(PackReader.open(store, packIdOf(path), size, packIdentity(oldKeys))).rejects.toMatchObject({ code: 4 });
      expect((await (await PackReader.open(store, packIdOf(path), size, packIdentity(keys))).entries()).length).toBeGreaterThan(0);
    }
    const [oldPath, oldSize] = [...oldPacks][0]!;
    expect((await (await PackReader.open(store, packIdOf(oldPath), oldSize, packIdentity(oldKeys))).entries()).length).toBeGreaterThan(0);

    // Through the CLI: a copy of the repository with the holder's keys file restores the old snapshot, not the new one.
    const copy = join(home, 'repo-copy');
    await cp(repo, copy, { recursive: true });
    await copyFile(join(holder, 'keys'), join(copy, 'keys'));
    await ok(['restore', '--repo', copy, first.snapshot, '-d', join(home, 'holder-old')], withCode(cfgB, codeB));
    expect(await snapshot(join(home, 'holder-old'))).toEqual(expected.get(first.snapshot));
    const denied = await runCli(['restore', '--repo', copy, second, '-d', join(home, 'holder-new')], withCode(cfgB, codeB));
    expect(denied.exitCode).toBe(4);
    expect(denied.stderr).toMatch(/none of its key slots opens with the repository read key/);
    expect(denied.stderr).not.toMatch(STACK_TRACE);
    // The current keys restore both, byte-identical.
    for (const [snap, want] of expected) {
      await ok(['restore', '--repo', repo, snap, '-d', join(home, `restored-${snap}`)], withCode(cfgA, codeA));
      expect(await snapshot(join(home, `restored-${snap}`))).toEqual(want);
    }
  });

  it('inspect tells without a key what the keys file and the published read key hold', async () => {
    const keys = await runCli(['inspect', join(repo, 'keys')], { configDir: cfgA });
    expect(keys.exitCode, keys.stderr).toBe(0);
    expect(keys.stdout).toMatch(/keys file \(the dedup key and 2 read secrets: generation 1, which new packs are sealed to, and 1 retired for older packs; sealed to the recipients below\)/);
    expect(keys.stdout).toMatch(/slots: +recovery "code A"\n/);
    const j = onlyJson<{ repository: string; content: { generation: number; readPublic: string } }>(await runCli(['--json', 'inspect', join(repo, 'read-key')], { configDir: cfgA }));
    expect(j.repository).toMatch(/^published read key/);
    expect(j.content.generation).toBe(1);
  });

  it('a machine refuses a read-key file that is older, missing or forged, and writes nothing', async () => {
    const gen1 = await readFile(join(repo, 'read-key'));
    const r = await ok<{ removed: unknown[]; readKey: { generation: number; renewed: boolean } }>(['repo', 'rotate', repo, '--new-read-key'], withCode(cfgA, codeA));
    expect(r).toMatchObject({ removed: [], readKey: { generation: 2, renewed: true, finished: false } });
    await appendFile(join(src, '_chat.txt'), '[2001] Alice: generation 2\n');
    const a = await runCli(['--json', 'backup', src, '--repo', repo], { configDir: cfgA }); // machine A held generation 0: it switches too
    expect(a.exitCode, a.stderr).toBe(0);
    expect(a.stderr).toMatch(/renewed \(generation 2/);
    expected.set(onlyJson<{ snapshot: string }>(a).snapshot, await snapshot(src));
    const gen2 = await readFile(join(repo, 'read-key'));
    const before = await repoFiles(repo);
    const refused = async (what: RegExp) => {
      const b = await runCli(['backup', src, '--repo', repo], { configDir: cfgA });
      expect(b.exitCode, b.stderr).toBe(5);
      expect(b.stderr).toMatch(what);
      expect(b.stderr.trim().split('\n')).toHaveLength(1);
      expect(withoutReadKey(await repoFiles(repo))).toEqual(withoutReadKey(before)); // no pack, index or snapshot written
    };
    await appendFile(join(src, '_chat.txt'), '[2002] Bob: not stored\n');
    // An older copy put back: the storage (or a holder of the dedup key) replays generation 1.
    await writeFile(join(repo, 'read-key'), gen1);
    await refused(/lists read key generations up to 1 only, but this machine already seals to generation 2 .*refusing to seal new data to a retired read key/);
    await rm(join(repo, 'read-key'));
    await refused(/read-key is missing, but this machine already seals to generation 2/);
    // The storage, or a thief of a backup machine (who holds the dedup key but no read secret), appends a key of its own.
    const forged = JSON.parse(gen2.toString());
    forged.generation = 3;
    forged.keys.push({ ...forged.keys[1], generation: 3, readPublic: b64encode(publicKeyOf(randomBytes(32))) });
    await writeFile(join(repo, 'read-key'), JSON.stringify(forged));
    await refused(/read key generation 3 is not signed by generation 2/);
    // What holds the secrets checks every generation against them: a new machine's unlock refuses it too.
    const fresh = await runCli(['repo', 'unlock', repo], withCode(join(home, 'config-d'), codeA));
    expect(fresh.exitCode).toBe(5);
    expect(fresh.stderr).toMatch(/lists read key generations up to 3, but the keys file holds generations 0 to 2 only/);
    // The removed holder signs generations of their own from their generation 0 secret: a machine past generation 0 does not follow.
    const oldKeys = await keysWith(join(home, 'holder'), codeB);
    await writeFile(join(repo, 'read-key'), encodeReadKey(oldKeys.id, [oldKeys.readSecret, randomBytes(32), randomBytes(32), randomBytes(32)]));
    await refused(/names another read key for generation 2 than this machine holds/);
    await writeFile(join(repo, 'read-key'), gen2);
    // A machine file from before signed read keys (machine C, still at generation 1) cannot follow a renewal: it says to unlock.
    const held = JSON.parse(await readFile(join(cfgC, 'repositories', `${id}.json`), 'utf8'));
    delete held.signPublic;
    await writeFile(join(cfgC, 'repositories', `${id}.json`), JSON.stringify(held));
    const legacy = await runCli(['backup', src, '--repo', repo], { configDir: cfgC });
    expect(legacy.exitCode).toBe(4);
    expect(legacy.stderr).toMatch(/renewed \(generation 2\), but this machine's keys predate signed read keys: run `backupctl repo unlock/);
    const v = await runCli(['--json', 'verify', '--repo', repo, '--read-data'], withCode(cfgA, codeA)); // packs of generations 0, 1 and 2
    expect(v.exitCode, v.stdout).toBe(0);
    expect(onlyJson<{ snapshots: number }>(v).snapshots).toBe(3);
  });

  it('rotate yields to a running backup (exit 9, nothing changed); a plain rotate says the read key is unchanged', async () => {
    const before = await repoFiles(repo);
    const keysBefore = await readFile(join(repo, 'keys'));
    const readKeyBefore = await readFile(join(repo, 'read-key'));
    const live = { kind: 'shared', host: hostname(), pid: process.pid, operation: 'backup', time: new Date().toISOString() };
    await writeFile(join(repo, 'locks', 'aaaaaaaaaaaaaaaa'), JSON.stringify(live));
    const r = await runCli(['repo', 'rotate', repo, '--new-read-key'], withCode(cfgA, codeA));
    expect(r.exitCode).toBe(9);
    expect(r.stderr).toMatch(/is in use \(backup on /);
    expect(await readFile(join(repo, 'keys'))).toEqual(keysBefore);
    await rm(join(repo, 'locks', 'aaaaaaaaaaaaaaaa'));
    expect(await repoFiles(repo)).toEqual(before);
    // Code B back, code A out (handed over: --force, as none of config A's is left), the read key
    // kept: the message says what that cannot take back.
    const p = await runCli(['repo', 'rotate', repo, '--no-config', '--recipients-file', join(cfgB, 'config.json'), '--force'], withCode(cfgA, codeA));
    expect(p.exitCode, p.stderr).toBe(0);
    expect(p.stderr).toContain(`No longer with: recovery "code A" (${codeA.fingerprint})`);
    expect(p.stderr).toContain(`Added: recovery "code B" (${codeB.fingerprint})`);
    expect(p.stderr).toMatch(/What it cannot: the read key is unchanged, so a copy of the keys file made before now still opens every snapshot, old and new; .*--new-read-key/);
    expect(await readFile(join(repo, 'read-key'))).toEqual(readKeyBefore); // the same read key, still generation 2
  });
});

describe('repo rotate under kill -9', () => {
  it('killed at every write: each state backs up, and the next rotate finishes the interrupted one', async () => {
    const repo2 = join(home, 'repo-killed');
    await ok(['repo', 'init', repo2, '--recipients-file', join(cfgB, 'config.json')], { configDir: cfgA });
    await backupJson(src, repo2, { configDir: cfgA });
    const keys0 = await readFile(join(repo2, 'keys'));
    let n = 1;
    for (; ; n++) {
      const r = await runCli(['--json', 'repo', 'rotate', repo2, '--new-read-key'], { ...withCode(cfgA, codeA), env: { BACKUPCTL_RECOVERY_CODE: codeA.code, BACKUPCTL_TEST_KILL_AT_WRITE: String(n) } });
      if (r.exitCode === 0) {
        // The keys file was written (generation 1) when the third write was killed: its read key is published now, not a second one made.
        expect(onlyJson(r)).toMatchObject({ readKey: { generation: 1, renewed: false, finished: true } });
        break;
      }
      expect(r.exitCode, `rotate killed at write ${n}: ${r.stderr}`).toBe(-1);
      // Write 1 is the lock, 2 the keys file (killed before its rename), 3 the published read key.
      expect((await readFile(join(repo2, 'keys'))).equals(keys0)).toBe(n < 3);
      expect((await repoFiles(repo2)).has('read-key')).toBe(false);
      await appendFile(join(src, '_chat.txt'), `[kill ${n}] the backup still works\n`);
      const b = await runCli(['backup', src, '--repo', repo2], { configDir: cfgA }); // still sealing to generation 0, whose secret is kept
      expect(b.exitCode, b.stderr).toBe(0);
    }
    expect(n).toBe(4);
    const b = await runCli(['backup', src, '--repo', repo2], { configDir: cfgA });
    expect(b.stderr).toMatch(/renewed \(generation 1/);
    const v = await runCli(['--json', 'verify', '--repo', repo2, '--read-data'], withCode(cfgA, codeA));
    expect(v.exitCode, v.stdout).toBe(0);
    expect(onlyJson<{ snapshots: number }>(v).snapshots).toBe(5);
    await ok(['restore', '--repo', repo2, 'latest', '-d', join(home, 'killed-restore')], withCode(cfgA, codeA));
    expect(await snapshot(join(home, 'killed-restore'))).toEqual(await snapshot(src));
    expect((await runCli(['restore', '--repo', repo2, 'latest', '-d', join(home, 'kb')], withCode(cfgB, codeB))).exitCode).toBe(4);
  });
});
