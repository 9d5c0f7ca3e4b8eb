// Turning the command line into a file key: which identities to try, in which order, and what
// to tell the user on the way. Security keys first (one touch), the recovery code when asked
// for, when it was given for a script, or when no connected key holds a credential.
import type { Command } from 'commander';
import { BackupctlError, Exit, corruptError, noKeyError } from '../errors.js';
import type { Identity, Slot } from '../keys/types.js';
import { recoveryIdentity, recoveryKeyPair, RECOVERY_SLOT_TYPE } from '../keys/recovery-code.js';
import { recipientTag } from '../keys/x25519.js';
import { b64encode } from '../util/base64.js';
import { confirmFileKey, type ParsedHeader } from '../archive/header.js';
import { readRecoveryCode, readSecret } from './secrets.js';
import { info } from './run.js';
import { canPrompt } from './terminal.js';

export interface UnlockOptions {
  recoveryCodeFile?: string;
  useRecoveryCode?: boolean;
  device?: string;
  pinFile?: string;
}

export function addUnlockOptions(cmd: Command): Command {
  return cmd
    .option('--recovery-code-file <file>', 'read the recovery code from FILE (or set BACKUPCTL_RECOVERY_CODE)')
    .option('--use-recovery-code', 'unlock with the recovery code even when a security key is plugged in')
    .option('--device <path>', 'security key to use: a hidraw path, or udp://127.0.0.1:PORT for a simulator (or BACKUPCTL_FIDO2_DEVICE)')
    .option('--pin-file <file>', "read the security key's PIN from FILE (or set BACKUPCTL_PIN)");
}

const FIDO2 = 'fido2';

async function fido2Identity(opts: UnlockOptions, signal: AbortSignal): Promise<Identity> {
  // Loaded only when an archive has security-key slots: it pulls in the CTAP2 client.
  const mod = (await import('../keys/fido2-slot.js' as string)) as {
    fido2Identity(o: { device?: string; readPin: () => Promise<string>; notify: (m: string) => void; signal: AbortSignal }): Identity;
  };
  return mod.fido2Identity({
    device: opts.device ?? process.env.BACKUPCTL_FIDO2_DEVICE,
    readPin: () => readSecret({ what: 'PIN', env: 'BACKUPCTL_PIN', file: opts.pinFile, fileFlag: '--pin-file', prompt: 'Security key PIN:', signal }),
    notify: (m) => info(m),
    signal,
  });
}

/**
 * Whether unlock() has a way to a key for slots of these types: a security key to try, or the
 * recovery code given or asked for on a terminal. Lets a command refuse before it writes anything.
 */
export function canUnlock(slotTypes: readonly string[], opts: UnlockOptions): boolean {
  if (slotTypes.includes(FIDO2) && !opts.useRecoveryCode) return true;
  return opts.recoveryCodeFile !== undefined || !!process.env.BACKUPCTL_RECOVERY_CODE || canPrompt();
}

/** The file key, after the header MAC has confirmed it. Throws exit 4 / 5 / 7 / 8 as documented. */
export async function unlock(header: ParsedHeader, opts: UnlockOptions, signal: AbortSignal): Promise<Uint8Array> {
  const slots: readonly Slot[] = header.slots;
  const hasKeySlots = slots.some((s) => s.type === FIDO2);
  const hasCodeSlots = slots.some((s) => s.type === RECOVERY_SLOT_TYPE);
  if (!hasKeySlots && !hasCodeSlots) {
    throw noKeyError(`this archive has no slot this backupctl can open (slot types: ${[...new Set(slots.map((s) => s.type))].join(', ')})`);
  }
  const codeGiven = opts.recoveryCodeFile !== undefined || !!process.env.BACKUPCTL_RECOVERY_CODE;
  const accept = (fileKey: Uint8Array) => confirmFileKey(header, fileKey);

  if (hasKeySlots && !opts.useRecoveryCode && !codeGiven) {
    try {
      const key = await (await fido2Identity(opts, signal)).unwrap(slots);
      if (key) return accept(key);
      if (!hasCodeSlots) throw noKeyError('no connected security key holds a credential of this archive (it was enrolled with another key, or the key was reset), and the archive has no recovery-code slot');
      info('No connected security key holds a credential of this archive (another key, or a key that was reset); using the recovery code instead.');
    } catch (err) {
      // Fall back only when someone can type the code: in a script, the device error (exit 7,
      // "try again") says more than "no recovery code given".
      if (!(err instanceof BackupctlError) || err.code !== Exit.unavailable || !hasCodeSlots || !canPrompt()) throw err;
      info(`${err.message}; using the recovery code instead.`);
    }
  }
  if (!hasCodeSlots) throw noKeyError('this archive has no recovery-code slot; it opens only with an enrolled security key');
  const code = await readRecoveryCode(opts.recoveryCodeFile, signal);
  const identity = recoveryIdentity(code);
  const key = await identity.unwrap(slots);
  if (!key) {
    // Tell a damaged slot from a slot for another code, so that "corrupt" (5) is not reported as
    // "wrong code" (4): a slot tagged for this code that does not open was damaged, and so was one
    // that opens once its tag is taken to be ours (accept() then fails on the header MAC).
    const tag = b64encode(recipientTag(RECOVERY_SLOT_TYPE, recoveryKeyPair(code).publicKey));
    const mine = slots.find((s) => s.type === RECOVERY_SLOT_TYPE && s.tag === tag);
    if (mine) throw corruptError(`the key slot "${mine.label}" is for this recovery code but does not open: the archive header was damaged or tampered with`);
    const retagged = await identity.unwrap(slots.filter((s) => s.type === RECOVERY_SLOT_TYPE).map((s) => ({ ...s, tag })));
    if (retagged) return accept(retagged);
    throw noKeyError('this recovery code does not open this archive (it is well-formed, but none of the archive\'s slots is for it)');
  }
  return accept(key);
}
