// CTAPHID framing and CBOR parsing against conversations recorded from real authenticator
// firmwares (../shared/interop/ctaphid-traces): our packetizer must reproduce every report
// byte for byte, our encoder every request, and our strict decoder must accept every reply.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createHash } from 'node:crypto';
import { Assembler, CMD, packetize, type Message } from '../../src/fido2/ctaphid.js';
import { asArray, asBytes, asMap, asText, decode, encode, CborError, type CborMap } from '../../src/fido2/cbor.js';
import { FLAG, parseAuthData, parseGetInfo } from '../../src/fido2/ctap2.js';

const TRACES = fileURLToPath(new URL('../../../shared/interop/ctaphid-traces/', import.meta.url));

interface Recorded {
  dir: 'out' | 'in';
  msg: Message;
  reports: Uint8Array[];
}

function load(name: string): Recorded[] {
  const path = TRACES + name;
  if (!existsSync(path)) throw new Error(`recorded trace ${path} is missing: these tests need /work/shared (../shared beside the repo)`);
  const raw = JSON.parse(readFileSync(path, 'utf8')) as Array<['out' | 'in', string]>;
  const asm = { out: new Assembler(), in: new Assembler() };
  const pending: Record<'out' | 'in', Uint8Array[]> = { out: [], in: [] };
  const out: Recorded[] = [];
  for (const [dir, hex] of raw) {
    const report = new Uint8Array(Buffer.from(hex, 'hex'));
    expect(report.length).toBe(64);
    pending[dir].push(report);
    const msg = asm[dir].push(report);
    if (msg) {
      out.push({ dir, msg, reports: pending[dir] });
      pending[dir] = [];
    }
  }
  expect(pending.out.length + pending.in.length).toBe(0);
  return out;
}

const cborOf = (r: Recorded) => (r.msg.data.length > 1 ? asMap(decode(r.msg.data.subarray(1)), 'body') : null);
const sha256 = (s: string) => createHash('sha256').update(s).digest();

describe.each([
  ['trace_solo1_nopin.json', 82, [1]],
  ['trace_solo1_pin.json', 171, [1]],
  ['trace_canokey_p2_pin.json', 199, [1, 2]],
])('%s', (name, reports, protocols) => {
  const conv = load(name);

  it('reassembles every report and re-packetizes each message byte for byte', () => {
    expect(conv.reduce((n, r) => n + r.reports.length, 0)).toBe(reports);
    expect(conv.some((r) => r.reports.length > 10)).toBe(true); // real multi-packet messages
    for (const r of conv) {
      const again = packetize(r.msg.cid, r.msg.cmd, r.msg.data);
      expect(again.map((p) => Buffer.from(p).toString('hex'))).toEqual(r.reports.map((p) => Buffer.from(p).toString('hex')));
    }
  });

  it('encodes every recorded CBOR request identically (canonical CTAP2 encoding)', () => {
    const requests = conv.filter((r) => r.dir === 'out' && r.msg.cmd === CMD.CBOR && r.msg.data.length > 1);
    expect(requests.length).toBeGreaterThan(5);
    for (const r of requests) {
      const body = r.msg.data.subarray(1);
      expect(Buffer.from(encode(decode(body))).equals(Buffer.from(body))).toBe(true);
    }
  });

  it('parses getInfo, the makeCredential authData and the hmac-secret outputs', () => {
    const replies = conv.filter((r) => r.dir === 'in' && r.msg.cmd === CMD.CBOR);
    const info = parseGetInfo(cborOf(replies[0]!)!);
    expect(info.versions).toContain('FIDO_2_0');
    expect(info.extensions).toContain('hmac-secret');
    expect(info.aaguid).toMatch(/^[0-9a-f]{32}$/);
    expect(info.pinUvAuthProtocols).toEqual(protocols);
    expect(info.options.pinUvAuthToken ?? false).toBe(protocols.includes(2));

    const mcIndex = conv.findIndex((r) => r.dir === 'out' && r.msg.cmd === CMD.CBOR && r.msg.data[0] === 0x01);
    const mcReply = conv.slice(mcIndex).find((r) => r.dir === 'in' && r.msg.cmd === CMD.CBOR)!;
    const att = cborOf(mcReply)!;
    expect(asText(att.get(1), 'fmt')).toBe('packed');
    const ad = parseAuthData(asBytes(att.get(2), 'authData'));
    expect(Buffer.from(ad.rpIdHash).equals(sha256('backupctl'))).toBe(true);
    expect(ad.flags & (FLAG.UP | FLAG.AT | FLAG.ED)).toBe(FLAG.UP | FLAG.AT | FLAG.ED);
    expect(ad.attested!.aaguid).toBe(info.aaguid);
    expect(ad.attested!.credentialId.length).toBe(70);
    expect(ad.attested!.publicKey.get(3)).toBe(-7);
    expect(ad.extensions!.get('hmac-secret')).toBe(true);

    // Every successful getAssertion carries an encrypted hmac-secret output of 32 or 64 bytes
    // (plus a 16-byte IV under protocol 2), matching the number of salts sent.
    let outputs = 0;
    conv.forEach((r, i) => {
      if (r.dir !== 'out' || r.msg.cmd !== CMD.CBOR || r.msg.data[0] !== 0x02) return;
      const req = cborOf(r)!;
      const ext = req.get(4) as CborMap | undefined;
      const reply = conv.slice(i + 1).find((x) => x.dir === 'in' && x.msg.cmd === CMD.CBOR)!;
      if (reply.msg.data[0] !== 0 || !ext) return;
      const hs = asMap(ext.get('hmac-secret'), 'hmac-secret input');
      const proto = hs.get(4) as number;
      const saltEnc = asBytes(hs.get(2), 'saltEnc');
      const a = parseAuthData(asBytes(cborOf(reply)!.get(2), 'authData'));
      const outLen = asBytes(a.extensions!.get('hmac-secret'), 'output').length;
      expect(outLen).toBe(saltEnc.length);
      expect([32, 64].map((n) => n + (proto === 2 ? 16 : 0))).toContain(outLen);
      const cred = asMap(cborOf(reply)!.get(1), 'credential');
      const allowed = asArray(req.get(3), 'allowList').map((c) => Buffer.from(asBytes(asMap(c, 'cred').get('id'), 'id')).toString('hex'));
      expect(allowed).toContain(Buffer.from(asBytes(cred.get('id'), 'id')).toString('hex'));
      outputs++;
    });
    expect(outputs).toBeGreaterThanOrEqual(3);
  });

  it('holds real error statuses, and NO_CREDENTIALS for an unknown credential and a wrong rpId', () => {
    const statuses = conv.filter((r) => r.dir === 'in' && r.msg.cmd === CMD.CBOR).map((r) => r.msg.data[0]);
    expect(statuses.filter((s) => s === 0x2e).length).toBe(2);
    const otherRp = conv.findIndex((r) => r.dir === 'out' && r.msg.cmd === CMD.CBOR && r.msg.data[0] === 0x02 && cborOf(r)!.get(1) === 'other-rp');
    expect(conv.slice(otherRp + 1).find((r) => r.dir === 'in')!.msg.data[0]).toBe(0x2e);
    if (name.includes('_pin')) for (const s of [0x31, 0x33]) expect(statuses).toContain(s);
  });
});

describe('keepalives in the CTAP 2.0 trace', () => {
  it('has 8 keepalives, user presence (2) before processing (1)', () => {
    const ka = load('trace_solo1_nopin.json').filter((r) => r.msg.cmd === CMD.KEEPALIVE);
    expect(ka.length).toBe(8);
    expect(ka.map((r) => r.msg.data[0])).toEqual([2, 1, 2, 1, 2, 1, 2, 1]);
  });
  it('records PIN required (0x36) for makeCredential without a PIN on a PIN-protected 2.0 key', () => {
    const conv = load('trace_solo1_pin.json');
    expect(conv.some((r) => r.dir === 'in' && r.msg.cmd === CMD.CBOR && r.msg.data[0] === 0x36)).toBe(true);
  });
});

describe('strict CBOR', () => {
  const bad: Array<[string, string]> = [
    ['indefinite-length map', 'bf01ff'],
    ['non-shortest integer', '1817'],
    ['duplicate map key', 'a201000100'],
    ['trailing bytes', '0000'],
    ['truncated byte string', '4301'],
    ['float', 'f93c00'],
    ['tag', 'c100'],
    ['invalid UTF-8', '61ff'],
  ];
  it.each(bad)('rejects %s', (_, hex) => {
    expect(() => decode(new Uint8Array(Buffer.from(hex, 'hex')))).toThrow(CborError);
  });
  it('sorts map keys canonically (integers before text, shorter first)', () => {
    const m = new Map<number | string, number>([['up', 1], [-1, 2], [10, 3], [1, 4], ['a', 5]]);
    expect(Buffer.from(encode(m)).toString('hex')).toBe('a501040a03200261610562757001');
  });
});

describe('framing errors', () => {
  it('rejects an out-of-sequence continuation', () => {
    const [first, , third] = packetize(1, CMD.CBOR, new Uint8Array(200));
    const asm = new Assembler();
    expect(asm.push(first!)).toBeNull();
    expect(() => asm.push(third!)).toThrow(/sequence 1 where 0/);
  });
  it('refuses messages longer than 7609 bytes', () => {
    expect(packetize(1, CMD.CBOR, new Uint8Array(7609)).length).toBe(129);
    expect(() => packetize(1, CMD.CBOR, new Uint8Array(7610))).toThrow(/exceeds 7609/);
  });
});
