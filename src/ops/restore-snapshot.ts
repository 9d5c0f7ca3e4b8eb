// `restore --repo REPO SNAPSHOT -d DIR`: a snapshot restored with exactly an archive restore's
// safety (archive/restore.ts): every path checked first, everything staged inside DIR and
// authenticated (segments, and every chunk against its keyed id) before the commit moves it in.
import { BackupctlError, Exit, corruptError } from '../errors.js';
import { Codec, EntryType } from '../archive/format.js';
import type { EntryMeta } from '../archive/entries.js';
import { PathGuard } from '../archive/paths.js';
import { probeFolding, type Folding } from '../archive/name-folding.js';
import { StagingWriter } from '../archive/staging.js';
import { isAncestorOfSelection, normaliseOnly, selects, stageAndCommit, type RestoreResult } from '../archive/restore.js';
import { safeMode, secs } from '../archive/commit.js';
import type { RepoReader } from '../repo/reader.js';
import type { Snapshot } from '../repo/snapshot.js';

export interface RestoreSnapshotOptions {
  reader: RepoReader;
  snapshot: Snapshot;
  dest: string;
  only?: string[];
  force?: boolean;
  /** Restore what is intact and name what is lost (a damaged or missing pack) instead of failing. */
  salvage?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: { bytes: number; entries: number }) => void;
}

export async function restoreSnapshot(o: RestoreSnapshotOptions): Promise<RestoreResult & { lost: string[] }> {
  const lost: string[] = [];
  const only = normaliseOnly(o.only);
  const tree = await o.reader.tree(o.snapshot);
  const checkNames = (folding?: Folding) => {
    const guard = new PathGuard(folding);
    for (const e of tree) guard.add(e.path, e.type, e.target);
  };
  checkNames();
  const wanted = tree.filter((e) => selects(only, e.path) || isAncestorOfSelection(only, e.path));

  const res = await stageAndCommit(o, only, async (staging) => {
    // As for archives: names the target's file system would take for one are refused only there.
    const folding = probeFolding(staging);
    if (folding.case || folding.unicode) checkNames(folding);
    // Paths relative to the staging directory ('' is the directory itself), as StagingWriter takes them.
    const writer = new StagingWriter(staging);
    const made = new Set<string>(['']);
    const dir = async (d: string) => {
      if (made.has(d)) return;
      await writer.mkdir(d);
      made.add(d);
    };
    const staged: EntryMeta[] = [];
    let bytes = 0;
    try {
      for (const e of wanted) {
        if (e.type === EntryType.Dir) await dir(e.path);
        if (e.type === EntryType.File) {
          await dir(e.path.slice(0, Math.max(0, e.path.lastIndexOf('/'))));
          await writer.open(e.path, false);
          let size = 0;
          try {
            for (const id of e.chunks) {
              o.signal?.throwIfAborted();
              const chunk = await o.reader.chunk(id, e.path);
              size += chunk.length;
              await writer.write(chunk);
            }
            if (size !== e.size) throw corruptError(`${e.path}: its chunks hold ${size} bytes, the snapshot records ${e.size}`);
          } catch (err) {
            // Salvage: the file stays in staging (removed with it) and out of the commit.
            if (!o.salvage || !(err instanceof BackupctlError) || err.code !== Exit.corrupt) throw err;
            await writer.close(0o600, secs(e.mtimeNs), null, e.path);
            lost.push(e.path);
            continue;
          }
          bytes += size;
          await writer.close(safeMode(e.mode), secs(e.mtimeNs), null, e.path);
        }
        staged.push({ type: e.type, path: e.path, mode: e.mode, mtimeNs: e.mtimeNs, codec: Codec.Stored, target: e.target, size: BigInt(e.size), sha256: Buffer.alloc(32), flags: 0 });
        o.onProgress?.({ bytes, entries: staged.length });
      }
      await writer.finish();
    } catch (err) {
      await writer.stop();
      throw err;
    }
    return staged;
  });
  return { ...res, lost };
}
