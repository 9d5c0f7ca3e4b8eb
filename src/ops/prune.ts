// `forget` and `prune` (backupctl-repository(5) "FORGET AND PRUNE").
// forget deletes snapshot files only: it needs the dedup key (a backup machine may run it).
// prune deletes the data no snapshot needs: it reads every tree, so it needs the read key (an
// unlock), and it holds the exclusive lock, so no backup runs meanwhile. restic's order, so that
// a prune killed at any point leaves a consistent repository: (1) repack the live chunks of
// mostly-dead packs into new packs, each with its index file; (2) write one new index of every
// pack kept; (3) delete the index files read at the start; (4) only then delete packs, which no
// index file names any more; (5) remove leftovers of killed writes.
import { BlobType, RepoIndex, writeIndexFile, type BlobEntry, type PackEntries } from '../repo/index.js';
import { lockRepository } from '../repo/lock.js';
import { publishedReadKey } from '../repo/read-key.js';
import { PackWriter, packIdOf, packPath } from '../repo/pack.js';
import { applyPolicy, type KeepPolicy } from '../repo/policy.js';
import { RepoReader } from '../repo/reader.js';
import { listSnapshots, type Snapshot } from '../repo/snapshot.js';
import { DedupKeys, type MachineKeys, type RepoKeys } from '../repo/keys.js';
import type { Store } from '../store/store.js';

export interface ForgetResult {
  keep: Array<{ snapshot: Snapshot; reasons: string[] }>;
  remove: Snapshot[];
}

export async function forget(store: Store, keys: MachineKeys, policy: KeepPolicy, dryRun: boolean): Promise<ForgetResult> {
  const all = await listSnapshots(store, new DedupKeys(keys.dedupKey));
  const kept = applyPolicy(all, policy);
  const res: ForgetResult = {
    keep: all.filter((s) => kept.has(s.id)).map((s) => ({ snapshot: s, reasons: kept.get(s.id)! })),
    remove: all.filter((s) => !kept.has(s.id)),
  };
  if (!dryRun) for (const s of res.remove) await store.delete(`snapshots/${s.id}`);
  return res;
}

export interface PruneResult {
  packsDeleted: number;
  packsRepacked: number;
  packsKept: number;
  bytesFreed: number;
  /** Bytes written by repacking (new packs and their index files) and the new index. */
  bytesWritten: number;
  leftoversRemoved: number;
}

/** A pack whose dead bytes are at least this share of it is repacked; below, it is kept as it is. */
const REPACK_DEAD_SHARE = 0.2;

export async function prune(store: Store, keys: RepoKeys, dryRun: boolean, signal?: AbortSignal): Promise<PruneResult> {
  const lock = await lockRepository(store, 'exclusive', 'prune');
  try {
    // Repacked chunks go to the published read key, as a backup's would (checked against the keys unlocked).
    const readKey = (await publishedReadKey(store, keys)).readPublic;
    const reader = await RepoReader.open(store, keys);
    const used = new Set<string>();
    for (const s of await listSnapshots(store, reader.dedup)) {
      for (const t of s.tree) used.add(Buffer.from(t, 'hex').toString('latin1'));
      for (const e of await reader.tree(s)) for (const c of e.chunks) used.add(c.toString('latin1'));
    }
    // Each pack's entries, as the index has them (one location per chunk: duplicates are dead).
    const byPack = new Map<string, BlobEntry[]>();
    const live = new Map<string, BlobEntry[]>();
    for (const pack of reader.index.packs()) byPack.set(pack, []);
    for (const loc of reader.index.locations()) {
      byPack.get(loc.pack)!.push(loc);
      if (used.has(loc.id.toString('latin1'))) live.set(loc.pack, [...(live.get(loc.pack) ?? []), loc]);
    }
    const sizeOf = (p: string) => reader.packSizes.get(p) ?? 0;
    const drop: string[] = [];
    const repack: string[] = [];
    const keep: PackEntries[] = [];
    for (const [pack, entries] of byPack) {
      if (!reader.packSizes.has(pack)) continue; // named by an index, but gone: nothing to keep
      const alive = live.get(pack) ?? [];
      const total = entries.reduce((a, e) => a + e.length, 0) || 1;
      const dead = 1 - alive.reduce((a, e) => a + e.length, 0) / total;
      if (alive.length === 0) drop.push(pack);
      else if (dead >= REPACK_DEAD_SHARE) repack.push(pack);
      else keep.push({ pack, entries: alive });
    }
    const indexed = reader.index.packs();
    const grace = store.orphanGraceMs ?? 0;
    const young = grace ? new Set((await store.list('data')).filter((f) => Date.now() - f.mtimeMs < grace).map((f) => packIdOf(f.path))) : new Set<string>();
    const orphans = [...reader.packSizes.keys()].filter((p) => !indexed.has(p) && !young.has(p));
    const leftovers = (await Promise.all(['data', 'index', 'snapshots', 'locks'].map((d) => store.leftovers(d)))).flat();
    const res: PruneResult = {
      packsDeleted: drop.length + orphans.length, packsRepacked: repack.length, packsKept: keep.length,
      bytesFreed: [...drop, ...orphans, ...repack].reduce((a, p) => a + sizeOf(p), 0), bytesWritten: 0, leftoversRemoved: leftovers.length,
    };
    if (dryRun) return res;

    // (1) Live chunks of repacked packs into new packs (each followed by its index file).
    const fresh = new RepoIndex();
    const writer = new PackWriter(store, { readPublic: readKey, dedupKey: keys.dedupKey }, reader.dedup, fresh);
    for (const pack of repack) {
      for (const e of live.get(pack)!) {
        signal?.throwIfAborted();
        if (writer.has(e.id)) continue;
        const plain = await reader.chunk(e.id, `pack ${pack}`);
        await writer.add(e.id, e.type, plain, e.type === BlobType.Tree || e.codec !== 0);
      }
    }
    await writer.finish();
    res.bytesWritten += writer.storedBytes;
    signal?.throwIfAborted();
    // (2) One index of the packs kept as they are.
    if (keep.length) res.bytesWritten += await writeIndexFile(store, reader.dedup, keep);
    // (3) The index files read at the start; (4) then the packs nothing names any more.
    for (const name of reader.index.files.keys()) await store.delete(`index/${name}`);
    for (const pack of [...drop, ...repack, ...orphans]) await store.delete(packPath(pack));
    // (5) Temporary files of killed writes: no other run holds a lock, so none is being written
    // (a lock being taken this instant fails to appear, and its run stops with an error).
    for (const f of leftovers) await store.delete(f.path);
    return res;
  } finally {
    await lock.release();
  }
}

