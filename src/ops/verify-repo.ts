// `verify --repo REPO [SNAPSHOT] [--read-data]`: every snapshot's tree readable and every chunk
// it names in the index and in a pack that is there; with --read-data, every pack decrypted and
// every chunk checked against its keyed id. Damage is named: the packs, and the snapshots and
// files that lose data through them.
import { BackupctlError } from '../errors.js';
import { EntryType } from '../archive/format.js';
import type { RepoReader } from '../repo/reader.js';
import { packIdOf } from '../repo/pack.js';
import type { Snapshot } from '../repo/snapshot.js';

export interface Damage {
  /** A pack (or "index" for a chunk no index names). */
  pack: string;
  problem: string;
}

export interface Affected {
  snapshot: string;
  /** Paths that cannot be restored whole ("(tree)" when the snapshot's tree itself is lost). */
  paths: string[];
}

export interface VerifyRepoResult {
  snapshots: number;
  files: number;
  chunks: number;
  packsRead: number;
  bytesRead: number;
  damaged: Damage[];
  affected: Affected[];
  /** Packs no index names (a killed backup's leftovers; prune removes them). */
  unindexed: number;
  /** Chunks stored in more than one pack (prune keeps one). */
  duplicates: number;
  /** Index files and packs that only a second listing showed (a backup that had just finished). */
  listedLate: { index: number; packs: number };
}

export async function verifyRepository(
  reader: RepoReader, snapshots: Snapshot[], readData: boolean, listedAt: number, signal?: AbortSignal, onProgress?: (p: { bytes: number; entries: number }) => void,
): Promise<VerifyRepoResult> {
  const damaged = new Map<string, string>();
  let packsRead = 0;
  let bytesRead = 0;
  const read = new Set<string>();
  const readPacks = async (packs: Iterable<string>) => {
    for (const pack of [...packs].sort()) {
      signal?.throwIfAborted();
      read.add(pack);
      if (!reader.packSizes.has(pack)) {
        damaged.set(pack, 'missing');
        continue;
      }
      try {
        const p = await reader.pack(pack);
        const own = new Map((await p.entries()).map((e) => [e.id.toString('latin1'), e] as const));
        for (const e of own.values()) {
          await p.blob(e, reader.dedup);
          bytesRead += e.rawLength;
        }
        // Every chunk the index places in this pack must be there, where the index says.
        for (const id of own.keys()) {
          const loc = reader.index.get(Buffer.from(id, 'latin1'));
          if (loc?.pack === pack && (loc.offset !== own.get(id)!.offset || loc.length !== own.get(id)!.length)) throw new Error('the index does not match the pack');
        }
      } catch (err) {
        damaged.set(pack, err instanceof BackupctlError || err instanceof Error ? err.message : String(err));
      }
      packsRead++;
      onProgress?.({ bytes: bytesRead, entries: packsRead });
    }
  };
  if (readData) await readPacks(reader.index.packs());

  let chunks = 0;
  const seen = new Set<string>();
  /** Why a chunk cannot be read, or null when it can (as far as this verify looked). */
  const problem = (id: Buffer): string | null => {
    const loc = reader.index.get(id);
    if (!loc) {
      damaged.set('index', 'chunks that snapshots need are in no index');
      return 'index';
    }
    if (!reader.packSizes.has(loc.pack)) {
      damaged.set(loc.pack, 'missing');
      return loc.pack;
    }
    return damaged.has(loc.pack) ? loc.pack : null;
  };
  /** A snapshot's files, and the paths that cannot be restored whole. */
  const check = async (s: Snapshot): Promise<{ files: number; lost: string[] }> => {
    signal?.throwIfAborted();
    let files = 0;
    const lost: string[] = [];
    const treeDamage = s.tree.map((h) => problem(Buffer.from(h, 'hex'))).find((p) => p !== null);
    let tree;
    if (!treeDamage) {
      try {
        tree = await reader.tree(s);
      } catch (err) {
        const d = (err as BackupctlError).detail;
        const file = typeof d?.file === 'string' && d.file.startsWith('data/') ? packIdOf(d.file) : null;
        damaged.set(typeof d?.pack === 'string' ? d.pack : file ?? 'tree', (err as Error).message);
      }
    }
    if (!tree) lost.push('(tree)');
    for (const e of tree ?? []) {
      if (e.type !== EntryType.File) continue;
      files++;
      for (const id of e.chunks) {
        const k = id.toString('latin1');
        if (!seen.has(k)) {
          seen.add(k);
          chunks++;
        }
        if (problem(id) !== null) {
          lost.push(e.path);
          break;
        }
      }
    }
    return { files, lost };
  };
  const results = new Map<Snapshot, { files: number; lost: string[] }>();
  for (const s of snapshots) results.set(s, await check(s));

  // A chunk in no index, or in a pack not listed, may be a backup's that finished as this verify
  // listed (or whose files Drive did not list yet): listed again once, only what is still not
  // there is damage, and the snapshots that lost something are checked again.
  const unlisted = () => [...damaged].filter(([pack, p]) => pack === 'index' || p === 'missing').map(([pack]) => pack);
  let listedLate = { index: 0, packs: 0 };
  const again = unlisted();
  if (again.length) {
    listedLate = await reader.relist(listedAt, signal);
    if (listedLate.index + listedLate.packs > 0) {
      for (const pack of again) damaged.delete(pack);
      if (readData) await readPacks([...[...reader.index.packs()].filter((p) => !read.has(p)), ...again.filter((p) => p !== 'index')]);
      for (const [s, r] of results) if (r.lost.length) results.set(s, await check(s));
    }
  }
  const affected: Affected[] = [...results].filter(([, r]) => r.lost.length).map(([s, r]) => ({ snapshot: s.id, paths: r.lost }));
  const indexed = reader.index.packs();
  const unindexed = [...reader.packSizes.keys()].filter((p) => !indexed.has(p)).length;
  return {
    snapshots: snapshots.length, files: [...results.values()].reduce((a, r) => a + r.files, 0), chunks, packsRead, bytesRead,
    damaged: [...damaged].map(([pack, p]) => ({ pack, problem: p })), affected, unindexed, duplicates: reader.index.duplicates, listedLate,
  };
}
