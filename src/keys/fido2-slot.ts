// The "fido2" slot type: a FIDO2 security key's hmac-secret output, bound to the enrolment,
// becomes an X25519 identity (like age-plugin-fido2-hmac). Enrolment stores only the public
// half; `create` wraps to it without the key. Unlock finds the key that holds one of the
// archive's credentials without a touch, then asks for one touch (and the PIN if enrolled so).
import { sha256 } from '@noble/hashes/sha2.js';
import { concatBytes, utf8ToBytes } from '@noble/hashes/utils.js';
import { BackupctlError, Exit, corruptError } from '../errors.js';
import { b64decode, b64encode } from '../util/base64.js';
import type { Identity, Slot } from './types.js';
import { publicKeyOf, recipientTag, unwrapX25519, type X25519KeyPair } from './x25519.js';
import type { PinReader } from '../fido2/device.js';
import { hkdfSha256 } from '../util/hkdf.js';

export const FIDO2_SLOT_TYPE = 'fido2';
/** The relying-party id of every backupctl credential. Fixed here, never read from an archive. */
export const RP_ID = 'backupctl';
const DERIVE_INFO = 'backupctl fido2 X25519';
const BINDING_TAG = 'backupctl/v1 fido2 binding';

/** The public parameters of a fido2 recipient (config entry) and of its slots, decoded. */
export interface Fido2Params {
  rp: string;
  credential: Uint8Array;
  salt: Uint8Array;
  uv: boolean;
  aaguid: string;
}

export function encodeParams(p: Fido2Params): Record<string, unknown> {
  return { rp: p.rp, credential: b64encode(p.credential), salt: b64encode(p.salt), uv: p.uv, aaguid: p.aaguid };
}

/** Slot params as ours, or null: malformed, or another rp id (a slot made for someone else). */
export function decodeParams(params: Record<string, unknown> | undefined): Fido2Params | null {
  if (!params || params.rp !== RP_ID || typeof params.uv !== 'boolean') return null;
  try {
    const credential = b64decode(params.credential as string);
    const salt = b64decode(params.salt as string);
    if (credential.length === 0 || credential.length > 1024 || salt.length !== 32) return null;
    const aaguid = typeof params.aaguid === 'string' && /^[0-9a-f]{32}$/.test(params.aaguid) ? params.aaguid : '0'.repeat(32);
    return { rp: RP_ID, credential, salt, uv: params.uv, aaguid };
  } catch {
    return null;
  }
}

/**
 * HKDF salt binding the output to this enrolment: SHA-256 over
 *   "backupctl/v1 fido2 binding" 0x00 | u16be(len cred) cred | u8(len salt) salt | u8(len rp) rp | u8(uv)
 * Every field is length-prefixed, so no two enrolments share an encoding.
 */
function binding(p: Pick<Fido2Params, 'credential' | 'salt' | 'rp' | 'uv'>): Uint8Array {
  const rp = utf8ToBytes(p.rp);
  if (p.credential.length > 0xffff || p.salt.length > 0xff || rp.length > 0xff) throw new Error('fido2 parameter too long');
  return sha256(
    concatBytes(
      utf8ToBytes(BINDING_TAG),
      Uint8Array.of(0, p.credential.length >> 8, p.credential.length & 0xff),
      p.credential,
      Uint8Array.of(p.salt.length),
      p.salt,
      Uint8Array.of(rp.length),
      rp,
      Uint8Array.of(p.uv ? 1 : 0),
    ),
  );
}

/** X25519 secret = HKDF-SHA-256(ikm = hmac-secret output, salt = binding, info), and its public key. */
export function deriveKeyPair(output: Uint8Array, p: Pick<Fido2Params, 'credential' | 'salt' | 'rp' | 'uv'>): X25519KeyPair {
  if (output.length !== 32) throw new Error('hmac-secret output must be 32 bytes');
  const secretKey = hkdfSha256(output, binding(p), utf8ToBytes(DERIVE_INFO), 32);
  return { secretKey, publicKey: publicKeyOf(secretKey) };
}

export function uvMismatch(enrolledWithUv: boolean, device: string): BackupctlError {
  return new BackupctlError(
    Exit.refused,
    enrolledWithUv
      ? `UV mismatch: this key slot was enrolled with PIN/user verification, but the security key ${device} did not verify the user, so its output would differ; check that the key still has its PIN set, or unlock with your recovery code`
      : `UV mismatch: this key slot was enrolled without PIN/user verification, but the security key ${device} verified the user anyway (always-UV or built-in verification turned on since?), so its output differs; turn that off, or unlock with your recovery code`,
  );
}

export interface Fido2IdentityOptions {
  /** --device / BACKUPCTL_FIDO2_DEVICE; automatic discovery when absent. */
  device?: string;
  /** Called only when a slot was enrolled with PIN/UV. */
  readPin: PinReader;
  /** Progress for the user ("touch your security key"); the CLI prints it on stderr. */
  notify: (msg: string) => void;
  signal: AbortSignal;
}

interface OurSlot {
  slot: Slot;
  p: Fido2Params;
}

type Device = import('../fido2/device.js').Fido2Device;

export function fido2Identity(opts: Fido2IdentityOptions): Identity {
  return {
    description: 'security key',
    async unwrap(slots: readonly Slot[]): Promise<Uint8Array | null> {
      const ours = slots.flatMap((slot) => {
        const p = slot.type === FIDO2_SLOT_TYPE ? decodeParams(slot.params) : null;
        return p ? [{ slot, p }] : [];
      });
      if (ours.length === 0) return null;
      const { openDevices, talking } = await import('../fido2/device.js');
      return talking(async () => {
        const devices = await openDevices(opts.device, opts.signal);
        try {
          return await unlockWith(devices, ours, opts);
        } finally {
          await Promise.all(devices.map((d) => d.close()));
        }
      });
    },
  };
}

async function unlockWith(devices: Device[], ours: OurSlot[], opts: Fido2IdentityOptions): Promise<Uint8Array | null> {
  const { uvFlag } = await import('../fido2/device.js');
  const io = { signal: opts.signal, notify: opts.notify };
  const ids = [...new Map(ours.map((o) => [b64encode(o.p.credential), o.p.credential])).values()];
  let found: { dev: Device; id: Uint8Array } | null = null;
  const without: string[] = [];
  for (const dev of devices) {
    if (!dev.hasHmacSecret) {
      without.push(dev.name);
      continue;
    }
    // The pre-flight: no touch, no extension; NO_CREDENTIALS means "not this key".
    const id = await dev.findCredential(RP_ID, ids, io);
    if (id) {
      found = { dev, id };
      break;
    }
  }
  if (!found) {
    const names = devices.map((d) => d.name).join(', ');
    opts.notify(
      devices.length === 1
        ? `the security key ${names} did not enrol this archive, or was reset since${without.length ? ' (it has no hmac-secret support)' : ''}`
        : `none of the ${devices.length} connected security keys (${names}) enrolled this archive, or they were reset since`,
    );
    return null;
  }
  const { dev, id } = found;
  let damaged: Slot | undefined;
  for (const { slot, p } of ours) {
    if (Buffer.compare(Buffer.from(p.credential), Buffer.from(id)) !== 0) continue;
    const { output, flags } = await dev.hmacSecret(RP_ID, id, p.salt, p.uv && dev.pinSet === true ? opts.readPin : null, io);
    // Check UV before deriving anything: with the other UV state the key answers with a
    // different (equally valid-looking) secret, which must not be reported as a wrong key.
    if (uvFlag(flags) !== p.uv) {
      output.fill(0);
      throw uvMismatch(p.uv, dev.name);
    }
    const kp = deriveKeyPair(output, p);
    output.fill(0);
    try {
      const fileKey = unwrapX25519(FIDO2_SLOT_TYPE, kp, slot);
      if (fileKey) return fileKey;
      // Tagged for the key this answer gives, yet it does not open (its share or body was
      // altered): damage, as for a recovery-code slot (backupctl-format(5) KEY SLOTS).
      if (slot.tag === b64encode(recipientTag(FIDO2_SLOT_TYPE, kp.publicKey))) damaged = slot;
    } finally {
      kp.secretKey.fill(0);
    }
  }
  if (damaged) throw corruptError(`the key slot "${damaged.label}" is for this security key but does not open: the archive header was damaged or tampered with`);
  throw new BackupctlError(Exit.noKey, `the security key ${dev.name} holds this archive's credential, but its answer does not open the key slot (the slot's parameters were altered?)`);
}
