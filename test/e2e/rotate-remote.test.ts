// `backupctl rotate --remote NAME` through the built CLI against the Drive fake on 127.0.0.1:
// pull, rotate, push, and only then delete the old copy; a failed push leaves Drive as it was.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriveFake } from '../support/drive-fake/server.js';
import { makeHome, newRecoveryCode, onlyJson, runCli, type RecoveryCode } from '../support/cli.js';

let fake: DriveFake;
let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let codeA: RecoveryCode;
let codeB: RecoveryCode;
let archive: string;
let token: string;

const env = () => ({
  BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl,
  BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl,
  BACKUPCTL_DRIVE_AUTH_URL: fake.authUrl,
  BACKUPCTL_DRIVE_ACCESS_TOKEN: token,
  BACKUPCTL_RETRY_BASE_MS: '5',
  TMPDIR: join(home, 'tmp'), // where the pulled copy is rotated: must be empty after every run
});
const cli = (args: string[]) => runCli(args, { configDir, env: env(), cwd: home, timeoutMs: 120_000 });

/** Exit code of restoring `bytes` (written to a file) with a code. */
async function restoreExit(bytes: Buffer, code: RecoveryCode): Promise<number> {
  const f = join(home, `check-${randomBytes(4).toString('hex')}.bkp`);
  await writeFile(f, bytes);
  return (await cli(['restore', f, '-d', `${f}.d`, '--recovery-code-file', code.file])).exitCode;
}

beforeAll(async () => {
  fake = await new DriveFake().start();
  token = fake.issueAccessToken();
  ({ home, configDir, cleanup } = await makeHome('backupctl-rotate-remote-'));
  await mkdir(join(home, 'tmp'));
  codeA = await newRecoveryCode(configDir, join(home, 'a.txt'), 'A');
  codeB = await newRecoveryCode(configDir, join(home, 'b.txt'), 'B');
  const src = join(home, 'export');
  await mkdir(src);
  await writeFile(join(src, 'VID-1.mp4'), randomBytes(3 << 20));
  archive = join(home, 'chats.bkp');
  const r = await cli(['create', src, '-o', archive]);
  if (r.exitCode !== 0) throw new Error(`create failed: ${r.stderr}`);
}, 120_000);
afterAll(async () => {
  await fake?.stop();
  await cleanup?.();
});
beforeEach(async () => {
  fake.files.clear();
  fake.pendingFaults().length = 0;
  const p = await cli(['push', archive]);
  expect(p.exitCode, p.stderr).toBe(0);
});

describe('rotate --remote', () => {
  it('pulls, re-keys without the removed code, pushes, then deletes the old copy', async () => {
    const [old] = fake.findByName('chats.bkp');
    const oldBytes = fake.content(old!.id)!;
    const r = await cli(['rotate', '--remote', 'chats.bkp', '--remove-key', 'B', '--recovery-code-file', codeA.file, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const j = onlyJson<{ rekeyed: boolean; removed: string[]; remote: { oldId: string; newId: string } }>(r);
    expect(j).toMatchObject({ rekeyed: true, removed: ['B'], remote: { oldId: old!.id } });
    const now = fake.findByName('chats.bkp');
    expect(now).toHaveLength(1);
    expect(now[0]!.id).toBe(j.remote.newId);
    expect(now[0]!.id).not.toBe(old!.id);
    expect(fake.files.has(old!.id)).toBe(false); // the old copy and its revisions are gone
    const rotated = fake.content(now[0]!.id)!;
    expect(rotated.equals(oldBytes)).toBe(false);
    expect(await restoreExit(rotated, codeA)).toBe(0);
    expect(await restoreExit(rotated, codeB)).toBe(4);
    expect(await readdir(join(home, 'tmp'))).toEqual([]);
  });

  it('a push that fails leaves the old copy on Drive untouched (and nothing behind locally)', async () => {
    const [old] = fake.findByName('chats.bkp');
    const oldBytes = fake.content(old!.id)!;
    fake.inject({ on: 'session', action: { status: 403, reason: 'storageQuotaExceeded' } });
    const r = await cli(['rotate', '--remote', 'chats.bkp', '--rekey', '--recovery-code-file', codeA.file]);
    expect(r.exitCode).toBe(8);
    expect(r.stderr).toMatch(/storage is full/);
    const now = fake.findByName('chats.bkp');
    expect(now.map((f) => f.id)).toEqual([old!.id]);
    expect(fake.content(old!.id)!.equals(oldBytes)).toBe(true);
    expect(await restoreExit(oldBytes, codeB)).toBe(0);
    expect(await readdir(join(home, 'tmp'))).toEqual([]);
  });

  it('--new-recovery-code: a failed push leaves the config as it was and shows no code', async () => {
    const before = await readFile(join(configDir, 'config.json'), 'utf8');
    fake.inject({ on: 'session', action: { status: 403, reason: 'storageQuotaExceeded' } });
    const r = await cli(['rotate', '--remote', 'chats.bkp', '--new-recovery-code', '--recovery-code-file', codeA.file]);
    expect(r.exitCode).toBe(8);
    expect(r.stdout).not.toMatch(/New recovery code/);
    expect(await readFile(join(configDir, 'config.json'), 'utf8')).toBe(before);
    expect(fake.findByName('chats.bkp')).toHaveLength(1);
  });

  it('--new-recovery-code: once Drive has the new copy, the code is shown and becomes the config\'s', async () => {
    const r = await cli(['rotate', '--remote', 'chats.bkp', '--new-recovery-code', '--recovery-code-file', codeA.file, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const j = onlyJson<{ code: string; label: string; retiredFromConfig: string[]; remote: { newId: string } }>(r);
    expect(j.retiredFromConfig.sort()).toEqual(['A', 'B']);
    const cfg = JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8')) as { recipients: Array<{ label: string }> };
    expect(cfg.recipients.map((e) => e.label)).toEqual([j.label]);
    const fresh = join(home, 'fresh.txt');
    await writeFile(fresh, j.code, { mode: 0o600 });
    const rotated = fake.content(j.remote.newId)!;
    expect(await restoreExit(rotated, { ...codeA, code: j.code, file: fresh })).toBe(0);
    expect(await restoreExit(rotated, codeA)).toBe(4);
  });

  it('FILE and --remote together, or neither, is a usage error', async () => {
    expect((await cli(['rotate', archive, '--remote', 'chats.bkp'])).exitCode).toBe(2);
    expect((await cli(['rotate'])).exitCode).toBe(2);
    expect((await readFile(archive)).length).toBeGreaterThan(0);
  });
});
