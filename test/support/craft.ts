// Archives that the CLI would never write (a file where a directory is, a file with no record
// for its parent), built the way anyone holding a recipient's public key can: with the library's
// own writer, sealed to the test's recovery code.
import { writeFile } from 'node:fs/promises';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { EntryType } from '../../src/archive/format.js';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';

/** An entry: a directory, a symlink to `link`, or a file holding `data` (default: a line naming it). */
export type CraftSpec = { path: string; dir?: true; link?: string; data?: string | Buffer; mode?: number };

export const CRAFT_MTIME_NS = 1_700_000_000_123_000_000n;

/** Write an archive holding exactly `specs`, in that order, to `file`, for recovery code `code`. */
export async function craftArchive(file: string, code: string, specs: CraftSpec[], segmentSize = 4096): Promise<void> {
  async function* entries(): AsyncGenerator<SourceEntry> {
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
  const sink = new MemorySink();
  await writeArchive({ recipients: [recipientFromEntry(recoveryRecipientEntry(code, 'crafted'))], entries: entries(), sink, segmentSize });
  await writeFile(file, sink.bytes);
}
