// `backupctl key enroll|list|remove|test`: FIDO2 security keys as recipients. Enrolment touches
// the key twice and stores only public data in the config; everything else here is bookkeeping,
// except `test`, which unlocks a throw-away slot exactly the way restore would.
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { BackupctlError, Exit, usageError } from '../../errors.js';
import { checkLabel, entryFingerprint, findRecipient, loadConfig, recipientFromEntry, removeRecipient, updateConfig, type RecipientEntry } from '../../config.js';
import { FIDO2_SLOT_TYPE } from '../../keys/fido2-slot.js';
import { action, emitJson, info, print, printFields, warn } from '../run.js';
import { readSecret } from '../secrets.js';

const UV_CHOICES = ['required', 'preferred', 'discouraged'] as const;

interface DeviceOptions {
  device?: string;
  pinFile?: string;
}

const deviceSpec = (o: DeviceOptions) => o.device ?? (process.env.BACKUPCTL_FIDO2_DEVICE || undefined);

const pinReader = (o: DeviceOptions, signal: AbortSignal) => () =>
  readSecret({ what: 'PIN', env: 'BACKUPCTL_PIN', file: o.pinFile, fileFlag: '--pin-file', prompt: 'Security key PIN:', signal });

const fp = entryFingerprint;
const keysOf = (entries: RecipientEntry[]) => entries.filter((e) => e.type === FIDO2_SLOT_TYPE);


/** A fido2 entry by label or fingerprint; exit 2 when none or several match. */
const findEntry = (entries: RecipientEntry[], which: string) => findRecipient(entries, FIDO2_SLOT_TYPE, which, 'enrolled security key', 'backupctl key list');

interface EnrollCliOptions extends DeviceOptions {
  label?: string;
  uv: (typeof UV_CHOICES)[number];
  replace?: string;
}

async function enroll(json: boolean, o: EnrollCliOptions, signal: AbortSignal): Promise<void> {
  if (!UV_CHOICES.includes(o.uv)) throw usageError(`--uv must be one of ${UV_CHOICES.join(', ')}`);
  const before = await loadConfig();
  const replaced = o.replace === undefined ? undefined : findEntry(before.recipients, o.replace);
  const label = o.label !== undefined ? checkLabel(o.label) : replaced?.label;
  if (label !== undefined && label !== replaced?.label && before.recipients.some((r) => r.label === label)) {
    throw usageError(`a recipient labelled "${label}" exists already in the config: choose another --label`);
  }
  const { enrollKey } = await import('../../fido2/enroll.js');
  const result = await enrollKey({
    device: deviceSpec(o),
    uv: o.uv,
    label: label ?? 'security key',
    readPin: pinReader(o, signal),
    notify: info,
    warn,
    signal,
  });
  const entry = await updateConfig((cfg) => {
    const taken = new Set(cfg.recipients.filter((r) => r !== replaced && r.publicKey !== replaced?.publicKey).map((r) => r.label));
    if (label === undefined) {
      // Default labels: "security key", "security key 2", ... so `key remove LABEL` stays unambiguous.
      let n = 1;
      while (taken.has(n === 1 ? 'security key' : `security key ${n}`)) n++;
      result.entry.label = n === 1 ? 'security key' : `security key ${n}`;
    } else if (taken.has(label)) {
      throw usageError(`a recipient labelled "${label}" exists already in the config: choose another --label`);
    }
    if (replaced) cfg.recipients = cfg.recipients.filter((r) => !(r.type === FIDO2_SLOT_TYPE && r.publicKey === replaced.publicKey));
    cfg.recipients.push(result.entry);
    return result.entry;
  });
  const out = {
    ok: true,
    label: entry.label,
    fingerprint: fp(entry),
    device: result.device,
    simulated: result.simulated,
    uv: entry.params!.uv,
    aaguid: entry.params!.aaguid,
    attestation: result.attestation,
    ...(replaced ? { replaced: { label: replaced.label, fingerprint: fp(replaced) } } : {}),
  };
  if (json) return emitJson(out);
  print(
    `Security key "${entry.label}" enrolled (fingerprint ${out.fingerprint}, PIN/UV ${out.uv ? 'required' : 'not used'}).`,
    ...(replaced ? [`It replaces "${replaced.label}" (${fp(replaced)}): archives made for that one still open with the key; move them with backupctl rotate.`] : []),
    `Backups made from now on are encrypted to it without touching the key. Test it any time with: backupctl key test "${entry.label}"`,
    'Keep a recovery code (backupctl recovery-code new) or a second key: a lost or reset key cannot be replaced.',
  );
}

function list(json: boolean, entries: RecipientEntry[]): void {
  const keys = keysOf(entries).map((e) => ({
    label: e.label,
    fingerprint: fp(e),
    uv: e.params?.uv === true,
    aaguid: String(e.params?.aaguid ?? ''),
    created: e.created,
  }));
  if (json) return emitJson({ ok: true, keys });
  if (keys.length === 0) {
    print('No security key enrolled. Enrol one with: backupctl key enroll');
    return;
  }
  for (const k of keys) printFields(k.label, k.fingerprint, `PIN/UV ${k.uv ? 'yes' : 'no'}`, `aaguid ${k.aaguid}`, `enrolled ${k.created}`);
}

async function remove(json: boolean, which: string, force: boolean): Promise<void> {
  const gone = await removeRecipient(FIDO2_SLOT_TYPE, which, 'enrolled security key', 'backupctl key list', !force);
  if (json) return emitJson({ ok: true, label: gone.label, fingerprint: fp(gone) });
  print(
    `Removed security key "${gone.label}" (${fp(gone)}) from the config: new backups are no longer encrypted to it.`,
    'Archives made before still open with it; to take it off them, use backupctl rotate.',
  );
}

/**
 * Wrap a random file key per enrolled entry and unlock with the connected key, through the very
 * identity restore uses: proves the key, its PIN/UV setting and the derivation still agree.
 */
async function test(json: boolean, which: string | undefined, o: DeviceOptions, signal: AbortSignal): Promise<void> {
  const cfg = await loadConfig();
  const entries = which === undefined ? keysOf(cfg.recipients) : [findEntry(cfg.recipients, which)];
  if (entries.length === 0) throw usageError('no security key enrolled: run backupctl key enroll first');
  const trials = entries.map((e) => {
    const fileKey = new Uint8Array(randomBytes(32));
    return { e, fileKey, slot: recipientFromEntry(e).wrap(fileKey) };
  });
  const { fido2Identity } = await import('../../keys/fido2-slot.js');
  const got = await fido2Identity({ device: deviceSpec(o), readPin: pinReader(o, signal), notify: info, signal }).unwrap(trials.map((t) => t.slot));
  if (!got) {
    throw new BackupctlError(Exit.noKey, which === undefined ? 'the connected security key is not one of the enrolled keys (or it was reset since it was enrolled)' : `the connected security key is not "${which}" (or it was reset since it was enrolled)`);
  }
  const hit = trials.find((t) => Buffer.from(t.fileKey).equals(Buffer.from(got)))!;
  got.fill(0);
  if (json) return emitJson({ ok: true, label: hit.e.label, fingerprint: fp(hit.e) });
  print(`Security key "${hit.e.label}" (${fp(hit.e)}) works: it unlocks backups made for it.`);
}

function deviceOptions(cmd: Command): Command {
  return cmd
    .option('--device <path>', 'security key to use: a hidraw path, or udp://127.0.0.1:PORT for a simulator (or BACKUPCTL_FIDO2_DEVICE)')
    .option('--pin-file <file>', "read the security key's PIN from FILE (or set BACKUPCTL_PIN)");
}

export function register(program: Command): void {
  const key = program.command('key').description('enrol, list, remove and test FIDO2 security keys');
  deviceOptions(
    key
      .command('enroll')
      .description('create a credential on a security key and add it as a recipient of future backups (two touches)')
      .option('--label <name>', 'name shown in archives and listings (default "security key", "security key 2", ...)')
      .option('--uv <choice>', 'PIN/user verification: required | preferred (when the key has a PIN) | discouraged', 'preferred')
      .option('--replace <label>', 'enrol again (new credential and salt) in place of this enrolled key'),
  ).action(action(async (ctx, o: EnrollCliOptions) => enroll(ctx.json, o, ctx.signal)));
  key
    .command('list')
    .description('list the enrolled security keys')
    .action(action(async (ctx) => list(ctx.json, (await loadConfig()).recipients)));
  key
    .command('remove')
    .argument('<label-or-fingerprint>')
    .description('stop encrypting new backups to an enrolled key')
    .option('--force', 'allow removing the last recipient of the config')
    .action(action(async (ctx, which: string, o: { force?: boolean }) => remove(ctx.json, which, Boolean(o.force))));
  deviceOptions(
    key
      .command('test')
      .argument('[label-or-fingerprint]')
      .description('touch the key to check that it still unlocks backups made for it'),
  ).action(action(async (ctx, which: string | undefined, o: DeviceOptions) => test(ctx.json, which, o, ctx.signal)));
}
