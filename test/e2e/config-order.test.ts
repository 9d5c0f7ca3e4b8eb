// The order of changes, through the built CLI: every command that changes the config checks all
// its inputs first and changes the config last, so each failure leaves config.json byte-identical
// and no new recovery code appears anywhere (a code is only ever in the stdout result or the
// user's --output file, never in an error line).
import { describe, expect, it } from 'vitest';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import { join } from 'node:path';
import { STACK_TRACE, consentUrl, makeHome, onlyJson, runCli, startCli } from '../support/cli.js';
import { archiveHome } from '../support/home.js';
import { DriveFake } from '../support/drive-fake/server.js';
import { HOST_TAG, startTicks } from '../../src/util/owner.js';

const CODE_RE = /[0-9A-HJKMNP-TV-Z]{5}(?:-[0-9A-HJKMNP-TV-Z]{5}){6}/;

const fx = archiveHome('backupctl-order-e2e-', { label: 'paper', perTest: true });
const cli = (args: string[]) => runCli(args, { configDir: fx.configDir, timeoutMs: 60_000 });
const cfgPath = () => join(fx.configDir, 'config.json');

/** Run `args`; expect exit `code`, one clear line, no recovery code anywhere, config.json and the archive unchanged. */
async function failsCleanly(args: string[], code: number, line: RegExp) {
  const config = await readFile(cfgPath());
  const arch = await readFile(fx.archive);
  const r = await cli(args);
  expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(code);
  if (args.includes('--json')) {
    // With --json, stderr holds only JSON lines: the failure is one {type:error} line there.
    const errors = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l)).filter((o) => o.type === 'error');
    expect(errors, r.stderr).toHaveLength(1);
    expect(errors[0].message).toMatch(line);
  } else {
    expect(r.stderr).toMatch(new RegExp(`^backupctl: ${line.source}`));
    expect(r.stderr.split('\n').filter((l) => l.startsWith('backupctl: ')), r.stderr).toHaveLength(1);
  }
  expect(r.stderr).not.toMatch(STACK_TRACE);
  expect(r.stderr).not.toMatch(CODE_RE);
  expect(r.stdout).not.toMatch(CODE_RE);
  expect((await readFile(cfgPath())).equals(config), `${args.join(' ')}: config.json changed`).toBe(true);
  expect((await readFile(fx.archive)).equals(arch)).toBe(true);
  return r;
}

/** Hold the config lock as a live run would (this test process). */
const lockConfig = () => writeFile(`${cfgPath()}.lock`, `backupctl-lock 1 host=${HOST_TAG} pid=${process.pid} start=${startTicks(process.pid) ?? '-'} token=${'1'.repeat(32)}\n`);

describe('recovery-code rotate', () => {
  it('--check with a mistyped DIR: exit 6 before any code is made; the old code stays', async () => {
    await failsCleanly(['recovery-code', 'rotate', '--check', join(fx.home, 'bakcups')], 6, /cannot read .*bakcups: no such file or directory/);
    await failsCleanly(['recovery-code', 'rotate', '--check', join(fx.home, 'bakcups'), '--output', join(fx.home, 'new.txt')], 6, /cannot read/);
    expect(await readdir(fx.home)).not.toContain('new.txt');
    expect((await cli(['recovery-code', 'check', '--recovery-code-file', fx.rc.file])).exitCode).toBe(0);
  });

  it('--output an existing file, a taken or bad --label, a locked config: nothing changes', async () => {
    await writeFile(join(fx.home, 'exists.txt'), 'mine');
    await failsCleanly(['recovery-code', 'rotate', '--output', join(fx.home, 'exists.txt')], 6, /.*exists.txt already exists: refusing to overwrite it/);
    expect(await readFile(join(fx.home, 'exists.txt'), 'utf8')).toBe('mine');
    await failsCleanly(['recovery-code', 'rotate', '--label', 'paper'], 2, /a recipient labelled "paper" exists already/);
    await failsCleanly(['recovery-code', 'rotate', '--label', 'a\u202eb'], 2, /--label must be 1 to 100 visible characters/);
    await lockConfig();
    await failsCleanly(['recovery-code', 'rotate'], 9, /the config is in use by another backupctl run/);
  });

  it('with --check DIR that holds archives: the code is shown, then the old one retired, and the list printed', async () => {
    const r = await cli(['recovery-code', 'rotate', '--check', fx.home, '--label', 'new']);
    expect(r.exitCode, r.stderr).toBe(0);
    const shown = r.stdout.indexOf(r.stdout.match(CODE_RE)![0]);
    expect(shown).toBeGreaterThan(0);
    expect(r.stdout.indexOf('It replaces "paper"')).toBeGreaterThan(shown);
    expect(r.stdout).toContain(`  ${fx.archive}: "paper"`);
    const cfg = JSON.parse(await readFile(cfgPath(), 'utf8'));
    expect(cfg.recipients.map((e: { label: string }) => e.label)).toEqual(['new']);
  });
});

describe('recovery-code new', () => {
  it('a taken label, a locked config, an existing --output: nothing changes, no code shown or written', async () => {
    await failsCleanly(['recovery-code', 'new', '--label', 'paper'], 2, /a recipient labelled "paper" exists already/);
    await lockConfig();
    await failsCleanly(['recovery-code', 'new'], 9, /the config is in use by another backupctl run/);
    await failsCleanly(['recovery-code', 'new', '--output', join(fx.home, 'c.txt')], 9, /the config is in use/);
    expect(await readdir(fx.home)).not.toContain('c.txt');
  });
});

describe('rotate --new-recovery-code', () => {
  it('a wrong code, a missing archive, contradictory flags: the config keeps its code, no new one appears', async () => {
    const wrong = join(fx.home, 'wrong.txt');
    const other = await runCli(['recovery-code', 'new', '--json'], { configDir: join(fx.home, 'other') });
    await writeFile(wrong, onlyJson<{ code: string }>(other).code, { mode: 0o600 });
    await failsCleanly(['rotate', fx.archive, '--new-recovery-code', '--recovery-code-file', wrong], 4, /.*/);
    await failsCleanly(['rotate', join(fx.home, 'nope.bkp'), '--new-recovery-code', '--recovery-code-file', fx.rc.file], 6, /.*nope\.bkp/);
    await failsCleanly(['rotate', fx.archive, '--new-recovery-code', '--rekey', '--no-rekey', '--recovery-code-file', fx.rc.file], 2, /--rekey and --no-rekey contradict each other: give one of them/);
  });

  it('--json with the config locked: exit 9 before the archive is touched; the code is never on stderr', async () => {
    await lockConfig();
    const r = await failsCleanly(['rotate', '--json', fx.archive, '--new-recovery-code', '--recovery-code-file', fx.rc.file], 9, /the config is in use by another backupctl run/);
    expect(onlyJson(r)).toMatchObject({ ok: false, error: { exitCode: 9, kind: 'locked' } });
  });

  it('--json on success: the code only in the stdout object, the config changed once the archive is in place', async () => {
    const r = await cli(['rotate', '--json', fx.archive, '--new-recovery-code', '--recovery-code-file', fx.rc.file]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(CODE_RE);
    const j = onlyJson<{ code: string; label: string; retiredFromConfig: string[] }>(r);
    expect(j.code).toMatch(CODE_RE);
    expect(j.retiredFromConfig).toEqual(['paper']);
    await writeFile(join(fx.home, 'new.txt'), j.code, { mode: 0o600 });
    expect((await cli(['verify', fx.archive, '--recovery-code-file', join(fx.home, 'new.txt')])).exitCode).toBe(0);
    expect(await readdir(fx.configDir)).toEqual(['config.json']);
  });
});

describe('removing recipients', () => {
  it('key remove and recovery-code remove of an unknown label (exit 2), or of the last recipient (exit 8): nothing changes', async () => {
    await failsCleanly(['key', 'remove', 'nope'], 2, /no enrolled security key is labelled or has the fingerprint "nope"/);
    await failsCleanly(['recovery-code', 'remove', 'nope'], 2, /no recovery code is labelled or has the fingerprint "nope" \(see: backupctl recovery-code list\)/);
    await failsCleanly(['recovery-code', 'remove', 'paper'], 8, /refusing to remove "paper": it is the last recipient in the config/);
    await failsCleanly(['key', 'enroll', '--label', 'paper'], 2, /a recipient labelled "paper" exists already/);
  });
});

describe('drive login', () => {
  it('a refused sign-in with --client-secret-file leaves the config directory as it was', async () => {
    const fake = await new DriveFake().start();
    try {
      const secret = join(fx.home, 'client_secret.json');
      await writeFile(secret, JSON.stringify({ installed: { client_id: fake.clientId, client_secret: fake.clientSecret } }));
      const before = (await readdir(fx.configDir)).sort();
      const env = { BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl, BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl, BACKUPCTL_DRIVE_AUTH_URL: fake.authUrl, BACKUPCTL_BROWSER: '' };
      const child = startCli(['drive', 'login', '--client-secret-file', secret], { configDir: fx.configDir, env, timeoutMs: 60_000 });
      const { url } = await consentUrl(child);
      const u = new URL(url);
      const redirect = new URL(u.searchParams.get('redirect_uri')!);
      redirect.searchParams.set('error', 'access_denied');
      redirect.searchParams.set('state', u.searchParams.get('state')!);
      await fetch(redirect);
      const r = await child;
      expect(r.exitCode).toBe(8);
      expect((await readdir(fx.configDir)).sort()).toEqual(before); // no drive-client.json, no token
    } finally {
      await fake.stop();
    }
  });
});

/** Can this machine make a file immutable (chattr +i: even root cannot replace it)? */
async function canPin(): Promise<boolean> {
  const { home: h, cleanup: c } = await makeHome('backupctl-chattr-');
  try {
    await writeFile(join(h, 'f'), '');
    const r = await execa('chattr', ['+i', join(h, 'f')], { reject: false });
    if (r.exitCode !== 0) return false;
    await execa('chattr', ['-i', join(h, 'f')]);
    return true;
  } catch {
    return false;
  } finally {
    await c();
  }
}

describe.runIf(await canPin())('the config cannot be written after the code was given', () => {
  /** Run with config.json immutable, so that writing it (the last step) fails; undone afterwards. */
  async function pinned<T>(fn: () => Promise<T>): Promise<T> {
    await execa('chattr', ['+i', cfgPath()]);
    try {
      return await fn();
    } finally {
      await execa('chattr', ['-i', cfgPath()]);
    }
  }

  it('recovery-code new and rotate: the shown code is declared void, a written file removed, the config unchanged', async () => {
    const config = await readFile(cfgPath());
    for (const cmd of ['new', 'rotate']) {
      const r = await pinned(() => cli(['recovery-code', cmd]));
      expect(r.exitCode, r.stderr).toBe(6);
      expect(r.stdout).toMatch(CODE_RE); // it was shown before the config was written...
      expect(r.stderr).toMatch(/^backupctl: the code shown above was NOT recorded in the config, which is unchanged: do not keep it \(cannot write .*config\.json: operation not permitted\)\n$/);
      expect(r.stderr).not.toMatch(CODE_RE);
      const f = await pinned(() => cli(['recovery-code', cmd, '--output', join(fx.home, `${cmd}.txt`)]));
      expect(f.exitCode).toBe(6);
      expect(await readdir(fx.home)).not.toContain(`${cmd}.txt`); // ...and a file holding it is removed
      expect((await readFile(cfgPath())).equals(config)).toBe(true);
      expect(await readdir(fx.configDir)).toEqual(['config.json']);
    }
  });

  it('rotate --new-recovery-code --json: the archive opens with the new code, which is in the stdout error object only', async () => {
    const r = await pinned(() => cli(['rotate', '--json', fx.archive, '--new-recovery-code', '--recovery-code-file', fx.rc.file]));
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/was rotated and opens with the new code given in this JSON object, but the config could not be updated/);
    expect(r.stderr).not.toMatch(CODE_RE);
    const j = onlyJson<{ error: { code: string } }>(r);
    expect(j.error.code).toMatch(CODE_RE);
    await writeFile(join(fx.home, 'new.txt'), j.error.code, { mode: 0o600 });
    expect((await cli(['verify', fx.archive, '--recovery-code-file', join(fx.home, 'new.txt')])).exitCode).toBe(0);
  });
});
