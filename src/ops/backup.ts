// `backup DIR --repo REPO`: one new snapshot, with what a backup machine holds (no secret, no
// touch). Unchanged files (files cache) are not read; changed ones are cut into chunks and only
// chunks the index does not know are stored. Written in this order, so that a run killed at any
// point leaves nothing referring to data that is not there: packs, each followed by its index
// file; the tree's packs; the snapshot file (the commit); the files cache.
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { EntryType } from '../archive/format.js';
import { SkipEntry } from '../archive/pack.js';
import { walkDirectory } from '../archive/walk.js';
import type { Store } from '../store/store.js';
import { chunkBuffer, chunkStream } from '../repo/chunker.js';
import { FilesCache } from '../repo/files-cache.js';
import { BlobType, RepoIndex } from '../repo/index.js';
import { DedupKeys, packRecipient, type MachineKeys } from '../repo/keys.js';
import { backupReadKey } from './repository.js';
import { lockRepository } from '../repo/lock.js';
import { PackWriter } from '../repo/pack.js';
import { writeSnapshot, type Snapshot } from '../repo/snapshot.js';
import { encodeEntry, type TreeEntry } from '../repo/tree.js';

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

export async function backup(o: BackupOptions): Promise<BackupResult> {
  const { store, keys } = o;
  const source = resolve(o.dir);
  const dedup = new DedupKeys(keys.dedupKey);
  const lock = await lockRepository(store, 'shared', 'backup');
  try {
    // Chosen under the lock: a rotate (exclusive) cannot renew the read key while this run seals to it.
    const readKey = packRecipient(await backupReadKey(store, keys, o.onWarning));
    const index = await RepoIndex.load(store, dedup);
    const cache = await FilesCache.load(keys.id, source);
    // Trees go to packs of their own (restic's rule): a damaged data pack then costs the files
    // that use it, never the listing of a snapshot, and reading trees reads no content.
    const writer = new PackWriter(store, readKey, dedup, index);
    const treeWriter = new PackWriter(store, readKey, dedup, index);
    const r = { entries: 0, files: 0, bytes: 0, bytesRead: 0, newChunks: 0, skipped: 0, changed: 0 };
    const tree: Buffer[] = [];
    const buf = chunkBuffer();

    /** Store `chunk` unless the repository has it; its id either way. */
    const put = async (chunk: Buffer, type: BlobType, compressible: boolean): Promise<Buffer> => {
      const id = dedup.chunkId(chunk);
      const w = type === BlobType.Tree ? treeWriter : writer;
      if (!w.has(id)) {
        await w.add(id, type, chunk, compressible);
        r.newChunks++;
      }
      return id;
    };

    // Only files the cache does not vouch for are read, so only those are read ahead (a cold
    // page cache on a night with nothing changed must not be filled with the whole export).
    const warn = (m: string) => o.onWarning?.(m);
    const entries = walkDirectory(o.dir, warn, o.skipped, (p, st) => !cache.unchanged(p, { size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino }));
    for await (const e of entries) {
      o.signal?.throwIfAborted();
      const t: TreeEntry = { type: e.type, path: e.path, mode: e.mode, mtimeNs: e.mtimeNs, size: 0, target: e.target ?? '', chunks: [] };
      if (e.type === EntryType.File) {
        const st = { size: e.stat!.size, mtimeNs: e.mtimeNs, ctimeNs: e.stat!.ctimeNs, ino: e.stat!.ino };
        const cached = cache.lookup(e.path, st);
        if (cached && cached.every((id) => writer.has(id))) {
          t.chunks = cached;
          t.size = Number(st.size);
          cache.record(e.path, st, cached);
        } else {
          let content;
          try {
            content = await e.open!();
          } catch (err) {
            if (!(err instanceof SkipEntry)) throw err;
            r.skipped++;
            o.onWarning?.(err.message);
            continue;
          }
          try {
            // Media (stored as is) in fixed pieces, everything else content-defined (chunker.ts).
            await chunkStream(content.compressible ? dedup.gear : null, (dst) => content.read(dst), async (chunk) => {
              t.chunks.push(await put(chunk, BlobType.Data, content.compressible));
              t.size += chunk.length;
            }, buf);
          } finally {
            await content.close();
          }
          r.bytesRead += t.size;
          if (content.changed()) {
            r.changed++;
            o.onWarning?.(`${e.path} changed while it was being read; stored as read`);
          } else cache.record(e.path, st, t.chunks);
        }
        r.files++;
        r.bytes += t.size;
      }
      r.entries++;
      tree.push(encodeEntry(t));
      o.onProgress?.({ bytes: r.bytesRead, entries: r.entries, path: e.path });
    }

    // The tree, cut into chunks like any content: what did not change since last time is stored once.
    const treeIds: string[] = [];
    const all = Buffer.concat(tree);
    let at = 0;
    await chunkStream(dedup.gear, (dst) => {
      const n = all.copy(dst, 0, at);
      at += n;
      return n;
    }, async (chunk) => {
      treeIds.push((await put(chunk, BlobType.Tree, true)).toString('hex'));
    }, buf);
    await writer.finish();
    await treeWriter.finish();
    o.signal?.throwIfAborted();

    const before = writer.storedBytes + treeWriter.storedBytes;
    const [snapshot, snapshotBytes] = await writeSnapshot(store, dedup, {
      time: new Date().toISOString(),
      host: hostname(),
      source,
      tree: treeIds,
      stats: { entries: r.entries, files: r.files, bytes: r.bytes, newChunks: r.newChunks, storedBytes: before },
    });
    // The snapshot is committed: a cache that cannot be saved only means more reading next time.
    await cache.save(source).catch((err: unknown) => o.onWarning?.(`the files cache was not saved (the next backup reads every file again): ${(err as Error).message}`));
    return { snapshot, ...r, storedBytes: before + snapshotBytes, packs: writer.packs + treeWriter.packs };
  } finally {
    await lock.release();
  }
}
