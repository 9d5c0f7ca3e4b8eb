// `restore --repo REPO SNAPSHOT -d DIR`: a snapshot restored with exactly an archive restore's
// safety (archive/restore.ts): every path checked first, everything staged inside DIR and
// authenticated (segments, and every chunk against its keyed id and length) before the commit
// moves it in. The content is written pack by pack (repo/unpack.ts), each pack read once.
import { mkdirSync } from 'node:fs';
import { Codec, EntryType } from '../archive/format.js';
import type { EntryMeta } from '../archive/entries.js';
import { PathGuard } from '../archive/paths.js';
import { probeFolding, type Folding } from '../archive/name-folding.js';
import { stagedPath } from '../archive/staged-path.js';
import { isAncestorOfSelection, normaliseOnly, selects, stageAndCommit, type RestoreResult } from '../archive/restore.js';
import { safeMode, secs } from '../archive/commit.js';
import { corruptError, ioError } from '../errors.js';
import type { RepoReader } from '../repo/reader.js';
import type { Snapshot } from '../repo/snapshot.js';
import { unpackFiles, type UnpackThreads } from '../repo/unpack.js';

export interface RestoreSnapshotOptions {
  reader: RepoReader;
  snapshot: Snapshot;
  /** The threads that write the files (started by the caller, before it opened the repository), stopped once they are written. */
  threads: UnpackThreads;
  /** When the snapshots were listed (Date.now() after listSnapshots: see RepoReader.place). */
  listedAt: number;
  dest: string;
  only?: string[];
  force?: boolean;
  /** Restore what is intact and name what is lost (a damaged or missing pack) instead of failing. */
  salvage?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: { bytes: number; entries: number }) => void;
}

/** The commit reads no hash of a repository entry: one buffer for all of them. */
const NO_HASH = Buffer.alloc(32);

export async function restoreSnapshot(o: RestoreSnapshotOptions): Promise<RestoreResult & { lost: string[] }> {
  const only = normaliseOnly(o.only);
  // A snapshot a backup has just finished may lie in index files and packs the listings left out.
  await o.reader.place(o.snapshot.tree.map((h) => Buffer.from(h, 'hex')), o.listedAt, o.signal);
  const tree = await o.reader.tree(o.snapshot);
  const checkNames = (folding?: Folding) => {
    const guard = new PathGuard(folding);
    for (const e of tree) guard.add(e.path, e.type, e.target);
  };
  checkNames();
  const wanted = tree.filter((e) => selects(only, e.path) || isAncestorOfSelection(only, e.path));
  let lost = new Set<number>();
  const files = wanted.filter((e) => e.type === EntryType.File);
  await o.reader.place(files.flatMap((e) => e.chunks), o.listedAt, o.signal);

  const res = await stageAndCommit(o, only, async (staging, precheck) => {
    // As for archives: names the target's file system would take for one are refused only there.
    const folding = probeFolding(staging);
    if (folding.case || folding.unicode) checkNames(folding);
    const metas = wanted.map((e): EntryMeta => ({ type: e.type, path: e.path, mode: e.mode, mtimeNs: e.mtimeNs, codec: Codec.Stored, target: e.target, size: BigInt(e.size), sha256: NO_HASH, flags: 0 }));
    precheck(metas); // conflicts with DIR before any pack is read, as from an archive's index
    // The directories first (paths relative to the staging directory, '' the directory itself),
    // here: a thread of their own, as archive restores write with, took 50-100 ms to start.
    const made = new Set<string>(['']);
    const dir = (d: string) => {
      if (made.has(d)) return;
      made.add(d);
      let path: string;
      try {
        path = stagedPath(staging, d);
      } catch {
        throw corruptError(`refusing to stage ${JSON.stringify(d)}: it resolves outside the staging directory`);
      }
      try {
        mkdirSync(path, { recursive: true, mode: 0o700 });
      } catch (err) {
        throw ioError(err, path, 'write');
      }
    };
    for (const e of wanted) {
      if (e.type === EntryType.Dir) dir(e.path);
      if (e.type === EntryType.File) dir(e.path.slice(0, Math.max(0, e.path.lastIndexOf('/'))));
    }
    const targets = files.map((e) => ({ path: e.path, mode: safeMode(e.mode), mtime: secs(e.mtimeNs), size: e.size, chunks: e.chunks }));
    const total = targets.reduce((a, t) => a + t.size, 0) || 1;
    const onProgress = (bytes: number) => o.onProgress?.({ bytes, entries: Math.round((wanted.length * bytes) / total) }); // packs, not entries, are what is done in turn
    lost = await unpackFiles(o.reader, staging, targets, o.threads, { salvage: !!o.salvage, signal: o.signal, onProgress });
    // Salvage: a lost file stays in staging (removed with it) and out of the commit.
    const gone = new Set([...lost].map((i) => files[i]!));
    return metas.filter((_, i) => !gone.has(wanted[i]!));
  });
  return { ...res, lost: [...lost].sort((a, b) => a - b).map((i) => files[i]!.path) };
}
