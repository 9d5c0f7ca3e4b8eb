// pull into FILE (backupctl-drive(1) "pull") while something else writes it. Two pulls with one
// -o both wrote FILE.part: before the lock, the second (exit 0, "MD5 matches Drive") renamed the
// shared .part under FILE while the first, resumed after a stall, went on writing into it, so
// FILE was neither backup. Now the first holds FILE.lock for its whole download (stalled
// half-way by the Drive fake here) and the second is exit 9 naming it, before any byte. And a
// file another program creates at FILE during the download is no longer renamed over.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriveFake } from '../support/drive-fake/server.js';
import { archiveLikeBytes } from '../support/drive-fake/archive-bytes.js';
import { STACK_TRACE, exists, makeHome, runCli, startCli } from '../support/cli.js';

const MiB = 1024 * 1024;
let fake: DriveFake;
let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let env: Record<string, string>;
const a = archiveLikeBytes(2 * MiB);
const b = archiveLikeBytes(2 * MiB);

beforeAll(async () => {
  fake = await new DriveFake().start();
  ({ home, configDir, cleanup } = await makeHome('backupctl-pull-lock-'));
  env = {
    BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl, BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl, BACKUPCTL_DRIVE_AUTH_URL: fake.authUrl,
    BACKUPCTL_DRIVE_ACCESS_TOKEN: fake.issueAccessToken(), BACKUPCTL_RETRY_BASE_MS: '5', BACKUPCTL_DRIVE_STALL_MS: '1500',
  };
  for (const [name, bytes] of [['a.bkp', a], ['b.bkp', b]] as const) {
    await writeFile(join(home, name), bytes);
    const p = await runCli(['push', join(home, name)], { configDir, env });
    expect(p.exitCode, p.stderr).toBe(0);
  }
});
afterAll(async () => {
  await fake?.stop();
  await cleanup?.();
});

/** `pull a.bkp -o out`, stalled by the fake after half of it (until the stall limit, 1.5 s). */
function stalledPull(out: string) {
  fake.inject({ on: 'media', action: { hang: true } });
  return startCli(['pull', 'a.bkp', '-o', out], { configDir, env, cwd: home });
}

async function halfDownloaded(out: string): Promise<void> {
  for (const end = Date.now() + 20_000; ((await stat(`${out}.part`).catch(() => null))?.size ?? 0) < MiB; await new Promise((r) => setTimeout(r, 5))) {
    if (Date.now() > end) throw new Error('the pull never wrote half of its download');
  }
}

describe('two pulls into one FILE at once', () => {
  it('the second is exit 9 naming the first, which then completes with its own bytes only', async () => {
    const out = join(home, 'pulled.bkp');
    const first = stalledPull(out);
    await halfDownloaded(out);
    // Held where it is while the second runs: on a loaded machine the stall limit could otherwise
    // pass, and the first finish, before the second has even started.
    process.kill(first.pid!, 'SIGSTOP');
    const second = await runCli(['pull', 'b.bkp', '-o', out], { configDir, env, cwd: home }).finally(() => process.kill(first.pid!, 'SIGCONT'));
    expect(second.exitCode, second.stderr).toBe(9);
    expect(second.stderr).toBe(`backupctl: ${out} is in use by another backupctl run (pid ${first.pid}); try again when it has finished\n`);
    expect(second.stderr).not.toMatch(STACK_TRACE);
    const r = await first;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect((await readFile(out)).equals(a)).toBe(true);
    expect(await exists(`${out}.part`)).toBe(false);
    expect(await exists(`${out}.lock`)).toBe(false);
  });
});

describe('a FILE that something else creates during the download', () => {
  it('is left as it is without --force (exit 6); the download does not replace it', async () => {
    const out = join(home, 'made-meanwhile.bkp');
    const p = stalledPull(out);
    await halfDownloaded(out);
    process.kill(p.pid!, 'SIGSTOP'); // as above: the stall limit must not pass first
    await writeFile(out, 'written by another program\n').finally(() => process.kill(p.pid!, 'SIGCONT')); // checked absent before the download only
    const r = await p;
    expect(r.exitCode, String(r.stderr)).toBe(6);
    expect(String(r.stderr)).toMatch(new RegExp(`^backupctl: ${out} was created meanwhile by something else; it was left as it is \\(use --force to replace it\\)$`, 'm'));
    expect(await readFile(out, 'utf8')).toBe('written by another program\n');
    expect(await exists(`${out}.part`)).toBe(false);
  });
});
