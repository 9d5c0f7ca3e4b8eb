// PIN/UV auth protocols 1 and 2 (CTAP 2.1 §6.5.6, §6.5.7): P-256 key agreement with the
// authenticator, the shared secret, encrypt/decrypt and authenticate. Used for PIN tokens and
// for the hmac-secret extension, on both sides (the test authenticator reuses these primitives).
import { createCipheriv, createDecipheriv, createECDH, createHmac, createHash, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { CborError, asBytes, asInt, type CborMap } from './cbor.js';

export type PinProtocolVersion = 1 | 2;

/** COSE_Key of a P-256 ECDH public key as CTAP2 sends it: kty EC2, alg ECDH-ES+HKDF-256 (-25). */
export function coseKey(uncompressed: Uint8Array): CborMap {
  return new Map<number, number | Uint8Array>([
    [1, 2],
    [3, -25],
    [-1, 1],
    [-2, uncompressed.slice(1, 33)],
    [-3, uncompressed.slice(33, 65)],
  ]);
}

/** The 65-byte uncompressed point of a COSE P-256 key (0x04 || x || y). */
export function cosePoint(key: CborMap): Uint8Array {
  if (asInt(key.get(1), 'COSE kty') !== 2 || asInt(key.get(-1), 'COSE crv') !== 1) throw new CborError('key agreement is not a P-256 key');
  const x = asBytes(key.get(-2), 'COSE x');
  const y = asBytes(key.get(-3), 'COSE y');
  if (x.length !== 32 || y.length !== 32) throw new CborError('bad P-256 coordinates');
  return Buffer.concat([Uint8Array.of(4), x, y]);
}

function aesCbc(encrypt: boolean, key: Uint8Array, iv: Uint8Array, data: Uint8Array): Uint8Array {
  if (data.length % 16 !== 0) throw new CborError('AES-CBC data is not a multiple of 16 bytes');
  const c = encrypt ? createCipheriv('aes-256-cbc', key, iv) : createDecipheriv('aes-256-cbc', key, iv);
  c.setAutoPadding(false); // the protocols never pad (§6.5.6: "no padding")
  return new Uint8Array(Buffer.concat([c.update(data), c.final()]));
}

const hmac = (key: Uint8Array, msg: Uint8Array) => new Uint8Array(createHmac('sha256', key).update(msg).digest());

export interface PinProtocol {
  readonly version: PinProtocolVersion;
  /** ECDH result Z (x coordinate) -> shared secret (§6.5.6 / §6.5.7 "kdf"). */
  kdf(z: Uint8Array): Uint8Array;
  encrypt(shared: Uint8Array, plain: Uint8Array): Uint8Array;
  decrypt(shared: Uint8Array, cipher: Uint8Array): Uint8Array;
  /** `key` is a shared secret or a PIN token. */
  authenticate(key: Uint8Array, msg: Uint8Array): Uint8Array;
}

const ZERO_IV = new Uint8Array(16);

/** Protocol 1 (§6.5.6): SHA-256(Z), AES-256-CBC with a zero IV, HMAC truncated to 16 bytes. */
export const protocol1: PinProtocol = {
  version: 1,
  kdf: (z) => new Uint8Array(createHash('sha256').update(z).digest()),
  encrypt: (shared, plain) => aesCbc(true, shared, ZERO_IV, plain),
  decrypt: (shared, cipher) => aesCbc(false, shared, ZERO_IV, cipher),
  authenticate: (key, msg) => hmac(key, msg).subarray(0, 16),
};

/** Protocol 2 (§6.5.7): HKDF split into an HMAC key and an AES key, random IV, full HMAC. */
export const protocol2: PinProtocol = {
  version: 2,
  kdf(z) {
    const salt = new Uint8Array(32);
    const hmacKey = new Uint8Array(hkdfSync('sha256', z, salt, 'CTAP2 HMAC key', 32));
    const aesKey = new Uint8Array(hkdfSync('sha256', z, salt, 'CTAP2 AES key', 32));
    return Buffer.concat([hmacKey, aesKey]);
  },
  encrypt(shared, plain) {
    const iv = randomBytes(16);
    return Buffer.concat([iv, aesCbc(true, shared.subarray(32), iv, plain)]);
  },
  decrypt(shared, cipher) {
    if (cipher.length < 16) throw new CborError('ciphertext shorter than its IV');
    return aesCbc(false, shared.subarray(32), cipher.subarray(0, 16), cipher.subarray(16));
  },
  // A 64-byte shared secret authenticates with its HMAC half; a 32-byte token is used whole.
  authenticate: (key, msg) => hmac(key.length === 64 ? key.subarray(0, 32) : key, msg),
};

export const protocols: Record<PinProtocolVersion, PinProtocol> = { 1: protocol1, 2: protocol2 };

/** One ECDH with the peer's COSE key: our COSE public key and the shared secret. */
export function encapsulate(proto: PinProtocol, peer: CborMap): { platformKey: CborMap; shared: Uint8Array } {
  const ecdh = createECDH('prime256v1');
  ecdh.generateKeys();
  let z: Uint8Array;
  try {
    z = new Uint8Array(ecdh.computeSecret(cosePoint(peer)));
  } catch (e) {
    throw e instanceof CborError ? e : new CborError('key agreement point is not on P-256');
  }
  const shared = proto.kdf(z);
  z.fill(0);
  return { platformKey: coseKey(new Uint8Array(ecdh.getPublicKey())), shared };
}

/** Constant-time equality for MACs and PIN hashes. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
