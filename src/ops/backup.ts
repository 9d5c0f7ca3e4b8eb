// `backup DIR --repo REPO`: one new snapshot, with what a backup machine holds (no secret, no
// touch). Unchanged files (files cache) are not read; changed ones are cut into chunks and only
// chunks the index does not know are stored. Written in this order, so that a run killed at any
// point leaves nothing referring to data that is not there: packs, each followed by its index
// file; the tree's packs; the snapshot file (the commit); the files cache.
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { EntryType } from '../archive/format.js';
import { openContent } from '../archive/pack.js';
import { entryPathInside, exceptEntries, walkDirectory } from '../archive/walk.js';
import type { Store } from '../store/store.js';
import { chunkBuffer, chunkStream } from '../repo/chunker.js';
import { FilesCache, type FileState } from '../repo/files-cache.js';
import { BlobType, RepoIndex } from '../repo/index.js';
import { DedupKeys, type MachineKeys } from '../repo/keys.js';
import { backupReadKey } from './repository.js';
import { lockRepository } from '../repo/lock.js';
import { PackWriter } from '../repo/pack.js';
import { writeSnapshot, type Snapshot } from '../repo/snapshot.js';
import { TreeChunker, type TreeEntry } from '../repo/tree.js';

export interface BackupOptions {
  store: Store;
  keys: MachineKeys;
  /** The directory, as given (recorded as an absolute path). */
  dir: string;
  /** Counts what the walk skips (special files, unreadable names), warned about on the way. */
  skipped: { count: number };
  signal?: AbortSignal;
  onWarning?: (m: string) => void;
  onProgress?: (p: { bytes: number; entries: number; path: string }) => void;
}

export interface BackupResult {
  snapshot: Snapshot;
  entries: number;
  files: number;
  /** Bytes of files in the snapshot, and of those read (not skipped by the files cache). */
  bytes: number;
  bytesRead: number;
  newChunks: number;
  /** Bytes written to the store: packs, index files and the snapshot file. */
  storedBytes: number;
  packs: number;
  skipped: number;
  changed: number;
}

/** Entries whose chunk ids may still be on their way (stored content hashed on the thread pool), at most: the rest of the pipeline is bounded by the pack writer. */
const ENTRIES_AHEAD = 64;

export async function backup(o: BackupOptions): Promise<BackupResult> {
  const { store, keys } = o;
  const source = resolve(o.dir);
  const dedup = new DedupKeys(keys.dedupKey);
  const lock = await lockRepository(store, 'shared', 'backup');
  let cache: FilesCache | null = null;
  let writer: PackWriter | null = null;
  let treeWriter: PackWriter | null = null;
  try {
    // Chosen under the lock: a rotate (exclusive) cannot renew the read key while this run seals to it.
    const packKeys = { readPublic: await backupReadKey(store, keys, o.onWarning), dedupKey: keys.dedupKey };
    const index = await RepoIndex.load(store, dedup);
    cache = await FilesCache.load(keys.id, source);
    // Trees go to packs of their own (restic's rule): a damaged data pack then costs the files
    // that use it, never the listing of a snapshot, and reading trees reads no content.
    writer = new PackWriter(store, packKeys, dedup, index);
    treeWriter = new PackWriter(store, packKeys, dedup, index);
    const r = { entries: 0, files: 0, bytes: 0, bytesRead: 0, skipped: 0, changed: 0 };
    const buf = chunkBuffer();
    const data = writer;
    const files = cache;

    // The tree, cut into chunks as it is written, like any content: what did not change since last time is stored once.
    const treeIds: string[] = [];
    const tw = treeWriter;
    const tree = new TreeChunker(dedup.gear, async (chunk) => {
      const id = dedup.chunkId(chunk);
      await tw.add(id, BlobType.Tree, chunk, true);
      treeIds.push(id.toString('hex'));
    });
    /** Entries in walk order, with the ids of their chunks (some still being computed) and, for the cache, what the file was. */
    const ahead: Array<{ t: TreeEntry; ids: Array<Buffer | Promise<Buffer>>; st: FileState | null }> = [];
    const complete = async () => {
      const { t, ids, st } = ahead.shift()!;
      t.chunks = await Promise.all(ids);
      await tree.add(t);
      if (st) files.record(t.path, st, t.chunks);
    };

    // Only files the cache does not vouch for are read, so only those are read ahead (a cold
    // page cache on a night with nothing changed must not be filled with the whole export).
    const warn = (m: string) => o.onWarning?.(m);
    const walked = walkDirectory(o.dir, warn, o.skipped, (p, st) => !files.unchanged(p, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino }));
    // A repository inside DIR is never part of its own snapshots (each night would store the last one's packs again).
    const repoPath = store.localDir === undefined ? null : await entryPathInside(o.dir, store.localDir);
    if (repoPath !== null) warn(`the repository ${repoPath} is inside ${o.dir}: it is left out of the snapshot`);
    const entries = repoPath === null ? walked : exceptEntries(walked, (p) => p === repoPath || p.startsWith(`${repoPath}/`));
    for await (const e of entries) {
      o.signal?.throwIfAborted();
      const t: TreeEntry = { type: e.type, path: e.path, mode: e.mode, mtimeNs: e.mtimeNs, size: 0, target: e.target ?? '', chunks: [] };
      const item: (typeof ahead)[number] = { t, ids: [], st: null };
      if (e.type === EntryType.File) {
        const st = { size: e.stat!.size, mtimeNs: e.mtimeNs, ctimeNs: e.stat!.ctimeNs, ino: e.stat!.ino };
        const cached = files.lookup(e.path, st);
        if (cached && cached.every((id) => data.has(id))) {
          item.ids = cached;
          t.size = Number(st.size);
          item.st = st;
        } else {
          const content = await openContent(e, r, o.onWarning);
          if (!content) continue;
          try {
            if (content.compressible) {
              // Content-defined cuts (chunker.ts), compressed where that pays.
              await chunkStream(dedup.gear, (dst) => content.read(dst), async (chunk) => {
                const id = dedup.chunkId(chunk);
                await data.add(id, BlobType.Data, chunk, true);
                item.ids.push(id);
                t.size += chunk.length;
              }, buf);
            } else {
              // Media, stored as is in fixed pieces: read straight into the pack, hashed on the thread pool.
              for (;;) {
                const room = await data.reserve();
                const n = await content.read(room);
                if (n === 0) break;
                item.ids.push(data.addRead(n, BlobType.Data));
                t.size += n;
                if (n < room.length) break;
              }
            }
          } finally {
            await content.close();
          }
          r.bytesRead += t.size;
          if (content.changed()) {
            r.changed++;
            o.onWarning?.(`${e.path} changed while it was being read; stored as read`);
          } else item.st = st;
        }
        r.files++;
        r.bytes += t.size;
      }
      r.entries++;
      ahead.push(item);
      while (ahead.length > ENTRIES_AHEAD) await complete();
      o.onProgress?.({ bytes: r.bytesRead, entries: r.entries, path: e.path });
    }
    while (ahead.length) await complete();
    await tree.finish();
    await writer.finish();
    await treeWriter.finish();
    o.signal?.throwIfAborted();

    const before = writer.storedBytes + treeWriter.storedBytes;
    const newChunks = writer.newChunks + treeWriter.newChunks;
    const [snapshot, snapshotBytes] = await writeSnapshot(store, dedup, {
      time: new Date().toISOString(),
      host: hostname(),
      source,
      tree: treeIds,
      stats: { entries: r.entries, files: r.files, bytes: r.bytes, newChunks, storedBytes: before },
    });
    // The snapshot is committed: a cache that cannot be saved only means more reading next time.
    await cache.save().catch((err: unknown) => o.onWarning?.(`the files cache was not saved (the next backup reads every file again): ${(err as Error).message}`));
    return { snapshot, ...r, newChunks, storedBytes: before + snapshotBytes, packs: writer.packs + treeWriter.packs };
  } finally {
    cache?.discard();
    await writer?.close();
    await treeWriter?.close();
    await lock.release();
  }
}
