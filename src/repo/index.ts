// The index (backupctl-repository(5) "INDEX"): which pack holds each chunk, where, how long.
// Index files are sealed to the dedup key, so a backup machine can tell which chunks exist (and
// store nothing twice) without reading any pack. The index in memory is rebuilt from the index
// files on every run: nothing local is authoritative.
import { randomBytes } from 'node:crypto';
import { corruptError } from '../errors.js';
import { Codec } from '../archive/format.js';
import type { Store, StoredFile } from '../store/store.js';
import { readInTurn } from '../store/read-ahead.js';
import { INDEX_SLOT, type DedupKeys } from './keys.js';
import { seal, SealedFile } from './sealed.js';

export const enum BlobType {
  Data = 0,
  Tree = 1,
}

export interface BlobEntry {
  /** Chunk id: HMAC-SHA-256 of the plaintext under the chunk-id key (32 bytes). */
  id: Buffer;
  /** Where the stored bytes are in the pack's plaintext, and how many. */
  offset: number;
  length: number;
  /** Plaintext length once decoded. */
  rawLength: number;
  type: BlobType;
  codec: Codec;
}

/** id(32) offset(u32) length(u32) rawLength(u32) type(u8) codec(u8). */
export const BLOB_ENTRY_LEN = 46;
const INDEX_MAGIC = Buffer.from('BKRIDX1\n', 'latin1');

export function encodeBlobEntries(entries: readonly BlobEntry[]): Buffer {
  const b = Buffer.alloc(entries.length * BLOB_ENTRY_LEN);
  entries.forEach((e, i) => {
    const o = i * BLOB_ENTRY_LEN;
    e.id.copy(b, o);
    b.writeUInt32BE(e.offset, o + 32);
    b.writeUInt32BE(e.length, o + 36);
    b.writeUInt32BE(e.rawLength, o + 40);
    b[o + 44] = e.type;
    b[o + 45] = e.codec;
  });
  return b;
}

/** Is entry `i` of an encoded list well-formed (a known type and codec)? */
function checkEntry(b: Uint8Array, i: number, where: string): void {
  const o = i * BLOB_ENTRY_LEN;
  if (b[o + 44]! > BlobType.Tree || b[o + 45]! > Codec.Deflate) throw corruptError(`${where}: bad chunk entry ${i}`);
}

export function decodeBlobEntries(b: Buffer, count: number, where: string): BlobEntry[] {
  if (b.length < count * BLOB_ENTRY_LEN) throw corruptError(`${where}: truncated list of chunks`);
  const out: BlobEntry[] = [];
  for (let i = 0; i < count; i++) {
    checkEntry(b, i, where);
    const o = i * BLOB_ENTRY_LEN;
    out.push({ id: Buffer.from(b.subarray(o, o + 32)), offset: b.readUInt32BE(o + 32), length: b.readUInt32BE(o + 36), rawLength: b.readUInt32BE(o + 40), type: b[o + 44]!, codec: b[o + 45]! });
  }
  return out;
}

export interface PackEntries {
  pack: string;
  /** As objects, or already encoded (BLOB_ENTRY_LEN bytes each). */
  entries: BlobEntry[] | Buffer;
}

/** An index file's plaintext: the magic, then per pack its 16-byte id, a u32 count and the entries. */
export function encodeIndexFile(packs: readonly PackEntries[]): Buffer {
  const parts: Buffer[] = [INDEX_MAGIC];
  for (const p of packs) {
    const list = Buffer.isBuffer(p.entries) ? p.entries : encodeBlobEntries(p.entries);
    const head = Buffer.alloc(20);
    Buffer.from(p.pack, 'hex').copy(head, 0);
    head.writeUInt32BE(list.length / BLOB_ENTRY_LEN, 16);
    parts.push(head, list);
  }
  return Buffer.concat(parts);
}

/** Each group of an index file's plaintext: its pack id and its entries, still encoded (checked). */
function eachGroup(b: Buffer, where: string, f: (pack: string, entries: Buffer, count: number) => void): void {
  if (!b.subarray(0, 8).equals(INDEX_MAGIC)) throw corruptError(`${where} is not an index file`);
  for (let o = 8; o < b.length; ) {
    if (o + 20 > b.length) throw corruptError(`${where}: truncated`);
    const pack = b.subarray(o, o + 16).toString('hex');
    const count = b.readUInt32BE(o + 16);
    o += 20;
    const entries = b.subarray(o, o + count * BLOB_ENTRY_LEN);
    if (entries.length < count * BLOB_ENTRY_LEN) throw corruptError(`${where}: truncated list of chunks`);
    for (let i = 0; i < count; i++) checkEntry(entries, i, where);
    f(pack, entries, count);
    o += count * BLOB_ENTRY_LEN;
  }
}

export function decodeIndexFile(b: Buffer, where: string): PackEntries[] {
  const out: PackEntries[] = [];
  eachGroup(b, where, (pack, entries, count) => out.push({ pack, entries: decodeBlobEntries(entries, count, where) }));
  return out;
}

/** Seal and write a new index file; returns its size. */
export async function writeIndexFile(store: Store, dedup: DedupKeys, packs: readonly PackEntries[], name = randomBytes(16).toString('hex')): Promise<number> {
  const sealed = seal(encodeIndexFile(packs), [dedup.recipient(INDEX_SLOT)]);
  await store.write(`index/${name}`, sealed);
  return sealed.reduce((a, b) => a + b.length, 0);
}

export interface Location extends BlobEntry {
  pack: string;
}

/** Where a chunk is, without its id (no buffer made per chunk). */
export type Spot = Omit<Location, 'id'>;

/**
 * Chunk id → location, from every index file of the repository. Held in typed arrays (32 bytes
 * of id and 18 of location per chunk, and an open-addressing table of rows), not a Map and an
 * object per chunk: a repository of 100,000 small files holds 100,000 of them, and the index is
 * the one thing a backup keeps that grows with the repository (with its distinct chunks, not
 * its snapshots).
 */
export class RepoIndex {
  private n = 0;
  private ids = new Uint8Array(32 * 1024);
  /** Per row: pack number, offset, length, rawLength. */
  private loc = new Uint32Array(4 * 1024);
  /** Per row: type << 8 | codec. */
  private kind = new Uint16Array(1024);
  /** Row + 1 per slot (0: empty); a power of two at least twice the rows' capacity. */
  private table = new Int32Array(2048);
  private readonly packNames: string[] = [];
  private readonly packNumber = new Map<string, number>();
  /** The index files read, by name, with the packs each one names. */
  readonly files = new Map<string, string[]>();
  /** Chunks indexed more than once (two backups at once stored the same new chunk): prune drops the copies. */
  duplicates = 0;

  /** The slot of `id` (bytes [at, at+32) of `b`): its row's, or the empty one where it would go. Ids are HMAC outputs: their first bytes are a good hash. */
  private slot(b: Uint8Array, at: number): number {
    const mask = this.table.length - 1;
    let s = ((b[at]! << 24) | (b[at + 1]! << 16) | (b[at + 2]! << 8) | b[at + 3]!) & mask;
    for (;;) {
      const r = this.table[s]!;
      if (r === 0) return s;
      const o = (r - 1) * 32;
      let same = true;
      for (let k = 0; k < 32; k++) {
        if (this.ids[o + k] !== b[at + k]) {
          same = false;
          break;
        }
      }
      if (same) return s;
      s = (s + 1) & mask;
    }
  }

  private row(id: Uint8Array): number {
    return this.table[this.slot(id, 0)]! - 1;
  }

  has(id: Uint8Array): boolean {
    return this.row(id) >= 0;
  }

  private at(r: number): Location {
    const l = this.loc;
    return {
      id: Buffer.from(this.ids.subarray(r * 32, r * 32 + 32)), pack: this.packNames[l[4 * r]!]!, offset: l[4 * r + 1]!, length: l[4 * r + 2]!,
      rawLength: l[4 * r + 3]!, type: (this.kind[r]! >> 8) as BlobType, codec: (this.kind[r]! & 0xff) as Codec,
    };
  }

  spot(id: Uint8Array): Spot | undefined {
    const r = this.row(id);
    if (r < 0) return undefined;
    const l = this.loc;
    return { pack: this.packNames[l[4 * r]!]!, offset: l[4 * r + 1]!, length: l[4 * r + 2]!, rawLength: l[4 * r + 3]!, type: (this.kind[r]! >> 8) as BlobType, codec: (this.kind[r]! & 0xff) as Codec };
  }

  get(id: Uint8Array): Location | undefined {
    const r = this.row(id);
    return r < 0 ? undefined : this.at(r);
  }

  private grow(): void {
    const cap = this.kind.length * 2;
    const ids = new Uint8Array(32 * cap);
    ids.set(this.ids);
    const loc = new Uint32Array(4 * cap);
    loc.set(this.loc);
    const kind = new Uint16Array(cap);
    kind.set(this.kind);
    this.ids = ids;
    this.loc = loc;
    this.kind = kind;
    this.table = new Int32Array(2 * cap);
    for (let r = 0; r < this.n; r++) this.table[this.slot(this.ids, r * 32)] = r + 1;
  }

  private packNo(pack: string): number {
    let p = this.packNumber.get(pack);
    if (p === undefined) {
      p = this.packNames.push(pack) - 1;
      this.packNumber.set(pack, p);
    }
    return p;
  }

  /** Add entry `i` of an encoded list (46 bytes each, as in packs and index files) in `pack`. */
  private addAt(p: number, b: Uint8Array, i: number): void {
    const o = i * BLOB_ENTRY_LEN;
    if (this.n === this.kind.length) this.grow();
    // The first location seen wins; a duplicate is as good as any.
    const s = this.slot(b, o);
    if (this.table[s] !== 0) {
      this.duplicates++;
      return;
    }
    const r = this.n++;
    this.ids.set(b.subarray(o, o + 32), r * 32);
    const v = new DataView(b.buffer, b.byteOffset + o + 32, 12);
    this.loc.set([p, v.getUint32(0), v.getUint32(4), v.getUint32(8)], 4 * r);
    this.kind[r] = (b[o + 44]! << 8) | b[o + 45]!;
    this.table[s] = r + 1;
  }

  /** Add `count` encoded entries of `pack`. */
  addEncoded(pack: string, entries: Uint8Array, count: number): void {
    const p = this.packNo(pack);
    for (let i = 0; i < count; i++) this.addAt(p, entries, i);
  }

  add(pack: string, e: BlobEntry): void {
    this.addEncoded(pack, encodeBlobEntries([e]), 1);
  }

  get size(): number {
    return this.n;
  }

  *locations(): Generator<Location> {
    for (let r = 0; r < this.n; r++) yield this.at(r);
  }

  /** Every pack some index file names. */
  packs(): Set<string> {
    const s = new Set<string>();
    for (const ps of this.files.values()) for (const p of ps) s.add(p);
    return s;
  }

  static async load(store: Store, dedup: DedupKeys): Promise<RepoIndex> {
    const idx = new RepoIndex();
    await idx.read(store, dedup, await store.list('index'));
    return idx;
  }

  /** Read the index files of `listed` that are not read yet; returns their names. */
  async read(store: Store, dedup: DedupKeys, listed: readonly StoredFile[]): Promise<string[]> {
    const identity = dedup.identity(INDEX_SLOT);
    const added: string[] = [];
    const name = (f: StoredFile) => f.path.slice('index/'.length);
    await readInTurn(store, listed.filter((f) => !this.files.has(name(f))), async (f, bytes) => {
      if (!bytes) return; // pruned between the listing and the read: no longer part of the index
      const file = await SealedFile.fromBytes(f.path, bytes);
      await file.unlock(identity);
      const plain = await file.readAll();
      const packs: string[] = [];
      eachGroup(plain, f.path, (pack, entries, count) => {
        packs.push(pack);
        this.addEncoded(pack, entries, count);
      });
      this.files.set(name(f), packs);
      added.push(name(f));
    });
    return added;
  }
}
