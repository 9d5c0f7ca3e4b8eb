// Enrol and unlock against the software authenticator over real CTAPHID/UDP, in process.
import { afterEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startAuthenticator, type RunningAuthenticator } from '../support/authenticator/server.js';
import type { AuthenticatorOptions } from '../support/authenticator/authenticator.js';
import { enrollKey, type UvChoice } from '../../src/fido2/enroll.js';
import { fido2Identity } from '../../src/keys/fido2-slot.js';
import { recipientFromEntry, type RecipientEntry } from '../../src/config.js';
import { BackupctlError, Exit } from '../../src/errors.js';

let running: RunningAuthenticator[] = [];
afterEach(async () => {
  await Promise.all(running.map((r) => r.close()));
  running = [];
});

async function start(o: AuthenticatorOptions = {}) {
  const r = await startAuthenticator(o);
  running.push(r);
  return r;
}

function pinReader(pin: string | undefined, calls: { n: number }) {
  return async () => {
    calls.n++;
    if (pin === undefined) throw new Error('PIN was not expected to be asked');
    return pin;
  };
}

async function enrol(r: RunningAuthenticator, uv: UvChoice, pin?: string) {
  const notes: string[] = [];
  const warnings: string[] = [];
  const calls = { n: 0 };
  const res = await enrollKey({ device: r.url, uv, label: 'k', readPin: pinReader(pin, calls), notify: (m) => notes.push(m), warn: (m) => warnings.push(m), signal: new AbortController().signal });
  return { ...res, notes, warnings, pinCalls: calls.n };
}

async function unlock(r: RunningAuthenticator, entry: RecipientEntry, pin?: string) {
  const fileKey = randomBytes(32);
  const slot = recipientFromEntry(entry).wrap(new Uint8Array(fileKey));
  const calls = { n: 0 };
  const notes: string[] = [];
  const id = fido2Identity({ device: r.url, readPin: pinReader(pin, calls), notify: (m) => notes.push(m), signal: new AbortController().signal });
  const got = await id.unwrap([slot]);
  return { ok: got !== null && Buffer.from(got).equals(fileKey), got, pinCalls: calls.n, notes };
}

async function expectFailure(p: Promise<unknown>, code: number, re: RegExp) {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(BackupctlError);
  expect((e as BackupctlError).message).toMatch(re);
  expect((e as BackupctlError).code).toBe(code);
}

describe('enrol and unlock with the software authenticator', () => {
  it.each([
    ['CTAP 2.1, protocol 2, no PIN', {}],
    ['CTAP 2.1, protocol 1 preferred', { protocols: [1, 2] as (1 | 2)[] }],
    ['CTAP 2.0', { ctap20: true }],
  ])('%s: enrol without PIN, unlock with one touch', async (_, o) => {
    const r = await start(o);
    const e = await enrol(r, 'preferred');
    expect(e.pinCalls).toBe(0);
    expect(e.entry.params).toMatchObject({ rp: 'backupctl', uv: false });
    expect(e.warnings.join()).toMatch(/simulated key, not a security key/);
    expect(e.notes).toContain('touch your security key');
    expect(e.attestation).toBe('packed attestation verified (self)');
    const touchesAfterEnrol = r.touchRequests;
    expect(touchesAfterEnrol).toBe(2);
    const u = await unlock(r, e.entry);
    expect(u.ok).toBe(true);
    expect(u.pinCalls).toBe(0);
    expect(r.touchRequests).toBe(touchesAfterEnrol + 1); // pre-flight needs no touch
  });

  it.each([
    ['CTAP 2.1 (pinUvAuthToken, single-use tokens)', {}],
    ['CTAP 2.0 (legacy getPinToken)', { ctap20: true }],
  ])('%s: PIN asked once at enrolment, once at unlock', async (_, o) => {
    const r = await start({ ...o, pin: '1234' });
    const e = await enrol(r, 'preferred', '1234');
    expect(e.pinCalls).toBe(1);
    expect(e.entry.params).toMatchObject({ uv: true });
    const u = await unlock(r, e.entry, '1234');
    expect(u.ok).toBe(true);
    expect(u.pinCalls).toBe(1);
  });

  it('--uv discouraged on a PIN key: no PIN (2.1 makeCredUvNotRqd), uv false, unlock without PIN', async () => {
    const r = await start({ pin: '1234' });
    const e = await enrol(r, 'discouraged');
    expect(e.pinCalls).toBe(0);
    expect(e.entry.params).toMatchObject({ uv: false });
    expect((await unlock(r, e.entry)).ok).toBe(true);
  });

  it('UV changes the output: same credential and salt give a stable output with PIN and another without', async () => {
    const r = await start({ pin: '1234' });
    const e = await enrol(r, 'discouraged');
    const { openDevices } = await import('../../src/fido2/device.js');
    const io = { signal: new AbortController().signal, notify: () => {} };
    const [dev] = await openDevices(r.url, io.signal);
    try {
      const cred = Buffer.from(e.entry.params!.credential as string, 'base64');
      const salt = randomBytes(32);
      const hex = async (pin: boolean) => {
        const { output, flags } = await dev!.hmacSecret('backupctl', cred, salt, pin ? async () => '1234' : null, io);
        return [Buffer.from(output).toString('hex'), (flags & 0x04) !== 0] as const;
      };
      const [noUv1, f1] = await hex(false);
      const [uv1, f2] = await hex(true);
      expect([f1, f2]).toEqual([false, true]);
      expect(uv1).not.toBe(noUv1);
      expect((await hex(false))[0]).toBe(noUv1);
      expect((await hex(true))[0]).toBe(uv1);
    } finally {
      await dev!.close();
    }
  });

  it('--uv required without a PIN set is refused', async () => {
    const r = await start();
    await expectFailure(enrol(r, 'required'), Exit.refused, /no PIN set/);
  });

  it('a key without hmac-secret is refused at enrolment with a clear message', async () => {
    const r = await start({ hmacSecret: false });
    await expectFailure(enrol(r, 'preferred'), Exit.refused, /does not support the hmac-secret extension/);
  });

  it('wrong PIN says how many tries are left; 3 in a row need a replug; 0 left is blocked', async () => {
    const r = await start({ pin: '1234' });
    const e = await enrol(r, 'preferred', '1234');
    await expectFailure(unlock(r, e.entry, '9999'), Exit.noKey, /wrong PIN .*\(7 tries left/);
    await expectFailure(unlock(r, e.entry, '9999'), Exit.noKey, /6 tries left/);
    await expectFailure(unlock(r, e.entry, '9999'), Exit.refused, /unplug the security key .* plug it back in/);
    r.auth.powerCycle();
    r.auth.pinRetries = 1;
    await expectFailure(unlock(r, e.entry, '9999'), Exit.refused, /PIN .* is blocked/);
    await expectFailure(unlock(r, e.entry, '1234'), Exit.refused, /blocked/);
  });

  it('a key that did not enrol the archive (or was reset) gives null with one message naming both', async () => {
    const r = await start();
    const e = await enrol(r, 'preferred');
    r.auth.reset();
    const u = await unlock(r, e.entry);
    expect(u.got).toBeNull();
    expect(u.notes.join()).toMatch(/did not enrol this archive, or was reset since/);
    expect(r.touchRequests).toBe(2); // no touch was asked for
  });

  it('UV mismatch is reported as such, not as a wrong key', async () => {
    const r = await start();
    const e = await enrol(r, 'preferred');
    r.auth.opts.builtinUv = true;
    await expectFailure(unlock(r, e.entry), Exit.refused, /UV mismatch: .*enrolled without PIN/);
  });

  it('slots for another rp id are ignored (never taken from the archive)', async () => {
    const r = await start();
    const e = await enrol(r, 'preferred');
    const forged = { ...e.entry, params: { ...e.entry.params, rp: 'evil.example' } };
    const u = await unlock(r, forged);
    expect(u.got).toBeNull();
    expect(r.auth.log.filter((l) => l.cmd === 0x02).length).toBe(1); // only the enrolment's assertion
  });

  it('a slot whose salt was altered is exit 4 after the touch (not a crash); malformed key replies are exit 7', async () => {
    const r = await start();
    const e = await enrol(r, 'preferred');
    const slot = recipientFromEntry(e.entry).wrap(new Uint8Array(32));
    slot.params = { ...slot.params, salt: Buffer.from(randomBytes(32)).toString('base64').replace(/=+$/, '') };
    const id = fido2Identity({ device: r.url, readPin: async () => '', notify: () => {}, signal: new AbortController().signal });
    await expectFailure(id.unwrap([slot]), Exit.noKey, /answer does not open the key slot/);
    const { talking } = await import('../../src/fido2/device.js');
    const { CborError } = await import('../../src/fido2/cbor.js');
    await expectFailure(talking(async () => { throw new CborError('3 trailing bytes after CBOR item'); }), Exit.unavailable, /reply backupctl cannot parse \(3 trailing bytes/);
  });

  it('touch timeout is a clear "try again" (exit 7)', async () => {
    const r = await start({ touchTimeoutMs: 300 });
    const e = await enrol(r, 'preferred');
    r.auth.opts.touch = 'never';
    await expectFailure(unlock(r, e.entry), Exit.unavailable, /timed out waiting for a touch/);
  });

  it('abort while waiting for a touch sends CANCEL and throws the abort reason', async () => {
    const r = await start();
    const e = await enrol(r, 'preferred');
    r.auth.opts.touch = 'never';
    const ac = new AbortController();
    const slot = recipientFromEntry(e.entry).wrap(new Uint8Array(32));
    const id = fido2Identity({ device: r.url, readPin: async () => '', notify: (m) => m === 'touch your security key' && ac.abort(new BackupctlError(Exit.interrupted, 'interrupted (Ctrl-C)')), signal: ac.signal });
    await expectFailure(id.unwrap([slot]), Exit.interrupted, /interrupted/);
    expect(r.cancels).toBe(1);
    expect(r.auth.log.at(-1)).toMatchObject({ cmd: 0x02, status: 0x2d });
  });

  it('no device answering is exit 7', async () => {
    const r = await start();
    const e = await enrol(r, 'preferred');
    const port = r.port;
    await r.close();
    running = [];
    const slot = recipientFromEntry(e.entry).wrap(new Uint8Array(32));
    const id = fido2Identity({ device: `udp://127.0.0.1:${port}?local=0`, readPin: async () => '', notify: () => {}, signal: new AbortController().signal });
    await expectFailure(id.unwrap([slot]), Exit.unavailable, /no simulated key answers|did not answer/);
  });
});
