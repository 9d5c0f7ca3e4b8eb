// Who a new archive is encrypted to: the config's recipients, plus any given for a script with
// --recipients-file (a config.json from another machine, or any JSON with a "recipients" list).
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { BackupctlError, Exit, ioError, usageError } from '../errors.js';
import { loadConfig, recipientFromEntry, type RecipientEntry } from '../config.js';
import { MAX_SLOTS } from '../archive/format.js';
import { MAX_LABEL, isValidLabel } from '../keys/label.js';

export interface RecipientOptions {
  recipientsFile?: string[];
  config?: boolean; // --no-config sets false
}

export function addRecipientOptions(cmd: Command): Command {
  return cmd
    .option('--recipients-file <file>', "also encrypt to the recipients listed in FILE (e.g. another machine's config.json); repeatable", (v: string, prev: string[] = []) => [...prev, v])
    .option('--no-config', 'do not encrypt to the recipients in the config (only --recipients-file)');
}

async function entriesFromFile(path: string): Promise<RecipientEntry[]> {
  let j: { recipients?: unknown };
  try {
    j = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    if (err instanceof SyntaxError) throw usageError(`${path} is not JSON: ${err.message}`);
    throw ioError(err, path, 'read');
  }
  const list = j?.recipients;
  if (!Array.isArray(list) || list.some((e) => typeof e?.type !== 'string' || typeof e?.label !== 'string' || typeof e?.publicKey !== 'string')) {
    throw usageError(`${path} has no valid "recipients" list`);
  }
  return list as RecipientEntry[];
}

export type ResolvedRecipient = ReturnType<typeof recipientFromEntry>;

export async function resolveRecipients(o: RecipientOptions): Promise<ResolvedRecipient[]> {
  const entries: RecipientEntry[] = o.config === false ? [] : (await loadConfig()).recipients;
  for (const f of o.recipientsFile ?? []) entries.push(...(await entriesFromFile(f)));
  const seen = new Set<string>();
  const out: ResolvedRecipient[] = [];
  for (const e of entries) {
    // Every label written into a header keeps the rule the header parser applies (keys/label.ts).
    if (!isValidLabel(e.label)) throw usageError(`recipient ${JSON.stringify(e.label)}: a label must be 1 to ${MAX_LABEL} visible characters on one line`);
    const r = recipientFromEntry(e);
    const id = `${e.type}:${e.publicKey}`;
    if (!seen.has(id)) {
      seen.add(id);
      out.push(r);
    }
  }
  if (out.length === 0) {
    throw new BackupctlError(
      Exit.usage,
      'no recipients to encrypt to: run `backupctl recovery-code new` (and/or `backupctl key enroll`) first, or pass --recipients-file',
    );
  }
  if (out.length > MAX_SLOTS) throw usageError(`too many recipients (${out.length}); an archive holds at most ${MAX_SLOTS} slots`);
  return out;
}

/** Whether any of `recipients` is one of the config's own: a key or code of this user's. */
export async function includesOwn(recipients: readonly ResolvedRecipient[]): Promise<boolean> {
  const own = new Set((await loadConfig()).recipients.map((e) => recipientFromEntry(e).fingerprint));
  return recipients.some((r) => own.has(r.fingerprint));
}

export const describeRecipient = (r: { type: string; label: string; fingerprint: string }) => `${r.type} "${r.label}" (${r.fingerprint})`;
