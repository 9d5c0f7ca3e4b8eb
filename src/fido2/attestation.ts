// Enrolment checks on the makeCredential result. Ours (mandatory): the authData is for our rp
// id, has user presence, attested credential data and `hmac-secret: true`. fido2-lib's
// (advisory): the WebAuthn attestation procedure — attestation statement format, its signature
// over authData||clientDataHash, certificate fields. No trust chain is checked: there is no
// metadata service offline, and the key is the user's own. See backupctl-key(1) "ATTESTATION".
import { createHash, randomBytes } from 'node:crypto';
import { BackupctlError, Exit } from '../errors.js';
import { encode, type CborMap } from './cbor.js';
import { FLAG, type AuthData } from './ctap2.js';


/** The WebAuthn client data we hash for makeCredential, so fido2-lib can check the result. */
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

/**
 * fido2-lib's verdict on the attestation statement; a string for the user, never fatal.
 * Its full WebAuthn procedure also insists the rp id be a registrable web domain, which
 * "backupctl" is not, so we run its attestation-object parser and its per-format statement
 * check directly; the rp id hash, flags and extensions are checked by checkAuthData above.
 */
export async function verifyAttestation(
  att: { fmt: string; authDataRaw: Uint8Array; attStmt: CborMap },
  client: { json: string },
): Promise<{ ok: boolean; detail: string }> {
  try {
    const lib = (await import('fido2-lib')) as unknown as Fido2LibInternals;
    const formats: Record<string, AttestationFormat | undefined> = {
      packed: lib.packedAttestation,
      'fido-u2f': lib.fidoU2fAttestation,
      none: lib.noneAttestation,
    };
    const format = formats[att.fmt];
    if (!format) return { ok: false, detail: `attestation format "${att.fmt}" not checked` };
    const attestationObject = encode(new Map<string, CborMap | string | Uint8Array>([['fmt', att.fmt], ['attStmt', att.attStmt], ['authData', att.authDataRaw]]));
    const authnrData = await lib.parseAttestationObject(toArrayBuffer(attestationObject));
    const audit = { journal: new Set<string>(), info: new Map<string, unknown>(), warning: new Map<string, unknown>() };
    const clientDataMap = new Map<string, unknown>([['rawClientDataJson', toArrayBuffer(new TextEncoder().encode(client.json))]]);
    await format.validateFn.call({ authnrData, clientData: clientDataMap, audit });
    const type = audit.info.get('attestation-type');
    return { ok: true, detail: `${att.fmt} attestation verified${type ? ` (${String(type)})` : ''}` };
  } catch (e) {
    return { ok: false, detail: `${att.fmt} attestation not verified: ${(e as Error).message}` };
  }
}

// Exported by fido2-lib's module but missing from its type declarations.
interface AttestationFormat {
  validateFn(this: unknown): Promise<boolean> | boolean;
}
interface Fido2LibInternals {
  packedAttestation: AttestationFormat;
  fidoU2fAttestation: AttestationFormat;
  noneAttestation: AttestationFormat;
  parseAttestationObject(obj: ArrayBuffer): Promise<Map<string, unknown>>;
}

function toArrayBuffer(b: Uint8Array): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}
