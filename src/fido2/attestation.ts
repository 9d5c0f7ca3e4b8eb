// Enrolment checks on the makeCredential result. Ours (mandatory): the authData is for our rp
// id, has user presence, attested credential data and `hmac-secret: true`. Advisory: the
// attestation statement (WebAuthn §8.2 packed, §8.6 fido-u2f, §8.7 none): its signature over
// authData||clientDataHash and the certificate fields WebAuthn requires. No trust chain is
// checked: there is no metadata service offline, and the key is the user's own. See
// backupctl-key(1) "ATTESTATION". node:crypto does all of it (this replaced fido2-lib, whose
// dependency tree brought a native optional package that made the lock file unusable by npm ci).
import { X509Certificate, createHash, createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { BackupctlError, Exit } from '../errors.js';
import { asArray, asBytes, asInt, type CborMap } from './cbor.js';
import { FLAG, parseAuthData, type AuthData } from './ctap2.js';

/** The WebAuthn client data we hash for makeCredential, as a browser would. */
export function clientData(rpId: string): { json: string; hash: Uint8Array } {
  const challenge = randomBytes(32).toString('base64url');
  const json = JSON.stringify({ type: 'webauthn.create', challenge, origin: `backupctl:${rpId}`, crossOrigin: false });
  return { json, hash: new Uint8Array(createHash('sha256').update(json).digest()) };
}

export function checkAuthData(ad: AuthData, rpId: string, device: string): asserts ad is AuthData & { attested: NonNullable<AuthData['attested']> } {
  const bad = (why: string) => new BackupctlError(Exit.unavailable, `the security key ${device} returned an unusable credential: ${why}`);
  if (!Buffer.from(ad.rpIdHash).equals(createHash('sha256').update(rpId).digest())) throw bad('it is for another relying party');
  if (!(ad.flags & FLAG.UP)) throw bad('user presence flag missing');
  if (!ad.attested) throw bad('no attested credential data');
  if (ad.extensions?.get('hmac-secret') !== true) {
    throw new BackupctlError(Exit.refused, `the security key ${device} did not enable hmac-secret for the new credential; backupctl needs a key with the hmac-secret extension`);
  }
}

// COSE algorithms (RFC 9053) a security key signs attestations with: the digest node:crypto
// needs (null: the algorithm hashes itself, EdDSA).
const COSE_ALG: Record<number, string | null> = { [-7]: 'sha256', [-257]: 'sha256', [-8]: null };

/** A COSE_Key (RFC 9052 §7) as a node:crypto public key: EC2 P-256, OKP Ed25519, RSA. */
function coseKey(cose: CborMap): KeyObject {
  const b64 = (label: number) => Buffer.from(asBytes(cose.get(label), `COSE key parameter ${label}`)).toString('base64url');
  const kty = asInt(cose.get(1), 'COSE key type');
  if (kty === 2 && cose.get(-1) === 1) return createPublicKey({ key: { kty: 'EC', crv: 'P-256', x: b64(-2), y: b64(-3) }, format: 'jwk' });
  if (kty === 1 && cose.get(-1) === 6) return createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: b64(-2) }, format: 'jwk' });
  if (kty === 3) return createPublicKey({ key: { kty: 'RSA', n: b64(-1), e: b64(-2) }, format: 'jwk' });
  throw new Error(`unsupported credential key type ${kty}`);
}

function checkSignature(alg: number, data: Uint8Array, key: KeyObject, sig: Uint8Array): void {
  const digest = COSE_ALG[alg];
  if (digest === undefined) throw new Error(`unsupported signature algorithm ${alg}`);
  if (!verify(digest, data, key, sig)) throw new Error('the signature does not verify');
}

// id-fido-gen-ce-aaguid (1.3.6.1.4.1.45724.1.1.4) as DER, followed in the extension by
// OCTET STRING { OCTET STRING (16 bytes) }.
const AAGUID_OID = Buffer.from('060b2b0601040182e51c010104', 'hex');

/** WebAuthn §8.2.1: the fields a packed attestation certificate must have. */
function checkPackedCertificate(cert: X509Certificate, aaguid: string): void {
  const subject = new Map(cert.subject.split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  if (subject.get('OU') !== 'Authenticator Attestation') throw new Error('certificate subject OU is not "Authenticator Attestation"');
  for (const f of ['C', 'O', 'CN']) if (!subject.get(f)) throw new Error(`certificate subject has no ${f}`);
  if (cert.ca) throw new Error('the attestation certificate is a CA certificate');
  const at = cert.raw.indexOf(AAGUID_OID);
  if (at >= 0) {
    // Skip the OID and an optional "critical" BOOLEAN, then OCTET STRING (18) { OCTET STRING (16) }.
    let p = at + AAGUID_OID.length;
    if (cert.raw[p] === 0x01) p += 3;
    if (cert.raw[p] !== 0x04 || cert.raw[p + 1] !== 18 || cert.raw[p + 2] !== 0x04 || cert.raw[p + 3] !== 16) throw new Error('malformed AAGUID extension');
    if (cert.raw.subarray(p + 4, p + 20).toString('hex') !== aaguid) throw new Error('the certificate AAGUID is not the authenticator\'s');
  }
}

const leafOf = (attStmt: CborMap) => new X509Certificate(Buffer.from(asBytes(asArray(attStmt.get('x5c'), 'x5c')[0], 'x5c certificate')));

/** Checks one statement format; returns the attestation type, throws why it does not verify. */
function checkStatement(fmt: string, authDataRaw: Uint8Array, attStmt: CborMap, clientDataHash: Uint8Array): string {
  const ad = parseAuthData(authDataRaw);
  if (!ad.attested) throw new Error('no attested credential data');
  const signed = Buffer.concat([authDataRaw, clientDataHash]);
  if (fmt === 'none') {
    if (attStmt.size !== 0) throw new Error('a "none" statement must be empty');
    return 'none';
  }
  if (fmt === 'packed') {
    const alg = asInt(attStmt.get('alg'), 'alg');
    const sig = asBytes(attStmt.get('sig'), 'sig');
    if (attStmt.has('x5c')) {
      const leaf = leafOf(attStmt);
      checkSignature(alg, signed, leaf.publicKey, sig);
      checkPackedCertificate(leaf, ad.attested.aaguid);
      return 'basic';
    }
    if (attStmt.has('ecdaaKeyId')) throw new Error('ECDAA attestation is not supported');
    if (ad.attested.publicKey.get(3) !== alg) throw new Error('the statement algorithm is not the credential key\'s');
    checkSignature(alg, signed, coseKey(ad.attested.publicKey), sig);
    return 'self';
  }
  if (fmt === 'fido-u2f') {
    const cose = ad.attested.publicKey;
    if (cose.get(1) !== 2 || cose.get(-1) !== 1) throw new Error('the credential key is not an EC P-256 key');
    const leaf = leafOf(attStmt);
    const u2fKey = Buffer.concat([Uint8Array.of(0x04), asBytes(cose.get(-2), 'x'), asBytes(cose.get(-3), 'y')]);
    const data = Buffer.concat([Uint8Array.of(0), ad.rpIdHash, clientDataHash, ad.attested.credentialId, u2fKey]);
    checkSignature(-7, data, leaf.publicKey, asBytes(attStmt.get('sig'), 'sig'));
    return 'basic';
  }
  throw new Error('format not checked');
}

/** The verdict on the attestation statement: a string for the user, never fatal. */
export function verifyAttestation(
  att: { fmt: string; authDataRaw: Uint8Array; attStmt: CborMap },
  client: { hash: Uint8Array },
): { ok: boolean; detail: string } {
  try {
    const type = checkStatement(att.fmt, att.authDataRaw, att.attStmt, client.hash);
    return { ok: true, detail: `${att.fmt} attestation verified (${type})` };
  } catch (e) {
    return { ok: false, detail: `${att.fmt} attestation not verified: ${(e as Error).message}` };
  }
}
