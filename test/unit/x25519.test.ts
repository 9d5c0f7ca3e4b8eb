// The X25519 slot primitive against shares nobody honest writes: the low-order and non-canonical
// points (RFC 7748 §6.1; the list libsodium refuses). Anyone can edit one into a header, so each
// must mean "this slot does not open with this key" (null), never an exception.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { generateX25519, isUsablePublicKey, recipientTag, unwrapX25519, wrapX25519 } from '../../src/keys/x25519.js';
import { b64encode } from '../../src/util/base64.js';

const P = (1n << 255n) - 19n;
const le = (n: bigint) => Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));
const fromHex = (h: string) => new Uint8Array(Buffer.from(h, 'hex'));

/** 0, 1, the two points of order 8, p-1, p, p+1 (all canonical-length little-endian u-coordinates). */
const LOW_ORDER: Record<string, Uint8Array> = {
  'zero': le(0n),
  'one': le(1n),
  'order 8 (e0eb…)': fromHex('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800'),
  'order 8 (5f9c…)': fromHex('5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157'),
  'p-1': le(P - 1n),
  'p': le(P),
  'p+1': le(P + 1n),
};
/** The same seven with the top bit set, which X25519 ignores (non-canonical encodings). */
const HIGH_BIT = Object.fromEntries(Object.entries(LOW_ORDER).map(([k, v]) => {
  const w = Uint8Array.from(v);
  w[31]! |= 0x80;
  return [`${k}, top bit set`, w];
}));
const ALL = { ...LOW_ORDER, ...HIGH_BIT };

describe('X25519 slots with a low-order or non-canonical share', () => {
  const me = generateX25519();
  const fileKey = new Uint8Array(randomBytes(32));
  const good = wrapX25519('recovery', 'mine', me.publicKey, fileKey);

  it('a good slot opens (the control)', () => {
    expect(Buffer.from(unwrapX25519('recovery', me, good)!).equals(Buffer.from(fileKey))).toBe(true);
    expect(good.tag).toBe(b64encode(recipientTag('recovery', me.publicKey)));
  });

  it.each(Object.entries(ALL))('share %s: the slot is not for this key (null, no exception)', (_name, share) => {
    expect(unwrapX25519('recovery', me, { ...good, share: b64encode(share) })).toBeNull();
  });

  it.each(Object.entries(ALL))('recipient key %s: refused as unusable, and wrapping to it throws', (_name, pub) => {
    expect(isUsablePublicKey(pub)).toBe(false);
    expect(() => wrapX25519('recovery', 'x', pub, fileKey)).toThrow(/low-order point/);
  });

  it('ordinary keys are usable; a key of the wrong length is not', () => {
    for (let i = 0; i < 20; i++) expect(isUsablePublicKey(generateX25519().publicKey)).toBe(true);
    expect(isUsablePublicKey(me.publicKey.subarray(0, 31))).toBe(false);
  });
});
