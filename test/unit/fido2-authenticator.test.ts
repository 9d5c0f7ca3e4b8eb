// The software authenticator behaves like the firmwares the notes describe (the "(seen)"
// facts), so the client tests against it mean something. Talks to its CTAP2 layer directly.
import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { SoftAuthenticator, type AuthenticatorOptions } from '../support/authenticator/authenticator.js';
import { asBytes, asMap, type CborMap, type CborValue } from '../../src/fido2/cbor.js';
import { parseAuthData } from '../../src/fido2/ctap2.js';
import { encapsulate, protocols, type PinProtocolVersion } from '../../src/fido2/pin.js';

const PIN = '1234';
const touch = { waitForTouch: async () => 'touched' as const };
const m = (entries: Array<[number | string, CborValue]>): CborMap => new Map(entries);

async function setup(o: AuthenticatorOptions) {
  const a = new SoftAuthenticator(o);
  const cdh = randomBytes(32);
  // A 2.0 key with a PIN needs it to create a credential (notes: "(seen) ... 0x36").
  const auth: Array<[number, CborValue]> = [];
  if (o.ctap20 && o.pin) {
    const t = await token(a, 1, 5);
    auth.push([8, protocols[1].authenticate(t.token!, cdh)], [9, 1]);
  }
  const mc = await a.handle(0x01, m([
    [1, cdh],
    [2, m([['id', 'backupctl']])],
    [3, m([['id', randomBytes(8)]])],
    [4, [m([['alg', -7], ['type', 'public-key']])]],
    [6, m([['hmac-secret', true]])],
    ...auth,
  ]), touch);
  expect(mc.status).toBe(0);
  return { a, cred: parseAuthData(asBytes(mc.body!.get(2), 'authData')).attested!.credentialId };
}

async function session(a: SoftAuthenticator, v: PinProtocolVersion) {
  const ka = await a.handle(0x06, m([[1, v], [2, 2]]), touch);
  return encapsulate(protocols[v], asMap(ka.body!.get(1), 'ka'));
}

async function token(a: SoftAuthenticator, v: PinProtocolVersion, sub: 5 | 9, extra: Array<[number, CborValue]> = []) {
  const { platformKey, shared } = await session(a, v);
  const pinHashEnc = protocols[v].encrypt(shared, createHash('sha256').update(PIN).digest().subarray(0, 16));
  const r = await a.handle(0x06, m([[1, v], [2, sub], [3, platformKey], [6, pinHashEnc], ...extra]), touch);
  return r.status === 0 ? { status: 0, token: protocols[v].decrypt(shared, asBytes(r.body!.get(2), 't')) } : { status: r.status };
}

const ga = (a: SoftAuthenticator, cred: Uint8Array, extra: Array<[number, CborValue]> = []) => {
  const cdh = randomBytes(32);
  return { cdh, run: (more: Array<[number, CborValue]> = []) => a.handle(0x02, m([[1, 'backupctl'], [2, cdh], [3, [m([['id', cred], ['type', 'public-key']])]], ...extra, ...more]), touch) };
};

describe('software authenticator fidelity', () => {
  it('a CTAP 2.1 PIN token serves one getAssertion (reuse -> 0x33); a 2.0 token is reusable', async () => {
    for (const [o, v, sub, reuse] of [[{ pin: '1234' }, 2, 9, 0x33], [{ pin: '1234', ctap20: true }, 1, 5, 0]] as const) {
      const { a, cred } = await setup(o);
      const t = await token(a, v, sub, sub === 9 ? [[9, 2], [10, 'backupctl']] : []);
      expect(t.status).toBe(0);
      for (const expected of [0, reuse]) {
        const g = ga(a, cred);
        const r = await g.run([[6, protocols[v].authenticate(t.token!, g.cdh)], [7, v]]);
        expect(r.status).toBe(expected);
      }
    }
  });

  it('pinUvAuthToken without permissions or rpId -> 0x14', async () => {
    const { a } = await setup({ pin: '1234' });
    expect((await token(a, 2, 9)).status).toBe(0x14);
    expect((await token(a, 2, 9, [[9, 2]])).status).toBe(0x14);
  });

  it('hmac-secret with up:false -> 0x2B; a 48-byte salt -> 0x03; protocol 2 input without key 4 is read as protocol 1 -> 0x03', async () => {
    const { a, cred } = await setup({});
    const hs = async (v: PinProtocolVersion, salt: Uint8Array, withProto: boolean, up: boolean) => {
      const { platformKey, shared } = await session(a, v);
      const enc = protocols[v].encrypt(shared, salt);
      const input = m([[1, platformKey], [2, enc], [3, protocols[v].authenticate(shared, enc)], ...(withProto ? [[4, v] as [number, CborValue]] : [])]);
      return (await ga(a, cred).run([[4, m([['hmac-secret', input]])], [5, m([['up', up]])]])).status;
    };
    expect(await hs(2, randomBytes(32), true, false)).toBe(0x2b);
    expect(await hs(1, randomBytes(48), true, true)).toBe(0x03);
    expect(await hs(2, randomBytes(32), false, true)).toBe(0x03);
    expect(await hs(2, randomBytes(64), true, true)).toBe(0);
    expect(await hs(1, randomBytes(32), false, true)).toBe(0);
  });

  it('3 wrong PINs in a row -> 0x34 until power cycle; retries count down to 0x32', async () => {
    const a = new SoftAuthenticator({ pin: '9999' });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await token(a, 2, 9, [[9, 2], [10, 'backupctl']])).status);
    expect(statuses).toEqual([0x31, 0x31, 0x34, 0x34]);
    expect(a.pinRetries).toBe(5);
    a.powerCycle();
    for (let i = 0; i < 5; i++) statuses.push((await token(a, 2, 5)).status);
    expect(statuses.slice(4)).toEqual([0x31, 0x31, 0x34, 0x34, 0x34]);
  });

  it('a 2.0 key answers authenticatorSelection with INVALID_COMMAND and lists protocol 1 only', async () => {
    const a = new SoftAuthenticator({ ctap20: true });
    expect((await a.handle(0x0b, null, touch)).status).toBe(0x01);
    expect(a.getInfo().get(6)).toEqual([1]);
    expect(a.getInfo().get(1)).toEqual(['U2F_V2', 'FIDO_2_0']);
  });
});
