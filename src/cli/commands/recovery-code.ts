// `backupctl recovery-code new|check`: make a code, record its public half in the config and show
// the code exactly once; later, let the user test a paper copy against the config.
import type { Command } from 'commander';
import { open, unlink } from 'node:fs/promises';
import { constants } from 'node:fs';
import { dirname } from 'node:path';
import { BackupctlError, Exit, ioError, usageError } from '../../errors.js';
import { checkLabel, loadConfig, updateConfig, type RecipientEntry } from '../../config.js';

import { b64decode } from '../../util/base64.js';
import { syncDir } from '../../util/fsutil.js';
import { fingerprint } from '../../keys/x25519.js';
import {
  RECOVERY_SLOT_TYPE,
  generateRecoveryCode,
  recoveryKeyPair,
  recoveryRecipientEntry,
} from '../../keys/recovery-code.js';
import { action, emitJson, print } from '../run.js';
import { readRecoveryCode } from '../secrets.js';
import { registerRecoveryCodeRotate } from './rotate.js';



/** The default label, made unique with " (2)", " (3)"… when several codes are made in a day. */
export function defaultLabel(taken: ReadonlySet<string>): string {
  const d = new Date(); // the user's local date, as they would write it on the paper copy
  const base = `recovery code ${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;
  let label = base;
  for (let n = 2; taken.has(label); n++) label = `${base} (${n})`;
  return label;
}

/** Write the code to a new 0600 file; O_EXCL so an existing file (or a planted link) is refused. */
export async function writeCodeFile(path: string, code: string): Promise<void> {
  let fh;
  try {
    fh = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new BackupctlError(Exit.io, `${path} already exists: refusing to overwrite it (choose another --output)`);
    }
    throw ioError(err, path, 'create');
  }
  try {
    await fh.writeFile(`${code}\n`);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await unlink(path).catch(() => {});
    throw ioError(err, path, 'write');
  }
  await fh.close();
  await syncDir(dirname(path));
}

interface NewOptions {
  label?: string;
  output?: string;
}

async function newCode(json: boolean, opts: NewOptions): Promise<void> {
  const wanted = opts.label === undefined ? undefined : checkLabel(opts.label);
  const code = generateRecoveryCode();
  if (opts.output) await writeCodeFile(opts.output, code);
  let entry: RecipientEntry;
  try {
    entry = await updateConfig((cfg) => {
      const taken = new Set(cfg.recipients.map((r) => r.label));
      if (wanted !== undefined && taken.has(wanted)) {
        throw usageError(`a recipient labelled "${wanted}" exists already in the config: choose another --label`);
      }
      const made = recoveryRecipientEntry(code, wanted ?? defaultLabel(taken));
      cfg.recipients.push(made);
      return made;
    });
  } catch (err) {
    // The code was never recorded, so a file holding it would only mislead.
    if (opts.output) await unlink(opts.output).catch(() => {});
    throw err;
  }
  const fp = fingerprint(RECOVERY_SLOT_TYPE, b64decode(entry.publicKey));
  const result = { ok: true, label: entry.label, fingerprint: fp, publicKey: entry.publicKey, created: entry.created };
  if (json) {
    emitJson(opts.output ? { ...result, output: opts.output } : { ...result, code });
  } else if (opts.output) {
    print(
      `Recovery code "${entry.label}" (fingerprint ${fp}) written to ${opts.output} (mode 0600).`,
      'Backups made from now on can be opened with it. Print it or copy it somewhere safe, then delete the file.',
    );
  } else {
    print(
      `Recovery code "${entry.label}" (fingerprint ${fp}):`, '', `    ${code}`, '',
      'Write it down now and keep it somewhere safe: it is shown only this once and cannot be recovered.',
      'Anyone with it can open every backup made from now on; without it (or a security key) nobody can.',
      'Test your copy with: backupctl recovery-code check',
    );
  }
}

async function checkCode(json: boolean, opts: { recoveryCodeFile?: string }, signal: AbortSignal): Promise<void> {
  const input = await readRecoveryCode(opts.recoveryCodeFile, signal);
  const { secretKey, publicKey } = recoveryKeyPair(input); // throws exit 4 naming the group with a typo
  secretKey.fill(0);
  const fp = fingerprint(RECOVERY_SLOT_TYPE, publicKey);
  const cfg = await loadConfig();
  const match = cfg.recipients.find(
    (r) => r.type === RECOVERY_SLOT_TYPE && Buffer.from(b64decode(r.publicKey)).equals(Buffer.from(publicKey)),
  );
  if (!match) {
    throw new BackupctlError(
      Exit.noKey,
      `the code is well-formed (fingerprint ${fp}) but matches no recovery code in the config; it opens only archives made for it`,
      { fingerprint: fp },
    );
  }
  if (json) emitJson({ ok: true, label: match.label, fingerprint: fp, created: match.created });
  else print(`The code is correct: it is recovery code "${match.label}" (fingerprint ${fp}).`);
}

export function register(program: Command): void {
  const rc = program.command('recovery-code').description('make, check and rotate recovery codes (a generated, written-down way to unlock)');
  rc.command('new')
    .description('generate a recovery code, record its public key in the config and show the code once')
    .option('--label <label>', 'name shown in archives and listings (default "recovery code YYYY-MM-DD")')
    .option('--output <file>', 'write the code to this new file (mode 0600) instead of showing it')
    .action(action(async (ctx, opts: NewOptions) => newCode(ctx.json, opts)));
  rc.command('check')
    .description('check a written-down recovery code for typos and tell which configured code it is')
    .option('--recovery-code-file <file>', 'read the code from this file (else $BACKUPCTL_RECOVERY_CODE, else a hidden prompt)')
    .action(action(async (ctx, opts: { recoveryCodeFile?: string }) => checkCode(ctx.json, opts, ctx.signal)));
  registerRecoveryCodeRotate(rc); // `recovery-code rotate` lives with `rotate` (rotate.ts)
}
