// Hostile archives for end-to-end tests, built the way an attacker holding a recipient's public
// key builds one: through the library's own writer, sealed with a file key the slots really
// wrap, so every cryptographic check passes and only the content is hostile (a file where a
// directory is, a file with no record for its parent, a forged label or share...).
import { writeFile } from 'node:fs/promises';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { EntryType } from '../../src/archive/format.js';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import type { Recipient, Slot } from '../../src/keys/types.js';

/** An entry: a directory, a symlink to `link`, or a file holding `data` (default: a line naming it). */
export type EntrySpec = { path: string; dir?: true; link?: string; data?: string | Buffer; mode?: number };
export type CraftSpec = EntrySpec;

export const CRAFT_MTIME_NS = 1_700_000_000_123_000_000n;

async function* entries(specs: EntrySpec[]): AsyncGenerator<SourceEntry> {
  for (const s of specs) {
    const base = { path: s.path, mode: s.mode ?? (s.dir ? 0o755 : 0o644), mtimeNs: CRAFT_MTIME_NS };
    if (s.dir) yield { ...base, type: EntryType.Dir };
    else if (s.link !== undefined) yield { ...base, type: EntryType.Symlink, target: s.link };
    else {
      const data = Buffer.from(s.data ?? `content of ${s.path}\n`);
      yield { ...base, type: EntryType.File, open: async () => chunkedContent((async function* () { yield data; })(), false) };
    }
  }
}

/** `recipient` with each slot it makes passed through `edit` (a forged label, share, tag...). */
export function editedSlots(recipient: Recipient, edit: (slot: Slot) => Slot): Recipient {
  return { type: recipient.type, label: recipient.label, wrap: (fileKey) => edit(recipient.wrap(fileKey)) };
}

/**
 * Write to `file` an archive holding exactly `specs`, in that order, for `recipients` (or for
 * the recovery code given as a string).
 */
export async function craftArchive(file: string, recipients: Recipient[] | string, specs: EntrySpec[], segmentSize = 4096): Promise<string> {
  const to = typeof recipients === 'string' ? [recipientFromEntry(recoveryRecipientEntry(recipients, 'crafted'))] : recipients;
  const sink = new MemorySink();
  await writeArchive({ recipients: to, entries: entries(specs), sink, segmentSize });
  await writeFile(file, sink.bytes);
  return file;
}
