// restore --salvage: the staging side of a salvage walk (salvage.ts). Content is staged as it
// streams, before the walk knows whether the record will prove intact, so each file is written
// under a neutral name and moved to its path in the staging directory only once the walk is over
// and it is among the entries found; the commit into DEST is then a normal restore's.
import { mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { ioError } from '../errors.js';
import { EntryType } from './format.js';
import type { EntryMeta } from './entries.js';
import type { DamageReport } from './damage.js';
import type { ArchiveFile, ArchiveStream } from './reader.js';
import { salvageArchive, type SalvageSink } from './salvage.js';
import { StagingWriter } from './staging.js';
import type { Folding } from './name-folding.js';
import { safeMode, secs } from './commit.js';

export interface SalvageSelection {
  /** Entries to stage: the selection and the directories above it. */
  keep(path: string): boolean;
  /** Entries the user asked for, whose loss counts. */
  chosen(path: string): boolean;
}

/**
 * Stage every intact entry that `sel` keeps; returns them in archive order, and the damage report
 * with only the chosen entries' losses. No entry path holds a backslash (paths.ts), so the
 * directory of neutral names, "\parts", cannot meet one.
 */
export async function salvageIntoStaging(
  archive: ArchiveFile | ArchiveStream,
  sel: SalvageSelection,
  staging: string,
  folding: Folding,
  signal?: AbortSignal,
  onProgress?: (p: { bytes: number; entries: number }) => void,
): Promise<{ staged: EntryMeta[]; report: DamageReport }> {
  // The staging thread takes paths relative to the staging directory.
  const parts = '\\parts';
  const writer = new StagingWriter(staging);
  let open: { seq: number; head: Parameters<SalvageSink['begin']>[0] } | null = null;
  let madeParts = false;
  let bytes = 0;
  let entries = 0;
  const sink: SalvageSink = {
    async begin(head, seq) {
      if (head.type !== EntryType.File || !sel.keep(head.path)) return;
      if (!madeParts) await writer.mkdir(parts);
      madeParts = true;
      await writer.open(join(parts, String(seq)), false);
      open = { seq, head };
    },
    async data(chunk) {
      if (!open) return;
      signal?.throwIfAborted();
      bytes += chunk.length;
      await writer.write(chunk);
    },
    async end(seq, ok) {
      if (ok) onProgress?.({ bytes, entries: ++entries });
      if (open?.seq !== seq) return;
      // Hashed as it was read (salvage.ts): nothing is left for the staging thread to check.
      await writer.close(ok ? safeMode(open.head.mode) : 0o600, secs(open.head.mtimeNs), null, open.head.path);
      open = null;
    },
  };
  let result: Awaited<ReturnType<typeof salvageArchive>>;
  try {
    result = await salvageArchive(archive, sink, signal, folding);
    await writer.finish();
  } catch (err) {
    await writer.stop(); // nothing may still be writing when staging is removed
    throw err;
  }
  const staged: EntryMeta[] = [];
  // A directory whose record is lost is still made for the entries in it: private (0700), now.
  const dirs = new Set<string>();
  const withParents = (path: string) => {
    const parts = path.split('/');
    for (let k = 1; k < parts.length; k++) {
      const p = parts.slice(0, k).join('/');
      if (dirs.has(p)) continue;
      dirs.add(p);
      mkdirSync(join(staging, p), { mode: 0o700 });
      staged.push({ type: EntryType.Dir, path: p, mode: 0o700, mtimeNs: BigInt(Date.now()) * 1_000_000n, codec: 0, target: '', size: 0n, sha256: Buffer.alloc(32), flags: 0 });
    }
  };
  for (const f of result.found) {
    if (!sel.keep(f.meta.path)) continue;
    const target = join(staging, f.meta.path);
    try {
      withParents(f.meta.path);
      if (f.meta.type === EntryType.Dir) {
        if (!dirs.has(f.meta.path)) mkdirSync(target, { mode: 0o700 });
        dirs.add(f.meta.path);
      } else if (f.meta.type === EntryType.File) renameSync(join(staging, parts, String(f.seq)), target);
    } catch (err) {
      throw ioError(err, target, 'write');
    }
    staged.push(f.meta);
  }
  const report = result.report;
  return { staged, report: { ...report, lost: report.lost.filter((l) => l.path === null || sel.chosen(l.path)) } };
}
