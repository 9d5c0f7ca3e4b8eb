// The advisory attestation check (src/fido2/attestation.ts) on statements built here the way
// security keys build them: packed self (what most keys send for a new credential), packed with an
// attestation certificate (fixtures/attestation, made by openssl from cert.cnf), fido-u2f, none;
// and each way one of them can be wrong.
import { describe, expect, it } from 'vitest';
import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { clientData, verifyAttestation } from '../../src/fido2/attestation.js';
import { encode, type CborMap, type CborValue } from '../../src/fido2/cbor.js';

const FIXTURES = new URL('../../fixtures/attestation/', import.meta.url);
const certKey = createPrivateKey(readFileSync(new URL('key.pem', FIXTURES)));
const certDer = new Uint8Array(Buffer.from(readFileSync(new URL('cert.pem', FIXTURES), 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64'));
const CERT_AAGUID = Buffer.from('0bacc0c7100040008000000000000001', 'hex');

function credential(aaguid: Uint8Array = randomBytes(16)) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const x = new Uint8Array(Buffer.from(jwk.x!, 'base64url'));
  const y = new Uint8Array(Buffer.from(jwk.y!, 'base64url'));
  const cose: CborMap = new Map<number, CborValue>([[1, 2], [3, -7], [-1, 1], [-2, x], [-3, y]]);
  const id = randomBytes(48);
  const rpIdHash = createHash('sha256').update('backupctl').digest();
  const authDataRaw = new Uint8Array(Buffer.concat([
    rpIdHash, Uint8Array.of(0x41), Buffer.alloc(4), aaguid, Uint8Array.of(0, id.length), id, encode(cose),
  ]));
  return { privateKey, authDataRaw, rpIdHash, id, x, y };
}

const client = clientData('backupctl');
const signedBy = (key: KeyObject, data: Uint8Array) => new Uint8Array(sign('sha256', Buffer.concat([data, client.hash]), key));
const stmt = (entries: Array<[string, CborValue]>): CborMap => new Map(entries);

describe('attestation statements', () => {
  it('packed self attestation: verified, and a changed byte in authData or signature is caught', () => {
    const c = credential();
    const sig = signedBy(c.privateKey, c.authDataRaw);
    expect(verifyAttestation({ fmt: 'packed', authDataRaw: c.authDataRaw, attStmt: stmt([['alg', -7], ['sig', sig]]) }, client))
      .toEqual({ ok: true, detail: 'packed attestation verified (self)' });
    const tampered = Uint8Array.from(c.authDataRaw);
    tampered[33] ^= 1; // the signature counter
    expect(verifyAttestation({ fmt: 'packed', authDataRaw: tampered, attStmt: stmt([['alg', -7], ['sig', sig]]) }, client))
      .toEqual({ ok: false, detail: 'packed attestation not verified: the signature does not verify' });
    expect(verifyAttestation({ fmt: 'packed', authDataRaw: c.authDataRaw, attStmt: stmt([['alg', -257], ['sig', sig]]) }, client).detail)
      .toBe("packed attestation not verified: the statement algorithm is not the credential key's");
    expect(verifyAttestation({ fmt: 'packed', authDataRaw: c.authDataRaw, attStmt: stmt([['alg', -7], ['sig', sig]]) }, clientData('backupctl')).ok).toBe(false);
  });

  it('packed with an attestation certificate: signature and certificate fields, the AAGUID must match', () => {
    const c = credential(CERT_AAGUID);
    const attStmt = stmt([['alg', -7], ['sig', signedBy(certKey, c.authDataRaw)], ['x5c', [certDer]]]);
    expect(verifyAttestation({ fmt: 'packed', authDataRaw: c.authDataRaw, attStmt }, client))
      .toEqual({ ok: true, detail: 'packed attestation verified (basic)' });
    const other = credential(randomBytes(16));
    const otherStmt = stmt([['alg', -7], ['sig', signedBy(certKey, other.authDataRaw)], ['x5c', [certDer]]]);
    expect(verifyAttestation({ fmt: 'packed', authDataRaw: other.authDataRaw, attStmt: otherStmt }, client).detail)
      .toBe("packed attestation not verified: the certificate AAGUID is not the authenticator's");
    const selfSigned = stmt([['alg', -7], ['sig', signedBy(c.privateKey, c.authDataRaw)], ['x5c', [certDer]]]);
    expect(verifyAttestation({ fmt: 'packed', authDataRaw: c.authDataRaw, attStmt: selfSigned }, client).detail)
      .toBe('packed attestation not verified: the signature does not verify');
  });

  it('fido-u2f: the U2F registration signature, over the credential key as an uncompressed point', () => {
    const c = credential(Buffer.alloc(16));
    const data = Buffer.concat([Uint8Array.of(0), c.rpIdHash, client.hash, c.id, Uint8Array.of(4), c.x, c.y]);
    const good = new Uint8Array(sign('sha256', data, certKey));
    expect(verifyAttestation({ fmt: 'fido-u2f', authDataRaw: c.authDataRaw, attStmt: stmt([['sig', good], ['x5c', [certDer]]]) }, client))
      .toEqual({ ok: true, detail: 'fido-u2f attestation verified (basic)' });
    const bad = new Uint8Array(sign('sha256', Buffer.concat([data, Uint8Array.of(0)]), certKey));
    expect(verifyAttestation({ fmt: 'fido-u2f', authDataRaw: c.authDataRaw, attStmt: stmt([['sig', bad], ['x5c', [certDer]]]) }, client).ok).toBe(false);
  });

  it('none must be empty; an unknown format is reported as not checked', () => {
    const c = credential();
    expect(verifyAttestation({ fmt: 'none', authDataRaw: c.authDataRaw, attStmt: new Map() }, client)).toEqual({ ok: true, detail: 'none attestation verified (none)' });
    expect(verifyAttestation({ fmt: 'none', authDataRaw: c.authDataRaw, attStmt: stmt([['sig', new Uint8Array(8)]]) }, client).ok).toBe(false);
    expect(verifyAttestation({ fmt: 'tpm', authDataRaw: c.authDataRaw, attStmt: new Map() }, client))
      .toEqual({ ok: false, detail: 'tpm attestation not verified: format not checked' });
  });
});
