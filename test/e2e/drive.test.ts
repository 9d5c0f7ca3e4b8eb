// push / pull / drive * through the BUILT CLI (`npx tsc -p .` first) against the Drive fake on
// 127.0.0.1: real archives made by `create`, round trips byte-identical under each fault, a killed
// push resumed without resending what Drive acknowledged, the OAuth flow with a scripted
// browser, duplicate names, the "not what this machine pushed" refusal (exit 11), prune semantics.
// BACKUPCTL_TEST_LARGE=1 adds a round trip of a few hundred MB.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { DriveFake, type Fault } from '../support/drive-fake/server.js';
import { archiveLikeBytes } from '../support/drive-fake/archive-bytes.js';
import { BIN, REPO, STACK_TRACE, consentUrl, makeHome, newRecoveryCode, onlyJson, runCli, runCliBytes, snapshot, startCli, type RecoveryCode } from '../support/cli.js';

const MiB = 1024 * 1024;
let fake: DriveFake;
let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let exportDir: string;
let archive: string;
let archiveBytes: Buffer;
let token: string;

/** A directory of incompressible files, packed by the real `create`. */
async function makeArchive(name: string, files: number, each: number, srcName = `${name}-src`): Promise<string> {
  const dir = join(home, srcName);
  await mkdir(dir, { recursive: true });
  for (let i = 0; i < files; i++) await writeFile(join(dir, `VID-${i}.mp4`), randomBytes(each));
  const out = join(home, name);
  const r = await runCli(['create', dir, '-o', out, '--force'], { configDir, timeoutMs: 120_000 });
  if (r.exitCode !== 0) throw new Error(`create failed (${r.exitCode}): ${r.stderr}`);
  return out;
}

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl,
    BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl,
    BACKUPCTL_DRIVE_AUTH_URL: fake.authUrl,
    BACKUPCTL_DRIVE_ACCESS_TOKEN: token,
    BACKUPCTL_RETRY_BASE_MS: '5',
    BACKUPCTL_DEBUG: '1', // an internal error (a bug) shows its stack in the failure message
    ...extra,
  };
}
const cli = (args: string[], extra: Record<string, string> = {}, timeoutMs = 120_000) => runCli(args, { configDir, env: env(extra), cwd: home, timeoutMs });
/** A bash pipeline of CLI runs, with the same environment as `cli`. */
const sh = (script: string, extra: Record<string, string> = {}) =>
  execa('bash', ['-c', script], { env: { PATH: process.env.PATH!, HOME: configDir, BACKUPCTL_CONFIG_DIR: configDir, ...env(extra) }, extendEnv: false, reject: false });
/**
 * `pull ARGS -o -` into a reader that takes 64 KiB every `everyMs` and writes it to `out`, so the
 * pipe stays full; the pipeline's exit code is pull's (pipefail).
 */
const pullToSlowReader = (args: string, out: string, everyMs: number, extra: Record<string, string> = {}) => {
  const reader = `const fs=require('fs');const o=fs.openSync(process.argv[1],'w');const b=Buffer.alloc(65536);` +
    `(function s(){const n=fs.readSync(0,b);if(n){fs.writeSync(o,b,0,n);setTimeout(s,${everyMs})}})()`;
  return sh(`set -o pipefail; "${process.execPath}" "${BIN}" pull ${args} -o - | "${process.execPath}" -e "${reader}" "${out}"`, extra);
};
/** `pull -o -`, standard output as bytes. */
const pullToStdout = (nameOrId: string, extra: Record<string, string> = {}) =>
  runCliBytes(['pull', nameOrId, '-o', '-'], { configDir, env: env(extra), cwd: home, timeoutMs: 120_000 });
/** Push `bytes` (written to a file of that name first) and return them. */
async function pushBytes(name: string, bytes: Buffer): Promise<Buffer> {
  await writeFile(join(home, name), bytes);
  const p = await cli(['push', join(home, name)]);
  expect(p.exitCode, p.stderr).toBe(0);
  return bytes;
}

/** The one file on Drive with this name (asserting there is exactly one). */
function onlyRemote(name: string) {
  const fs = fake.findByName(name);
  expect(fs, `files named ${name}`).toHaveLength(1);
  return fs[0]!;
}

beforeAll(async () => {
  fake = await new DriveFake().start();
  token = fake.issueAccessToken();
  ({ home, configDir, cleanup } = await makeHome('backupctl-drive-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  archive = await makeArchive('main.bkp', 6, 4 * MiB); // ~24 MB
  exportDir = join(home, 'main.bkp-src');
  archiveBytes = await readFile(archive);
}, 180_000);
afterAll(async () => {
  await fake?.stop();
  await cleanup?.();
});
beforeEach(async () => {
  // Each test starts with an empty Drive and no upload sessions, here or there.
  await rm(join(configDir, 'drive-sessions'), { recursive: true, force: true });
  fake.sessions.clear();
  fake.files.clear();
  fake.requests.length = 0;
  fake.uploadBytesReceived = 0;
  fake.downloadBytesSent = 0;
  fake.pendingFaults().length = 0;
});

describe('push and pull round trips', () => {
  it('pushes a real archive, verifies it, and pulls it back byte-identical; restore from `pull -o -` gives the export back', async () => {
    const p = await cli(['push', archive, '--json', '--chunk-size', '1M']);
    expect(p.exitCode, p.stderr).toBe(0);
    const j = onlyJson<{ id: string; name: string; size: number; md5: string; verified: boolean; alreadyPresent: boolean }>(p);
    expect(j).toMatchObject({ name: 'main.bkp', size: archiveBytes.length, verified: true, alreadyPresent: false });
    const remote = onlyRemote('main.bkp');
    expect(fake.content(remote.id)!.equals(archiveBytes)).toBe(true);
    // In the visible folder, with our checksums in appProperties.
    const folder = fake.files.get(remote.parents[0]!)!;
    expect(folder.name).toBe('backupctl');
    expect(remote.appProperties.backupctlSha256).toMatch(/^[0-9a-f]{64}$/);
    // Every chunk but the last is 1 MiB.
    const chunks = fake.requests.filter((r) => r.on === 'chunk');
    expect(chunks.length).toBe(Math.ceil(archiveBytes.length / MiB));

    const out = join(home, 'pulled.bkp');
    const q = await cli(['pull', 'main.bkp', '-o', out]);
    expect(q.exitCode, q.stderr).toBe(0);
    expect((await readFile(out)).equals(archiveBytes)).toBe(true);
    expect(q.stderr).not.toMatch(/NOT WHAT THIS MACHINE PUSHED/);

    const dest = join(home, 'restored');
    const shell = `"${process.execPath}" "${BIN}" pull main.bkp -o - | "${process.execPath}" "${BIN}" restore - -d "${dest}" --recovery-code-file "${rc.file}"`;
    const r = await sh(shell);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await snapshot(dest, { times: false })).toEqual(await snapshot(exportDir, { times: false }));
  });

  const uploadFaults: Array<[string, Fault[]]> = [
    ['503 and 500 on chunks', [{ on: 'chunk', skip: 2, action: { status: 503 } }, { on: 'chunk', skip: 6, action: { status: 500 } }]],
    ['429 with Retry-After', [{ on: 'chunk', skip: 3, action: { status: 429, retryAfter: 1 } }]],
    ['403 rateLimitExceeded and userRateLimitExceeded', [{ on: 'chunk', skip: 1, action: { status: 403, reason: 'rateLimitExceeded' } }, { on: 'chunk', skip: 4, action: { status: 403, reason: 'userRateLimitExceeded' } }]],
    ['a connection cut mid-chunk', [{ on: 'chunk', skip: 4, action: { drop: true } }]],
    ['the final chunk stored but its reply lost', [{ on: 'chunk', skip: 23, action: { loseResponse: true } }]],
    ['a 308 acknowledging fewer bytes than sent', [{ on: 'chunk', skip: 2, action: { partialAck: 3 * 256 * 1024 } }]],
    ['an expired session (404)', [{ on: 'chunk', skip: 5, action: { expireSession: true } }]],
    ['a 503 while opening the session and on the probe', [{ on: 'session', action: { status: 503 } }, { on: 'chunk', skip: 2, action: { status: 502 } }, { on: 'probe', action: { status: 503 } }]],
  ];
  for (const [name, faults] of uploadFaults) {
    it(`round trip under ${name}`, async () => {
      fake.inject(...faults);
      const t0 = Date.now();
      const p = await cli(['push', archive, '--chunk-size', '1M']);
      expect(p.exitCode, p.stderr).toBe(0);
      expect(p.stderr).not.toMatch(STACK_TRACE);
      expect(fake.pendingFaults()).toEqual([]);
      if (name.includes('Retry-After')) expect(Date.now() - t0).toBeGreaterThanOrEqual(1000);
      const remote = onlyRemote('main.bkp');
      expect(fake.content(remote.id)!.equals(archiveBytes)).toBe(true);
      const out = join(home, `pulled-${name.replace(/\W+/g, '-')}.bkp`);
      expect((await cli(['pull', 'main.bkp', '-o', out])).exitCode).toBe(0);
      expect((await readFile(out)).equals(archiveBytes)).toBe(true);
    });
  }

  const downloadFaults: Array<[string, Fault[]]> = [
    ['connections cut mid-download', [{ on: 'media', times: 3, action: { drop: true } }]],
    ['5xx, 429 and 403 rate limits on the download', [{ on: 'media', action: { status: 503 } }, { on: 'media', action: { status: 429, retryAfter: 0 } }, { on: 'media', action: { status: 403, reason: 'rateLimitExceeded' } }]],
    ['a 500 on the listing', [{ on: 'list', action: { status: 500 } }]],
  ];
  for (const [name, faults] of downloadFaults) {
    it(`pull under ${name} is byte-identical, to a file and to stdout`, async () => {
      expect((await cli(['push', archive])).exitCode).toBe(0);
      fake.inject(...faults);
      const out = join(home, `dl-${name.replace(/\W+/g, '-')}.bkp`);
      const q = await cli(['pull', 'main.bkp', '-o', out]);
      expect(q.exitCode, q.stderr).toBe(0);
      expect((await readFile(out)).equals(archiveBytes)).toBe(true);
      expect(fake.pendingFaults()).toEqual([]);
      fake.inject(...faults);
      const s = await pullToStdout('main.bkp');
      expect(s.exitCode, s.stderr).toBe(0);
      expect(s.stdout.equals(archiveBytes)).toBe(true);
      expect(fake.pendingFaults()).toEqual([]);
    });
  }

  it('a download that stalls is cut after BACKUPCTL_DRIVE_STALL_MS and resumed, to a file and to stdout', async () => {
    expect((await cli(['push', archive])).exitCode).toBe(0);
    const stall = { BACKUPCTL_DRIVE_STALL_MS: '1500' }; // well above a loaded machine's pauses, so only the hang counts
    fake.inject({ on: 'media', action: { hang: true } });
    const out = join(home, 'stalled.bkp');
    const q = await cli(['pull', 'main.bkp', '-o', out, '--json'], stall); // --json: retries are reported on stderr
    expect(q.exitCode, q.stderr).toBe(0);
    expect(q.stderr).toMatch(/network error during download \(ETIMEDOUT\); retrying/);
    expect((await readFile(out)).equals(archiveBytes)).toBe(true);
    expect(fake.requests.filter((r) => r.on === 'media').map((r) => r.range ?? 'all')).toEqual(['all', expect.stringMatching(/^bytes=[1-9]\d*-$/)]);

    fake.inject({ on: 'media', action: { hang: true } });
    const s = await pullToStdout('main.bkp', stall);
    expect(s.exitCode, s.stderr).toBe(0);
    expect(s.stdout.equals(archiveBytes)).toBe(true);
  });

  it('pull -o - into a reader slower than the stall limit is not a stall (one request, no retry)', async () => {
    const bytes = await pushBytes('slow.bkp', archiveLikeBytes(384 * 1024));
    fake.requests.length = 0;
    const got = join(home, 'slow-read.bkp');
    // 64 KiB a second: each write waits longer than the limit.
    const r = await pullToSlowReader('slow.bkp', got, 1000, { BACKUPCTL_DRIVE_STALL_MS: '600' });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/ETIMEDOUT|retry/i);
    expect((await readFile(got)).equals(bytes)).toBe(true);
    expect(fake.requests.filter((q) => q.on === 'media')).toHaveLength(1);
  });

  it('pull -o - passes every byte through, resumed or not, a final newline included', async () => {
    const bytes = archiveLikeBytes(3 * MiB);
    bytes[bytes.length - 1] = 0x0a;
    await pushBytes('newline.bkp', bytes);
    fake.inject({ on: 'media', times: 2, action: { drop: true } });
    const s = await pullToStdout('newline.bkp');
    expect(s.exitCode, s.stderr).toBe(0);
    expect(s.stdout.equals(bytes)).toBe(true);
    expect(fake.pendingFaults()).toEqual([]);
  });

  it('pull -o - of bytes that do not match Drive\'s MD5 exits 5 with one line on stderr', async () => {
    expect((await cli(['push', archive])).exitCode).toBe(0);
    // Damage the stored bytes behind the MD5 the fake recorded: corruption Drive did not notice.
    fake.content(onlyRemote('main.bkp').id)![archiveBytes.length >> 1]! ^= 1;
    const s = await pullToStdout('main.bkp');
    expect(s.exitCode).toBe(5);
    expect(s.stdout.length).toBe(archiveBytes.length);
    expect(s.stderr).toMatch(/^backupctl: the download of main\.bkp does not match Drive's checksum \(got \d+ bytes, md5 [0-9a-f]{32}; Drive says \d+ bytes, md5 [0-9a-f]{32}\)\n$/);
    // Into a reader that is behind when the check fails: every byte still reaches it before exit 5
    // (process.exit would drop what is queued for an asynchronous pipe).
    const small = await pushBytes('small.bkp', archiveLikeBytes(512 * 1024));
    fake.content(onlyRemote('small.bkp').id)![100]! ^= 1;
    const got = join(home, 'small-read.bkp');
    const slow = await pullToSlowReader('small.bkp', got, 50);
    expect(slow.exitCode).toBe(5);
    expect(slow.stderr).toMatch(/^backupctl: the download of small\.bkp does not match Drive's checksum/);
    expect((await readFile(got)).length).toBe(small.length);
  });

  it('does not upload the same content twice', async () => {
    expect((await cli(['push', archive])).exitCode).toBe(0);
    const sent = fake.uploadBytesReceived;
    const again = await cli(['push', archive, '--json']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(onlyJson(again)).toMatchObject({ alreadyPresent: true, bytesSent: 0 });
    expect(fake.uploadBytesReceived).toBe(sent);
    expect(fake.findByName('main.bkp')).toHaveLength(1);
  });

  it('reports progress as JSON lines on stderr with --json', async () => {
    const p = await cli(['push', archive, '--json', '--chunk-size', '256K'], {}, 120_000);
    expect(p.exitCode, p.stderr).toBe(0);
    const lines = p.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string; bytes?: number; total?: number; rate?: number });
    const progress = lines.filter((l) => l.type === 'progress');
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toMatchObject({ total: archiveBytes.length, rate: expect.any(Number) });
  });

  it('uses the hidden app-data folder with --app-data, apart from the visible one', async () => {
    const p = await cli(['push', archive, '--app-data', '--name', 'hidden.bkp']);
    expect(p.exitCode, p.stderr).toBe(0);
    expect(onlyRemote('hidden.bkp').space).toBe('appDataFolder');
    const visible = onlyJson<{ files: unknown[] }>(await cli(['drive', 'list', '--json']));
    expect(visible.files).toEqual([]);
    const hidden = onlyJson<{ files: Array<{ name: string }> }>(await cli(['drive', 'list', '--app-data', '--json']));
    expect(hidden.files.map((f) => f.name)).toEqual(['hidden.bkp']);
    const out = join(home, 'hidden-pulled.bkp');
    expect((await cli(['pull', 'hidden.bkp', '--app-data', '-o', out])).exitCode).toBe(0);
    expect((await readFile(out)).equals(archiveBytes)).toBe(true);
  });
});

describe('interrupted pushes resume', () => {
  /** Start a push that hangs on chunk `n + 1` (Drive holds the first n MiB), wait until it does. */
  async function hungPush() {
    fake.inject({ on: 'chunk', skip: 5, action: { hang: true } });
    const child = startCli(['push', archive, '--chunk-size', '1M'], { configDir, env: env(), timeoutMs: 60_000 });
    const t0 = Date.now();
    while (fake.requests.filter((r) => r.on === 'chunk').length < 6) {
      if (Date.now() - t0 > 30_000) throw new Error('the push never reached the hanging chunk');
      await new Promise((r) => setTimeout(r, 20));
    }
    await new Promise((r) => setTimeout(r, 200)); // let the hung chunk's body arrive
    return { child }; // wrapped: an execa process is thenable, so returning it bare would await it
  }

  async function resumeAndCheck() {
    const sessions = await readdir(join(configDir, 'drive-sessions'));
    expect(sessions.filter((f) => f.endsWith('.json'))).toHaveLength(1);
    const mode = (await stat(join(configDir, 'drive-sessions', sessions.find((f) => f.endsWith('.json'))!))).mode & 0o777;
    expect(mode).toBe(0o600);
    const before = fake.uploadBytesReceived;
    const n = fake.requests.length;
    const p = await cli(['push', archive, '--chunk-size', '1M']);
    expect(p.exitCode, p.stderr).toBe(0);
    // It asked Drive where it stood, then went on from 5 MiB: nothing acknowledged was sent again.
    const mine = fake.requests.slice(n).filter((r) => r.on === 'chunk' || r.on === 'probe' || r.on === 'session');
    expect(mine[0]!.on).toBe('probe');
    expect(mine[1]!.contentRange).toBe(`bytes ${5 * MiB}-${6 * MiB - 1}/${archiveBytes.length}`);
    expect(fake.uploadBytesReceived - before).toBe(archiveBytes.length - 5 * MiB);
    expect(fake.content(onlyRemote('main.bkp').id)!.equals(archiveBytes)).toBe(true);
    expect((await readdir(join(configDir, 'drive-sessions'))).filter((f) => f.endsWith('.json'))).toEqual([]);
  }

  it('a push killed with SIGKILL mid-upload is resumed by the next run', async () => {
    const { child } = await hungPush();
    child.kill('SIGKILL');
    await child;
    expect(fake.findByName('main.bkp')).toHaveLength(0);
    await resumeAndCheck();
  });

  it('Ctrl-C exits 130, keeps the session, and the next run resumes', async () => {
    const { child } = await hungPush();
    child.kill('SIGINT');
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(/run the same command again to resume/);
    expect(String(r.stderr)).not.toMatch(STACK_TRACE);
    await resumeAndCheck();
  });

  it('a different file re-created at the same path never resumes into the old session', async () => {
    const { child } = await hungPush();
    child.kill('SIGKILL');
    await child;
    const other = await makeArchive('main.bkp', 1, MiB, 'other-src'); // same path, new content
    const otherBytes = await readFile(other);
    const p = await cli(['push', other]);
    expect(p.exitCode, p.stderr).toBe(0);
    expect(fake.content(onlyRemote('main.bkp').id)!.equals(otherBytes)).toBe(true);
    expect(fake.requests.filter((r) => r.on === 'session')).toHaveLength(2);
    await writeFile(archive, archiveBytes); // put the shared archive back for the other tests
  });
});

describe('failures are clear and have the documented exit codes', () => {
  it('refuses a file that is not an archive (5) before any network request', async () => {
    const junk = join(home, 'junk.bin');
    await writeFile(junk, randomBytes(5000));
    const r = await cli(['push', junk]);
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toMatch(/not a backupctl archive/);
    expect(fake.requests).toHaveLength(0);
  });

  it('a missing archive is a local file problem (6)', async () => {
    const r = await cli(['push', join(home, 'nope.bkp')]);
    expect(r.exitCode).toBe(6);
  });

  it('not logged in: exit 8 and how to log in', async () => {
    const r = await runCli(['push', archive], { configDir: join(home, 'fresh-config'), env: { ...env(), BACKUPCTL_DRIVE_ACCESS_TOKEN: '' } });
    expect(r.exitCode).toBe(8);
    expect(r.stderr).toMatch(/run backupctl drive login/);
  });

  it('storage quota, the daily cap and permission refusals: exit 8 with why, session kept for later', async () => {
    const why: Record<string, RegExp> = { storageQuotaExceeded: /storage is full/, dailyLimitExceeded: /750 GB/, insufficientPermissions: /scope/ };
    for (const [reason, re] of Object.entries(why)) {
      fake.inject({ on: 'chunk', skip: 1, action: { status: 403, reason } });
      const r = await cli(['push', archive, '--chunk-size', '1M']);
      expect(r.exitCode, reason).toBe(8);
      const errors = r.stderr.trim().split('\n').filter((l) => l.startsWith('backupctl: '));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(re);
      expect(r.stderr).not.toMatch(STACK_TRACE);
    }
    const ok = await cli(['push', archive, '--chunk-size', '1M']);
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(ok.stderr).toMatch(/resuming the upload at \d+ of/);
    expect(fake.requests.filter((r) => r.on === 'session')).toHaveLength(1);
  });

  it('5xx forever: exit 7 after bounded retries', async () => {
    fake.inject({ on: 'chunk', times: 1000, action: { status: 503 } }, { on: 'probe', times: 1000, action: { status: 503 } });
    const r = await cli(['push', archive]);
    expect(r.exitCode).toBe(7);
    expect(r.stderr).toMatch(/giving up after \d+ attempts/);
  });

  it('refuses to send a token over plain http to a non-loopback host (exit 2), before connecting', async () => {
    const r = await cli(['drive', 'list'], { BACKUPCTL_DRIVE_ROOT_URL: 'http://drive.example.com/' });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/only sent over https/);
  });
});

describe('names, duplicates, the pushed log, rm and prune', () => {
  it('a name Drive holds twice means the newest; list marks duplicates; pull of what this machine did not push exits 11', async () => {
    expect((await cli(['push', archive])).exitCode).toBe(0);
    const mine = onlyRemote('main.bkp');
    const folder = mine.parents[0]!;
    const forged = archiveLikeBytes(100_000); // decryptable by nobody here, but a valid-looking archive
    const other = fake.addFile({ name: 'main.bkp', parents: [folder] }, forged);

    const list = await cli(['drive', 'list']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/newest of 2 with this name/);
    expect(list.stdout).toMatch(/older duplicate 2\/2: use the id/);
    expect(list.stdout).toMatch(/UNVERIFIED/);
    const lj = onlyJson<{ files: Array<{ id: string; sameName: number }> }>(await cli(['drive', 'list', '--json']));
    expect(lj.files.map((f) => f.id)).toEqual([other.id, mine.id]);

    const out = join(home, 'dup.bkp');
    const q = await cli(['pull', 'main.bkp', '-o', out]);
    expect(q.exitCode, q.stderr).toBe(11);
    expect(q.stderr).toMatch(/2 files on Drive are named main\.bkp: pulling the newest/);
    expect(q.stderr).toMatch(/the backup on Drive is not what this machine pushed/);
    expect((await readFile(out)).equals(forged)).toBe(true);

    const byId = await cli(['pull', mine.id, '-o', join(home, 'byid.bkp'), '--json']);
    expect(byId.exitCode, byId.stderr).toBe(0);
    expect(onlyJson(byId)).toMatchObject({ id: mine.id, differsFromPushed: false });

    const rmName = await cli(['drive', 'rm', 'main.bkp']);
    expect(rmName.exitCode, rmName.stderr).toBe(2);
    expect(rmName.stderr).toContain(other.id);
    const rmId = await cli(['drive', 'rm', other.id]);
    expect(rmId.exitCode, rmId.stderr).toBe(0);
    expect(fake.findByName('main.bkp').map((f) => f.id)).toEqual([mine.id]);
  });

  it("an id that starts with '-' goes after --, and without it the error says so", async () => {
    expect((await cli(['push', archive])).exitCode).toBe(0);
    const folder = onlyRemote('main.bkp').parents[0]!;
    const bytes = archiveLikeBytes(50_000);
    const dashed = fake.addFile({ id: '-YkQUFGumqJ0HyahtPHNsHOWPG9N', name: 'other.bkp', parents: [folder] }, bytes);

    const bare = await cli(['drive', 'rm', dashed.id]);
    expect(bare.exitCode).toBe(2);
    expect(bare.stderr.split('\n')[0]).toBe(`backupctl: unknown option '${dashed.id}'; if that is a Drive file id, put -- before it: ... -- ${dashed.id}`);
    expect(fake.content(dashed.id)).toBeDefined();
    const bareJson = await cli(['drive', 'rm', dashed.id, '--json']);
    expect(bareJson.exitCode).toBe(2);
    expect(onlyJson<{ error: { message: string } }>(bareJson).error.message).toBe(`unknown option '${dashed.id}'; if that is a Drive file id, put -- before it: ... -- ${dashed.id}`);

    const out = join(home, 'dashed.bkp');
    const pulled = await cli(['pull', '-o', out, '--', dashed.id]);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    expect((await readFile(out)).equals(bytes)).toBe(true);
    const rm = await cli(['drive', 'rm', '--', dashed.id]);
    expect(rm.exitCode, rm.stderr).toBe(0);
    expect(fake.content(dashed.id)).toBeUndefined();
  });

  it('warns when the file under a pushed name was replaced on Drive (--allow-foreign: exit 0)', async () => {
    const pushed = await cli(['push', archive]);
    expect(pushed.exitCode, pushed.stderr).toBe(0);
    const mine = onlyRemote('main.bkp');
    fake.replaceContent(mine.id, archiveLikeBytes(50_000));
    const q = await cli(['pull', 'main.bkp', '-o', join(home, 'swapped.bkp'), '--json', '--allow-foreign']);
    expect(q.exitCode, q.stderr).toBe(0);
    expect(q.stderr).toMatch(/NOT WHAT THIS MACHINE PUSHED/);
    expect(onlyJson(q)).toMatchObject({ differsFromPushed: true });
  });

  it('pull refuses to overwrite without --force, and a file that is not an archive fails with 5, leaving nothing', async () => {
    expect((await cli(['push', archive])).exitCode).toBe(0);
    const out = join(home, 'exists.bkp');
    await writeFile(out, 'keep me');
    expect((await cli(['pull', 'main.bkp', '-o', out])).exitCode).toBe(6);
    expect(await readFile(out, 'utf8')).toBe('keep me');
    expect((await cli(['pull', 'main.bkp', '-o', out, '--force'])).exitCode).toBe(0);
    expect((await readFile(out)).equals(archiveBytes)).toBe(true);

    const folder = onlyRemote('main.bkp').parents[0]!;
    fake.addFile({ name: 'notes.txt', parents: [folder] }, Buffer.from('not an archive'));
    const bad = await cli(['pull', 'notes.txt', '-o', join(home, 'notes.txt')]);
    expect(bad.exitCode).toBe(5);
    await expect(stat(join(home, 'notes.txt'))).rejects.toThrow();
    await expect(stat(join(home, 'notes.txt.part'))).rejects.toThrow();
  });

  it('prune is a dry run unless --yes, keeps the N newest, and never deletes the newest verified copy', async () => {
    const names = ['b1.bkp', 'b2.bkp', 'b3.bkp'];
    for (const n of names) {
      const a = await makeArchive(n, 1, 100_000);
      expect((await cli(['push', a])).exitCode).toBe(0);
    }
    const folder = onlyRemote('b1.bkp').parents[0]!;
    fake.addFile({ name: 'partial.bkp', parents: [folder] }, archiveLikeBytes(1000)); // newest, unverified

    const dry = await cli(['drive', 'prune', '--keep', '1', '--json']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    const plan = onlyJson<{ dryRun: boolean; keep: Array<{ name: string }>; remove: Array<{ name: string }> }>(dry);
    expect(plan.dryRun).toBe(true);
    expect(plan.keep.map((f) => f.name)).toEqual(['partial.bkp', 'b3.bkp']);
    expect(plan.remove.map((f) => f.name)).toEqual(['b2.bkp', 'b1.bkp']);
    expect(fake.files.size).toBe(5); // folder + 4: nothing deleted

    const human = await cli(['drive', 'prune', '--keep', '1']);
    expect(human.stderr).toMatch(/Dry run: nothing deleted/);

    const real = await cli(['drive', 'prune', '--keep', '1', '--yes']);
    expect(real.exitCode, real.stderr).toBe(0);
    const left = onlyJson<{ files: Array<{ name: string }> }>(await cli(['drive', 'list', '--json']));
    expect(left.files.map((f) => f.name)).toEqual(['partial.bkp', 'b3.bkp']);
    expect((await cli(['drive', 'prune', '--keep', '0'])).exitCode).toBe(2);
  });
});

describe('OAuth login', () => {
  let oauthConfig: string;
  const loginEnv = () => ({ ...env(), BACKUPCTL_DRIVE_ACCESS_TOKEN: '', BACKUPCTL_BROWSER: `${process.execPath} ${join(REPO, 'test/support/drive-fake/browser.mjs')}` });
  const ocli = (args: string[], extra: Record<string, string> = {}) => runCli(args, { configDir: oauthConfig, env: { ...loginEnv(), ...extra }, cwd: home, timeoutMs: 120_000 });

  beforeAll(async () => {
    oauthConfig = join(home, 'oauth-config');
    await mkdir(oauthConfig, { mode: 0o700 });
  });

  it('logs in with PKCE through a scripted browser, stores tokens 0600, and reports who is logged in', async () => {
    const secret = join(home, 'client_secret.json');
    await writeFile(secret, JSON.stringify({ installed: { client_id: fake.clientId, client_secret: fake.clientSecret, redirect_uris: ['http://localhost'] } }));
    const r = await ocli(['drive', 'login', '--client-secret-file', secret]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/code_challenge=/);
    const tokenFile = join(oauthConfig, 'drive-token.json');
    expect((await stat(tokenFile)).mode & 0o777).toBe(0o600);
    const saved = JSON.parse(await readFile(tokenFile, 'utf8')) as { tokens: { refresh_token: string } };
    expect(saved.tokens.refresh_token).toMatch(/^1\/\//);
    const st = await ocli(['drive', 'status', '--json']);
    expect(st.exitCode, st.stderr).toBe(0);
    expect(onlyJson(st)).toMatchObject({ loggedIn: true, source: 'login', user: 'fake.user@example.com', scopes: expect.arrayContaining([expect.stringMatching(/drive\.file$/)]) });
  });

  it('refreshes an expired access token mid-upload and carries on, saving the new token', async () => {
    const before = JSON.parse(await readFile(join(oauthConfig, 'drive-token.json'), 'utf8')) as { tokens: { access_token: string; refresh_token: string } };
    fake.inject({ on: 'chunk', skip: 3, action: { expireToken: true } });
    const p = await ocli(['push', archive, '--chunk-size', '1M']);
    expect(p.exitCode, p.stderr).toBe(0);
    expect(fake.content(onlyRemote('main.bkp').id)!.equals(archiveBytes)).toBe(true);
    const after = JSON.parse(await readFile(join(oauthConfig, 'drive-token.json'), 'utf8')) as { tokens: { access_token: string; refresh_token: string } };
    expect(after.tokens.access_token).not.toBe(before.tokens.access_token);
    expect(after.tokens.refresh_token).toBe(before.tokens.refresh_token); // merged, not lost
  });

  it('a failed refresh is fatal (8) but keeps the session, and the next run resumes', async () => {
    fake.inject({ on: 'chunk', skip: 4, action: { expireToken: true } }, { on: 'token', action: { status: 400, reason: 'invalid_grant' } });
    const p = await ocli(['push', archive, '--chunk-size', '1M']);
    expect(p.exitCode, p.stderr).toBe(8);
    expect(p.stderr).toMatch(/drive login/);
    const before = fake.uploadBytesReceived;
    const again = await ocli(['push', archive, '--chunk-size', '1M']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(fake.uploadBytesReceived - before).toBe(archiveBytes.length - 4 * MiB);
  });

  /** Run `drive login` with no browser to open: it prints the consent URL, which `visit` then handles. */
  async function loginWithoutBrowser(visit: (consentUrl: string) => Promise<void>) {
    const child = startCli(['drive', 'login'], { configDir: oauthConfig, env: { ...loginEnv(), BACKUPCTL_BROWSER: '' }, timeoutMs: 60_000 });
    const { url, printed } = await consentUrl(child);
    expect(printed).toMatch(/Open this address in a browser/);
    await visit(url);
    const r = await child;
    return { exitCode: r.exitCode, stderr: String(r.stderr) };
  }

  it('prints the consent URL when no browser can be opened, ignores a redirect with the wrong state, and honours a refusal', async () => {
    const ok = await loginWithoutBrowser(async (url) => {
      const redirect = new URL(new URL(url).searchParams.get('redirect_uri')!);
      redirect.searchParams.set('code', 'stolen');
      redirect.searchParams.set('state', 'forged');
      const forged = await fetch(redirect);
      expect(forged.status).toBe(400); // not the sign-in it waits for: still waiting
      expect((await fetch(url)).ok).toBe(true);
    });
    expect(ok.exitCode, ok.stderr).toBe(0);

    const denied = await loginWithoutBrowser(async (url) => {
      const u = new URL(url);
      const redirect = new URL(u.searchParams.get('redirect_uri')!);
      redirect.searchParams.set('error', 'access_denied');
      redirect.searchParams.set('state', u.searchParams.get('state')!);
      await fetch(redirect);
    });
    expect(denied.exitCode).toBe(8);
    expect(denied.stderr).toMatch(/did not grant access \(access_denied\)/);
  });

  it('logout revokes the refresh token at Google and deletes the local tokens', async () => {
    const live = fake.liveRefreshTokens;
    const r = await ocli(['drive', 'logout']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fake.liveRefreshTokens).toBe(live - 1);
    await expect(stat(join(oauthConfig, 'drive-token.json'))).rejects.toThrow();
    const st = await ocli(['drive', 'status']);
    expect(st.exitCode).toBe(8);
  });
});

describe.runIf(process.env.BACKUPCTL_TEST_LARGE === '1')('large archive (BACKUPCTL_TEST_LARGE=1)', () => {
  it('round-trips a ~320 MB archive under faults with 8 MiB chunks', async () => {
    const big = await makeArchive('large.bkp', 10, 32 * MiB);
    const bigBytes = await readFile(big);
    fake.inject({ on: 'chunk', skip: 7, action: { drop: true } }, { on: 'chunk', skip: 20, action: { status: 503 } }, { on: 'media', skip: 0, action: { drop: true } });
    const t0 = Date.now();
    const p = await cli(['push', big, '--json'], {}, 600_000);
    expect(p.exitCode, p.stderr).toBe(0);
    const t1 = Date.now();
    const out = join(home, 'large-pulled.bkp');
    expect((await cli(['pull', 'large.bkp', '-o', out], {}, 600_000)).exitCode).toBe(0);
    const t2 = Date.now();
    expect((await readFile(out)).equals(bigBytes)).toBe(true);
    process.stderr.write(`large: ${(bigBytes.length / 1e6).toFixed(0)} MB, push ${((t1 - t0) / 1000).toFixed(1)} s, pull ${((t2 - t1) / 1000).toFixed(1)} s\n`);
  }, 900_000);
});
