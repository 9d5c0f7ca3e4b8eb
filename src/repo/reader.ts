// Reading a repository with the read key: chunks by id (from whichever pack the index names,
// opened once each), and snapshot trees.
import { setTimeout as sleep } from 'node:timers/promises';
import { corruptError } from '../errors.js';
import type { Identity } from '../keys/types.js';
import type { Store } from '../store/store.js';
import { RepoIndex, type Location, type Spot } from './index.js';
import { DedupKeys, packIdentity, type RepoKeys } from './keys.js';
import { PackReader, packIdOf } from './pack.js';
import type { Snapshot } from './snapshot.js';
import { decodeTree, type TreeEntry } from './tree.js';

export class RepoReader {
  private readonly open = new Map<string, Promise<PackReader>>();
  /** Whether place() has listed again. */
  private relisted = false;
  /** Every generation of the read key (a pack is sealed to the one current when it was written). */
  private readonly identity: Identity;

  private constructor(
    readonly store: Store,
    readonly keys: RepoKeys,
    readonly dedup: DedupKeys,
    readonly index: RepoIndex,
    /** Pack id → size, from one listing of data/. */
    readonly packSizes: Map<string, number>,
  ) {
    this.identity = packIdentity(keys);
  }

  static async open(store: Store, keys: RepoKeys): Promise<RepoReader> {
    const dedup = new DedupKeys(keys.dedupKey);
    const index = await RepoIndex.load(store, dedup);
    const sizes = new Map((await store.list('data')).map((f) => [packIdOf(f.path), f.size] as const));
    return new RepoReader(store, keys, dedup, index, sizes);
  }

  /**
   * List index/ and data/ again, once the store's listing lag has passed since `since` (when the
   * snapshots were listed): what a backup that had just finished wrote, and the first listings
   * left out, is read (its index files, its packs' sizes). A snapshot is written after its index
   * files and packs, so those of a snapshot listed before `since` are there now unless lost.
   * Returns how many index files and packs were found.
   */
  async relist(since: number, signal?: AbortSignal): Promise<{ index: number; packs: number }> {
    const wait = since + (this.store.listingLagMs ?? 0) - Date.now();
    if (wait > 0) await sleep(wait, undefined, { signal });
    const index = (await this.index.read(this.store, this.dedup, await this.store.listAgain('index'))).length;
    let packs = 0;
    for (const f of await this.store.listAgain('data')) {
      const id = packIdOf(f.path);
      if (!this.packSizes.has(id)) packs++;
      this.packSizes.set(id, f.size);
    }
    return { index, packs };
  }

  /** Is chunk `id` in no index read, or in a pack not listed? */
  private unlisted(id: Uint8Array): boolean {
    const loc = this.index.spot(id);
    return !loc || !this.packSizes.has(loc.pack);
  }

  /**
   * Before reading chunks `ids` of snapshots listed at `since`: when the listings place one of
   * them nowhere, list again (relist), once for this reader; what is still not placed after that
   * is damage, which reading it reports.
   */
  async place(ids: Iterable<Uint8Array>, since: number, signal?: AbortSignal): Promise<void> {
    if (this.relisted) return;
    for (const id of ids) {
      if (!this.unlisted(id)) continue;
      this.relisted = true;
      await this.relist(since, signal);
      return;
    }
  }

  /** Where chunk `id` is; a corrupt error naming `what` when no index or no pack has it. */
  locate(id: Buffer, what: string): Location {
    return { id, ...this.spot(id, what) };
  }

  /** The same without the id. */
  spot(id: Uint8Array, what: string): Spot {
    const loc = this.index.spot(id);
    const hex = () => Buffer.from(id).toString('hex');
    if (!loc) throw corruptError(`${what}: chunk ${hex().slice(0, 16)} is in no index (the repository lost data)`, { chunk: hex() });
    if (!this.packSizes.has(loc.pack)) throw corruptError(`${what}: pack ${loc.pack} is missing`, { pack: loc.pack });
    return loc;
  }

  pack(id: string): Promise<PackReader> {
    let p = this.open.get(id);
    if (!p) {
      p = PackReader.open(this.store, id, this.packSizes.get(id)!, this.identity);
      this.open.set(id, p);
    }
    return p;
  }

  /** The plaintext of chunk `id` (authenticated: its pack's segments and its keyed id). */
  async chunk(id: Buffer, what: string): Promise<Buffer> {
    const loc = this.locate(id, what);
    return (await this.pack(loc.pack)).blob(loc, this.dedup);
  }

  /** The snapshot's tree, its chunks read with one read per pack (a request each was a round trip on Drive). */
  async tree(s: Snapshot): Promise<TreeEntry[]> {
    const locs = s.tree.map((hex) => this.locate(Buffer.from(hex, 'hex'), `the tree of snapshot ${s.id}`));
    const parts = new Map<Location, Buffer>();
    for (const pack of new Set(locs.map((l) => l.pack))) {
      const here = locs.filter((l) => l.pack === pack);
      (await (await this.pack(pack)).blobs(here, this.dedup)).forEach((p, i) => parts.set(here[i]!, p));
    }
    return decodeTree(Buffer.concat(locs.map((l) => parts.get(l)!)));
  }
}
