// `key enroll`: one makeCredential (non-discoverable, hmac-secret), then one getAssertion with a
// fresh random salt; the hmac-secret output gives the X25519 recipient kept in the config.
import { randomBytes } from 'node:crypto';
import { BackupctlError, Exit } from '../errors.js';
import type { RecipientEntry } from '../config.js';
import { b64encode } from '../util/base64.js';
import { FIDO2_SLOT_TYPE, RP_ID, deriveKeyPair, encodeParams, uvMismatch } from '../keys/fido2-slot.js';
import { checkAuthData, clientData, verifyAttestation } from './attestation.js';
import { option } from './ctap2.js';
import { PERMISSION, chooseByTouch, openDevices, talking, uvFlag, type Interaction, type PinReader } from './device.js';

export type UvChoice = 'required' | 'preferred' | 'discouraged';

export interface EnrollOptions extends Interaction {
  device?: string;
  uv: UvChoice;
  label: string;
  readPin: PinReader;
  warn: (msg: string) => void;
}

export interface EnrollResult {
  entry: RecipientEntry;
  device: string;
  simulated: boolean;
  attestation: string;
}

/** The PIN is read at most once and used for both makeCredential and the assertion. */
function once(read: PinReader): PinReader {
  let p: Promise<string> | null = null;
  return () => (p ??= read());
}

export function enrollKey(opts: EnrollOptions): Promise<EnrollResult> {
  return talking(() => enroll(opts));
}

async function enroll(opts: EnrollOptions): Promise<EnrollResult> {
  const io: Interaction = { signal: opts.signal, notify: opts.notify };
  const devices = await openDevices(opts.device, opts.signal);
  let dev;
  try {
    dev = await chooseByTouch(devices, io);
  } catch (e) {
    await Promise.all(devices.map((d) => d.close()));
    throw e;
  }
  try {
    dev.requireHmacSecret();
    if (dev.transport.simulated) {
      opts.warn(`${dev.name} is a simulated key, not a security key: its secrets live in a program, so this enrolment protects nothing; use it for tests only`);
    }
    const pinSet = dev.pinSet === true;
    if (opts.uv === 'required' && !pinSet) {
      throw new BackupctlError(Exit.refused, `--uv required, but the security key ${dev.name} has no PIN set: set one first, or use --uv preferred`);
    }
    const useUv = opts.uv === 'required' || (opts.uv === 'preferred' && pinSet);
    // A CTAP 2.0 key with a PIN refuses makeCredential without it (notes: "(seen) ... 0x36").
    const mcNeedsPin = useUv || (pinSet && !option(dev.info, 'makeCredUvNotRqd'));
    const readPin = once(opts.readPin);

    const client = clientData(RP_ID);
    const mcToken = mcNeedsPin ? await dev.pinToken(readPin, PERMISSION.makeCredential, RP_ID, io) : null;
    opts.notify('creating a credential on the security key');
    const att = await dev.makeCredential(RP_ID, client.hash, mcToken, io);
    mcToken?.fill(0);
    checkAuthData(att.authData, RP_ID, dev.name);
    const credential = att.authData.attested.credentialId;
    const attestation = verifyAttestation(att, client);
    if (!attestation.ok) opts.warn(attestation.detail);

    const salt = randomBytes(32);
    opts.notify('deriving the backup key: one more touch');
    const { output, flags } = await dev.hmacSecret(RP_ID, credential, salt, useUv ? readPin : null, io);
    const uv = uvFlag(flags);
    if (useUv && !uv) {
      output.fill(0);
      throw uvMismatch(true, dev.name);
    }
    const params = { rp: RP_ID, credential, salt, uv, aaguid: att.authData.attested.aaguid };
    const kp = deriveKeyPair(output, params);
    output.fill(0);
    kp.secretKey.fill(0);
    return {
      entry: {
        type: FIDO2_SLOT_TYPE,
        label: opts.label,
        publicKey: b64encode(kp.publicKey),
        created: new Date().toISOString(),
        params: encodeParams(params),
      },
      device: dev.name,
      simulated: dev.transport.simulated,
      attestation: attestation.detail,
    };
  } finally {
    await dev.close();
  }
}
