// Hostile archives for end-to-end tests, built the way an attacker holding a recipient's public
// key builds one: through the library's own writer, sealed with a file key the slots really
// wrap, so every cryptographic check passes and only the content is hostile.
import { writeFile } from 'node:fs/promises';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { EntryType } from '../../src/archive/format.js';
import type { Recipient, Slot } from '../../src/keys/types.js';

export type EntrySpec = { path: string; dir?: true; link?: string; data?: string };

async function* entries(specs: EntrySpec[]): AsyncGenerator<SourceEntry> {
  for (const s of specs) {
    const base = { path: s.path, mode: s.dir ? 0o755 : 0o644, mtimeNs: 1_700_000_000_000_000_000n };
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

/** Write to `file` an archive holding exactly `specs`, in that order, for `recipients`. */
export async function craftArchive(file: string, recipients: Recipient[], specs: EntrySpec[]): Promise<string> {
  const sink = new MemorySink();
  await writeArchive({ recipients, entries: entries(specs), sink, segmentSize: 4096 });
  await writeFile(file, sink.bytes);
  return file;
}
