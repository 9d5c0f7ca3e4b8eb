// `backupctl recovery-code new|list|remove|check`: make a code, record its public half in the
// config and show the code exactly once; list and remove codes; let the user test a paper copy.
import type { Command } from 'commander';
import { open, unlink } from 'node:fs/promises';
import { constants } from 'node:fs';
import { dirname } from 'node:path';
import { BackupctlError, Exit, ioError, usageError } from '../../errors.js';
import { checkLabel, entryFingerprint, loadConfig, removeRecipient, updateConfig, type Config, type RecipientEntry } from '../../config.js';
import { b64decode } from '../../util/base64.js';
import { requireOutputDir, syncDir } from '../../util/fsutil.js';
import type { Lock } from '../../util/lock.js';
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

export interface IssueOptions {
  json: boolean;
  /** A new file to write the code to (else it is shown, or in --json put in the result object). */
  output?: string;
  /** Checked already (checkLabel); default "recovery code YYYY-MM-DD". */
  label?: string;
  /** Print the code for the user (human output, no --output). */
  show: (code: string, entry: RecipientEntry) => void;
  /** Put `entry` into the config; returns the entries it retires. */
  record: (cfg: Config, entry: RecipientEntry) => RecipientEntry[];
  /** The config lock, if the caller holds it already. */
  held?: Lock;
}

/**
 * Make a new recovery code and record it, under the config lock: the code is written to its file
 * or shown before the config changes (with --json it goes in the result object, printed once the
 * config is written), so the config never names a code nobody was given. If the config cannot be
 * written after all, the file is removed and a shown code is declared void.
 */
export async function issueCode(o: IssueOptions): Promise<{ code: string; entry: RecipientEntry; retired: RecipientEntry[] }> {
  if (o.output) await requireOutputDir(o.output);
  let code = '';
  let entry: RecipientEntry | null = null;
  let written = false;
  try {
    const retired = await updateConfig(async (cfg) => {
      const taken = new Set(cfg.recipients.map((r) => r.label));
      if (o.label !== undefined && taken.has(o.label)) {
        throw usageError(`a recipient labelled "${o.label}" exists already in the config: choose another --label`);
      }
      code = generateRecoveryCode();
      entry = recoveryRecipientEntry(code, o.label ?? defaultLabel(taken));
      if (o.output) {
        await writeCodeFile(o.output, code);
        written = true;
      } else if (!o.json) o.show(code, entry);
      return o.record(cfg, entry);
    }, o.held);
    return { code, entry: entry!, retired };
  } catch (err) {
    if (!entry) throw err;
    // The code was never recorded, so a file holding it would only mislead.
    if (written) await unlink(o.output!).catch(() => {});
    if (o.output || o.json) throw err;
    const why = err instanceof BackupctlError ? err.message : String(err);
    throw new BackupctlError(err instanceof BackupctlError ? err.code : Exit.io, `the code shown above was NOT recorded in the config, which is unchanged: do not keep it (${why})`);
  }
}

interface NewOptions {
  label?: string;
  output?: string;
}

function showNew(code: string, entry: RecipientEntry): void {
  print(
    `Recovery code "${entry.label}" (fingerprint ${entryFingerprint(entry)}):`, '', `    ${code}`, '',
    'Write it down now and keep it somewhere safe: it is shown only this once and cannot be recovered.',
    'Anyone with it can open every backup made from now on; without it (or a security key) nobody can.',
    'Test your copy with: backupctl recovery-code check',
  );
}

async function newCode(json: boolean, opts: NewOptions): Promise<void> {
  const label = opts.label === undefined ? undefined : checkLabel(opts.label);
  const { code, entry } = await issueCode({
    json, output: opts.output, label, show: showNew,
    record: (cfg, e) => {
      cfg.recipients.push(e);
      return [];
    },
  });
  const fp = entryFingerprint(entry);
  const result = { ok: true, label: entry.label, fingerprint: fp, publicKey: entry.publicKey, created: entry.created };
  if (json) {
    emitJson(opts.output ? { ...result, output: opts.output } : { ...result, code });
  } else if (opts.output) {
    print(
      `Recovery code "${entry.label}" (fingerprint ${fp}) written to ${opts.output} (mode 0600).`,
      'Backups made from now on can be opened with it. Print it or copy it somewhere safe, then delete the file.',
    );
  }
}

const codesOf = (entries: RecipientEntry[]) => entries.filter((e) => e.type === RECOVERY_SLOT_TYPE);

function list(json: boolean, entries: RecipientEntry[]): void {
  const codes = codesOf(entries).map((e) => ({ label: e.label, fingerprint: entryFingerprint(e), created: e.created }));
  if (json) return emitJson({ ok: true, codes });
  if (codes.length === 0) {
    process.stdout.write('No recovery code in the config. Make one with: backupctl recovery-code new\n');
    return;
  }
  for (const c of codes) process.stdout.write(`${c.label}\t${c.fingerprint}\tcreated ${c.created}\n`);
}

async function remove(json: boolean, which: string, force: boolean): Promise<void> {
  const gone = await removeRecipient(RECOVERY_SLOT_TYPE, which, 'recovery code', 'backupctl recovery-code list', !force);
  if (json) return emitJson({ ok: true, label: gone.label, fingerprint: entryFingerprint(gone) });
  process.stdout.write(
    `Removed recovery code "${gone.label}" (${entryFingerprint(gone)}) from the config: new backups are no longer encrypted to it.\n` +
      `Archives made before still open with it; to take it off them, use backupctl rotate FILE --remove-key "${gone.label}".\n`,
  );
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
  const rc = program.command('recovery-code').description('make, list, remove, check and rotate recovery codes (a generated, written-down way to unlock)');
  rc.command('new')
    .description('generate a recovery code, record its public key in the config and show the code once')
    .option('--label <label>', 'name shown in archives and listings (default "recovery code YYYY-MM-DD")')
    .option('--output <file>', 'write the code to this new file (mode 0600) instead of showing it')
    .action(action(async (ctx, opts: NewOptions) => newCode(ctx.json, opts)));
  rc.command('list')
    .description('list the recovery codes of the config (labels and fingerprints; the codes themselves are never stored)')
    .action(action(async (ctx) => list(ctx.json, (await loadConfig()).recipients)));
  rc.command('remove')
    .argument('<label-or-fingerprint>')
    .description('stop encrypting new backups to a recovery code')
    .option('--force', 'allow removing the last recipient of the config')
    .action(action(async (ctx, which: string, o: { force?: boolean }) => remove(ctx.json, which, Boolean(o.force))));
  rc.command('check')
    .description('check a written-down recovery code for typos and tell which configured code it is')
    .option('--recovery-code-file <file>', 'read the code from this file (else $BACKUPCTL_RECOVERY_CODE, else a hidden prompt)')
    .action(action(async (ctx, opts: { recoveryCodeFile?: string }) => checkCode(ctx.json, opts, ctx.signal)));
  registerRecoveryCodeRotate(rc); // `recovery-code rotate` lives with `rotate` (rotate.ts)
}
