// The one wrap shared by every slot type: X25519 to the recipient's public key with an
// ephemeral key per slot, HKDF-SHA-256 over the shared secret and both public keys, and a
// ChaCha20-Poly1305 seal of the file key (modelled on age's X25519 stanza, age spec §X25519).
// backupctl-format(5) "KEY SLOTS" documents these exact bytes.
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes, concatBytes } from '@noble/hashes/utils.js';
import type { Slot } from './types.js';
import { b64decode, b64encode } from '../util/base64.js';
import { hkdfSha256 } from '../util/hkdf.js';

const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const ZERO_NONCE = new Uint8Array(12);
const TAG_LEN = 16;
export const FILE_KEY_LEN = 32;

export interface X25519KeyPair {
  secretKey: Uint8Array;
  publicKey: Uint8Array;
}

/**
 * An identity's secret as node:crypto's key object, made once: a restore unwraps a slot of every
 * index file, snapshot and pack with the same one, and parsing it again cost 0.15 ms each time.
 * Like any key object it cannot be zeroed; it lives as long as the secret's buffer.
 */
const privateKeys = new WeakMap<Uint8Array, KeyObject>();
function privateKeyObject(secretKey: Uint8Array): KeyObject {
  let k = privateKeys.get(secretKey);
  if (!k) privateKeys.set(secretKey, (k = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, secretKey]), format: 'der', type: 'pkcs8' })));
  return k;
}

function publicKeyObject(publicKey: Uint8Array) {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, publicKey]), format: 'der', type: 'spki' });
}

/** The public key of a 32-byte X25519 secret (clamping is applied by X25519 itself). */
export function publicKeyOf(secretKey: Uint8Array): Uint8Array {
  const der = createPublicKey(privateKeyObject(secretKey)).export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(der.length - 32));
}

/**
 * X25519(secret, public), or null for the all-zero output of a low-order or non-canonical point
 * (0, 1, the order-8 points, p-1, p, p+1, ...; RFC 7748 §6.1). OpenSSL refuses that output by
 * throwing; anyone can write such a share into a header, so it must mean "not for this key".
 */
function sharedSecret(secretKey: Uint8Array, publicKey: Uint8Array): Uint8Array | null {
  let s: Uint8Array;
  try {
    s = new Uint8Array(diffieHellman({ privateKey: privateKeyObject(secretKey), publicKey: publicKeyObject(publicKey) }));
  } catch {
    return null; // both keys are 32 bytes here, so the refused output is the only failure
  }
  let acc = 0;
  for (const b of s) acc |= b;
  return acc === 0 ? null : s;
}

/** Whether a recipient public key can be encrypted to: 32 bytes and not a low-order point. */
export function isUsablePublicKey(publicKey: Uint8Array): boolean {
  if (publicKey.length !== 32) return false;
  const probe = randomBytes(32);
  const shared = sharedSecret(probe, publicKey);
  probe.fill(0);
  shared?.fill(0);
  return shared !== null;
}

/** 4-byte tag of a recipient public key: lets slots be matched to config entries without a key. */
export function recipientTag(type: string, publicKey: Uint8Array): Uint8Array {
  return sha256(concatBytes(utf8ToBytes(`backupctl/v1 tag ${type}\n`), publicKey)).subarray(0, 4);
}

/**
 * A recipient's fingerprint, the one identifier every command shows (create, inspect, verify,
 * key list, recovery-code, rotate, doctor): its 4-byte tag as 8 lowercase hex digits, "d6e76c8f".
 * A slot holds the tag and not the public key, so this is what an archive can be matched on
 * without a key. It names a recipient among a few; it does not authenticate one.
 */
export function fingerprint(type: string, publicKey: Uint8Array): string {
  return Buffer.from(recipientTag(type, publicKey)).toString('hex');
}

/** The fingerprint of the recipient a slot was made for (parseHeader checked its tag is 4 bytes). */
export const slotFingerprint = (slot: Slot): string => Buffer.from(b64decode(slot.tag)).toString('hex');

function wrapKey(type: string, shared: Uint8Array, share: Uint8Array, recipient: Uint8Array): Uint8Array {
  return hkdfSha256(shared, concatBytes(share, recipient), utf8ToBytes(`backupctl/v1 X25519 ${type}`), 32);
}

/** Seal `fileKey` to `recipientPublic`. `params` are the slot's type-specific public fields. */
export function wrapX25519(
  type: string,
  label: string,
  recipientPublic: Uint8Array,
  fileKey: Uint8Array,
  params?: Record<string, unknown>,
  ephemeralSecret: Uint8Array = randomBytes(32), // fixed only by test-vector generators
): Slot {
  if (fileKey.length !== FILE_KEY_LEN) throw new Error('file key must be 32 bytes');
  const share = publicKeyOf(ephemeralSecret);
  const shared = sharedSecret(ephemeralSecret, recipientPublic);
  if (!shared) throw new Error('recipient public key is a low-order point');
  const key = wrapKey(type, shared, share, recipientPublic);
  const c = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_LEN });
  const body = Buffer.concat([c.update(fileKey), c.final(), c.getAuthTag()]);
  key.fill(0);
  shared.fill(0);
  ephemeralSecret.fill(0);
  const slot: Slot = { type, label, tag: b64encode(recipientTag(type, recipientPublic)), share: b64encode(share), body: b64encode(body) };
  if (params) slot.params = params;
  return slot;
}

/**
 * Try to open one slot with an X25519 identity. Returns the file key or null when the slot is
 * not for this key (tag or AEAD mismatch). Malformed slots are treated as "not for this key".
 */
export function unwrapX25519(type: string, keyPair: X25519KeyPair, slot: Slot): Uint8Array | null {
  if (slot.type !== type) return null;
  let share: Uint8Array, body: Uint8Array, tag: Uint8Array;
  try {
    share = b64decode(slot.share);
    body = b64decode(slot.body);
    tag = b64decode(slot.tag);
  } catch {
    return null;
  }
  if (share.length !== 32 || body.length !== FILE_KEY_LEN + TAG_LEN || tag.length !== 4) return null;
  if (Buffer.compare(Buffer.from(tag), Buffer.from(recipientTag(type, keyPair.publicKey))) !== 0) return null;
  const shared = sharedSecret(keyPair.secretKey, share);
  if (!shared) return null;
  const key = wrapKey(type, shared, share, keyPair.publicKey);
  shared.fill(0);
  try {
    const d = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG_LEN });
    d.setAuthTag(body.subarray(FILE_KEY_LEN));
    // Copied into an array of its own, which the caller zeroes; the cipher's outputs are zeroed here.
    const parts = [d.update(body.subarray(0, FILE_KEY_LEN)), d.final()];
    const fileKey = new Uint8Array(FILE_KEY_LEN);
    fileKey.set(parts[0]!);
    fileKey.set(parts[1]!, parts[0]!.length);
    for (const p of parts) p.fill(0);
    return fileKey;
  } catch {
    return null;
  } finally {
    key.fill(0);
  }
}

/** A fresh random key pair (tests and ephemeral uses; real identities derive theirs). */
export function generateX25519(): X25519KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const sk = privateKey.export({ format: 'der', type: 'pkcs8' });
  const pk = publicKey.export({ format: 'der', type: 'spki' });
  return { secretKey: new Uint8Array(sk.subarray(sk.length - 32)), publicKey: new Uint8Array(pk.subarray(pk.length - 32)) };
}
