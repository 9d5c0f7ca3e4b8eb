// FIDO2 security keys end to end: the BUILT CLI (run `npx tsc -p .` first) against the software
// authenticator speaking CTAPHID over UDP on a free loopback port, in this test process.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startAuthenticator, type RunningAuthenticator } from '../support/authenticator/server.js';
import type { AuthenticatorOptions } from '../support/authenticator/authenticator.js';
import { recipientFromEntry } from '../../src/config.js';
import { b64encode } from '../../src/util/base64.js';
import { craftArchive, editedSlots } from '../support/craft.js';
import { STACK_TRACE, exists, makeExportTree, makeHome, newRecoveryCode, onlyJson, runCli, snapshot, startCli, type CliResult } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let keys: RunningAuthenticator[] = [];

beforeEach(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-fido2-e2e-'));
});
afterEach(async () => {
  await Promise.all(keys.map((k) => k.close().catch(() => {})));
  keys = [];
  await cleanup();
});

async function plug(o: Parameters<typeof startAuthenticator>[0] = {}) {
  const k = await startAuthenticator(o);
  keys.push(k);
  return k;
}

const cli = (args: string[], env: Record<string, string> = {}) => runCli(args, { configDir, env, timeoutMs: 40_000 });

function expectClean(r: CliResult, code: number, re?: RegExp) {
  expect(r.exitCode, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toBe(code);
  expect(r.stderr).not.toMatch(STACK_TRACE);
  if (re) expect(r.stderr).toMatch(re);
}

async function enrol(k: RunningAuthenticator, extra: string[] = [], env: Record<string, string> = {}) {
  const r = await cli(['key', 'enroll', '--json', '--device', k.url, ...extra], env);
  expectClean(r, 0, /touch your security key/);
  expect(r.stderr).toMatch(/simulated key, not a security key/);
  return onlyJson<{ label: string; fingerprint: string; uv: boolean; aaguid: string; attestation: string }>(r);
}

async function archive(): Promise<{ src: string; file: string }> {
  const src = join(home, 'export');
  await makeExportTree(src);
  const file = join(home, 'a.bkp');
  const r = await cli(['create', src, '-o', file]);
  expectClean(r, 0);
  return { src, file };
}

describe('backupctl key / restore with a FIDO2 key', () => {
  it('enrol without PIN; create touches nothing (key unplugged); restore with one touch', async () => {
    const k = await plug();
    const e = await enrol(k, ['--label', 'blue']);
    expect(e).toMatchObject({ label: 'blue', uv: false, attestation: 'packed attestation verified (self)' });
    const cfg = JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8'));
    expect(cfg.recipients[0]).toMatchObject({ type: 'fido2', label: 'blue', params: { rp: 'backupctl', uv: false, aaguid: e.aaguid } });
    expect(cfg.recipients[0].params.salt).toMatch(/^[A-Za-z0-9+/]{43}$/);

    await k.close(); // unplugged: create needs no key
    const commandsBefore = k.auth.log.length;
    const { src, file } = await archive();
    expect(k.auth.log.length).toBe(commandsBefore);
    // inspect (no key) shows the slot with the fingerprint enrol and key list show.
    expect(onlyJson<{ slots: Array<{ fingerprint: string }> }>(await cli(['inspect', '--json', file])).slots.map((x) => x.fingerprint)).toEqual([e.fingerprint]);

    const k2 = await plug(k.auth); // plugged back in (new port)
    const out = join(home, 'out');
    const r = await cli(['restore', file, '-d', out, '--device', k2.url]);
    expectClean(r, 0, /touch your security key/);
    expect(await snapshot(out)).toEqual(await snapshot(src));
    // pre-flight (up:false) then exactly one assertion with a touch
    expect(k.auth.log.filter((l) => l.cmd === 0x02).slice(-2).map((l) => l.up)).toEqual([false, true]);

    const list = onlyJson<{ keys: Array<{ label: string; fingerprint: string }> }>(await cli(['key', 'list', '--json']));
    expect(list.keys).toEqual([expect.objectContaining({ label: 'blue', fingerprint: e.fingerprint })]);
    const t = await cli(['key', 'test', 'blue', '--device', k2.url]);
    expectClean(t, 0);
    expect(t.stdout).toMatch(/"blue" .* works/);
  });

  it('enrol and restore with a PIN (BACKUPCTL_PIN and --pin-file); no PIN and no terminal is exit 2', async () => {
    const k = await plug({ pin: '2468' });
    const e = await enrol(k, [], { BACKUPCTL_PIN: '2468' });
    expect(e.uv).toBe(true);
    const { src, file } = await archive();
    const r = await cli(['restore', file, '-d', join(home, 'out'), '--device', k.url], { BACKUPCTL_PIN: '2468' });
    expectClean(r, 0);
    expect(await snapshot(join(home, 'out'))).toEqual(await snapshot(src));
    const pinFile = join(home, 'pin');
    await writeFile(pinFile, '2468\n', { mode: 0o600 });
    expectClean(await cli(['verify', file, '--device', k.url, '--pin-file', pinFile]), 0);
    expectClean(await cli(['restore', file, '-d', join(home, 'out2'), '--device', k.url]), 2, /no PIN given and stdin is not a terminal: use --pin-file FILE or BACKUPCTL_PIN/);
  });

  it('wrong PIN says how many tries are left (exit 4); a blocked PIN is exit 8 pointing to the recovery code', async () => {
    const k = await plug({ pin: '2468' });
    await enrol(k, [], { BACKUPCTL_PIN: '2468' });
    const { file } = await archive();
    const out = join(home, 'out');
    expectClean(await cli(['restore', file, '-d', out, '--device', k.url], { BACKUPCTL_PIN: '1111' }), 4, /wrong PIN for the security key .*\(7 tries left/);
    expect(await exists(out)).toBe(false);
    k.auth.pinRetries = 1;
    expectClean(await cli(['restore', file, '-d', out, '--device', k.url], { BACKUPCTL_PIN: '1111' }), 8, /PIN .* is blocked.*recovery code/);
    expectClean(await cli(['restore', file, '-d', out, '--device', k.url], { BACKUPCTL_PIN: '2468' }), 8, /is blocked/);
  });

  it('UV mismatch is reported as such (exit 8), not as a wrong key', async () => {
    const k = await plug();
    await enrol(k);
    const { file } = await archive();
    k.auth.opts.builtinUv = true; // the key now verifies the user on every touch
    const r = await cli(['restore', file, '-d', join(home, 'out'), '--device', k.url]);
    expectClean(r, 8, /UV mismatch: this key slot was enrolled without PIN/);
    expect(r.stderr).not.toMatch(/wrong|does not open/);
  });

  it('two keys enrolled, only the spare present: it unlocks; a key that enrolled nothing falls back to the recovery code', async () => {
    const main = await plug();
    const spare = await plug({ ctap20: true });
    await enrol(main, ['--label', 'main']);
    await enrol(spare, ['--label', 'spare']);
    await newRecoveryCode(configDir, join(home, 'code.txt'));
    const { src, file } = await archive();
    await main.close();
    const out = join(home, 'out');
    expectClean(await cli(['restore', file, '-d', out, '--device', spare.url]), 0);
    expect(await snapshot(out)).toEqual(await snapshot(src));

    const stranger = await plug();
    const r = await cli(['restore', file, '-d', join(home, 'out2'), '--device', stranger.url]);
    expectClean(r, 2, /did not enrol this archive, or was reset since/);
    expect(r.stderr).toMatch(/using the recovery code instead/);
    expect(stranger.touchRequests).toBe(0); // found out without a touch
  });

  it('a key without hmac-secret is refused at enrolment (exit 8) and nothing is recorded', async () => {
    const k = await plug({ hmacSecret: false });
    const r = await cli(['key', 'enroll', '--device', k.url]);
    expectClean(r, 8, /does not support the hmac-secret extension/);
    expect(await exists(join(configDir, 'config.json'))).toBe(false);
  });

  it('touch timeout is exit 7', async () => {
    const k = await plug({ touchTimeoutMs: 700 });
    await enrol(k);
    const { file } = await archive();
    k.auth.opts.touch = 'never';
    expectClean(await cli(['restore', file, '-d', join(home, 'out'), '--device', k.url]), 7, /timed out waiting for a touch/);
  });

  it('Ctrl-C while waiting for a touch: CANCEL reaches the key, exit 130, nothing restored', async () => {
    const k = await plug();
    await enrol(k);
    const { file } = await archive();
    k.auth.opts.touch = 'never';
    const out = join(home, 'out');
    const p = startCli(['restore', file, '-d', out, '--device', k.url], { configDir, timeoutMs: 30_000 });
    let stderr = '';
    p.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (/touch your security key/.test(stderr)) p.kill('SIGINT');
    });
    const r = await p;
    expect(r.exitCode, String(r.stderr)).toBe(130);
    expect(String(r.stderr)).toMatch(/interrupted/);
    expect(k.cancels).toBeGreaterThanOrEqual(1);
    expect(k.auth.log.at(-1)).toMatchObject({ cmd: 0x02, status: 0x2d });
    expect(await exists(out)).toBe(false);
  });

  it('no key at all is exit 7; key remove of the last recipient is exit 8 without --force; then create has nobody to encrypt to', async () => {
    const k = await plug();
    const e = await enrol(k);
    const { file } = await archive();
    await k.close();
    const r = await cli(['restore', file, '-d', join(home, 'out')]);
    expectClean(r, 7, /no FIDO2 security key found|libusb/);
    const configBefore = await readFile(join(configDir, 'config.json'), 'utf8');
    const refused = await cli(['key', 'remove', e.fingerprint]);
    expectClean(refused, 8);
    expect(refused.stderr).toBe(`backupctl: refusing to remove "${e.label}": it is the last recipient in the config, so create would have nobody to encrypt new archives to; add another first (backupctl recovery-code new, backupctl key enroll), or add --force if that is what you want\n`);
    expect(await readFile(join(configDir, 'config.json'), 'utf8')).toBe(configBefore);
    expectClean(await cli(['key', 'remove', e.fingerprint, '--force']), 0);
    expectClean(await cli(['create', join(home, 'export'), '-o', join(home, 'b.bkp')]), 2, /no recipients/);
  });

  it('key enroll --replace: a new credential and salt under the same label; old archives still open', async () => {
    const k = await plug();
    const first = await enrol(k, ['--label', 'blue']);
    const { src, file } = await archive();
    const again = onlyJson<{ label: string; fingerprint: string; replaced: { fingerprint: string } }>(await cli(['key', 'enroll', '--json', '--replace', 'blue', '--device', k.url]));
    expect(again).toMatchObject({ label: 'blue', replaced: { fingerprint: first.fingerprint } });
    expect(again.fingerprint).not.toBe(first.fingerprint);
    const cfg = JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8'));
    expect(cfg.recipients.map((r: { label: string }) => r.label)).toEqual(['blue']);
    expectClean(await cli(['restore', file, '-d', join(home, 'out'), '--device', k.url]), 0);
    expect(await snapshot(join(home, 'out'))).toEqual(await snapshot(src));
  });

  it('a security-key slot with a low-order share: exit 5 (its tag is this key\'s), one line, never exit 1', async () => {
    const k = await plug();
    await enrol(k, ['--label', 'blue']);
    const entry = JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8')).recipients[0];
    const P = (1n << 255n) - 19n;
    const le = (n: bigint) => Buffer.from(Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn)));
    const shares = [le(0n), le(1n), Buffer.from('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800', 'hex'),
      Buffer.from('5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157', 'hex'), le(P - 1n), le(P), le(P + 1n)];
    for (const [i, share] of shares.entries()) {
      const file = await craftArchive(join(home, `share-${i}.bkp`), [editedSlots(recipientFromEntry(entry), (s) => ({ ...s, share: b64encode(share) }))], [{ path: 'a.txt' }]);
      const r = await cli(['verify', file, '--device', k.url]);
      expectClean(r, 5);
      expect(r.stderr.split('\n').filter((l) => l.startsWith('backupctl: '))).toEqual([
        'backupctl: the key slot "blue" is for this security key but does not open: the archive header was damaged or tampered with',
      ]);
    }
  });

  it('--device refuses a non-loopback UDP address; doctor describes a key', async () => {
    expectClean(await cli(['key', 'enroll', '--device', 'udp://192.0.2.1:8111']), 2, /loopback only/);
    const k = await plug({ pin: '1357', protocols: [1] });
    const d = onlyJson<{ keys: Array<Record<string, unknown>>; problems: Array<{ problem: string; fix: string }> }>(await cli(['doctor', '--json', '--device', k.url]));
    expect(d.keys).toEqual([expect.objectContaining({ hmacSecret: true, pinSet: true, pinUvAuthProtocols: [1], versions: ['U2F_V2', 'FIDO_2_0', 'FIDO_2_1'] })]);
    expect(d.problems.map((p) => p.fix)).toContain('backupctl key enroll');
  });
});
