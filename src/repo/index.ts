// The index (backupctl-repository(5) "INDEX"): which pack holds each chunk, where, how long.
// Index files are sealed to the dedup key, so a backup machine can tell which chunks exist (and
// store nothing twice) without reading any pack. The index in memory is rebuilt from the index
// files on every run: nothing local is authoritative.
import { randomBytes } from 'node:crypto';
import { corruptError } from '../errors.js';
import { Codec } from '../archive/format.js';
import type { Store } from '../store/store.js';
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

export function decodeBlobEntries(b: Buffer, count: number, where: string): BlobEntry[] {
  if (b.length < count * BLOB_ENTRY_LEN) throw corruptError(`${where}: truncated list of chunks`);
  const out: BlobEntry[] = [];
  for (let i = 0; i < count; i++) {
    const o = i * BLOB_ENTRY_LEN;
    const type = b[o + 44]!;
    const codec = b[o + 45]!;
    if (type > BlobType.Tree || codec > Codec.Deflate) throw corruptError(`${where}: bad chunk entry ${i}`);
    out.push({ id: Buffer.from(b.subarray(o, o + 32)), offset: b.readUInt32BE(o + 32), length: b.readUInt32BE(o + 36), rawLength: b.readUInt32BE(o + 40), type, codec });
  }
  return out;
}

export interface PackEntries {
  pack: string;
  entries: BlobEntry[];
}

/** An index file's plaintext: the magic, then per pack its 16-byte id, a u32 count and the entries. */
export function encodeIndexFile(packs: readonly PackEntries[]): Buffer {
  const parts: Buffer[] = [INDEX_MAGIC];
  for (const p of packs) {
    const head = Buffer.alloc(20);
    Buffer.from(p.pack, 'hex').copy(head, 0);
    head.writeUInt32BE(p.entries.length, 16);
    parts.push(head, encodeBlobEntries(p.entries));
  }
  return Buffer.concat(parts);
}

export function decodeIndexFile(b: Buffer, where: string): PackEntries[] {
  if (!b.subarray(0, 8).equals(INDEX_MAGIC)) throw corruptError(`${where} is not an index file`);
  const out: PackEntries[] = [];
  for (let o = 8; o < b.length; ) {
    if (o + 20 > b.length) throw corruptError(`${where}: truncated`);
    const pack = b.subarray(o, o + 16).toString('hex');
    const count = b.readUInt32BE(o + 16);
    o += 20;
    out.push({ pack, entries: decodeBlobEntries(b.subarray(o, o + count * BLOB_ENTRY_LEN), count, where) });
    o += count * BLOB_ENTRY_LEN;
  }
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

/**
 * Chunk id → location, from every index file of the repository. Kept as columns of numbers
 * beside one map from id to row, not an object per chunk: a backup of 100,000 small files
 * holds 100,000 of them.
 */
export class RepoIndex {
  private readonly row = new Map<string, number>();
  private readonly packNames: string[] = [];
  private readonly packNumber = new Map<string, number>();
  private readonly pack: number[] = [];
  private readonly offset: number[] = [];
  private readonly length: number[] = [];
  private readonly rawLength: number[] = [];
  /** type << 8 | codec */
  private readonly kind: number[] = [];
  /** The index files read, by name, with the packs each one names. */
  readonly files = new Map<string, string[]>();
  /** Chunks indexed more than once (two backups at once stored the same new chunk): prune drops the copies. */
  duplicates = 0;

  /** Keys are the 32 id bytes as a latin1 string (half the memory of hex). */
  has(key: string): boolean {
    return this.row.has(key);
  }

  private at(key: string, r: number): Location {
    return {
      id: Buffer.from(key, 'latin1'), pack: this.packNames[this.pack[r]!]!, offset: this.offset[r]!, length: this.length[r]!,
      rawLength: this.rawLength[r]!, type: (this.kind[r]! >> 8) as BlobType, codec: (this.kind[r]! & 0xff) as Codec,
    };
  }

  get(id: Buffer): Location | undefined {
    const key = id.toString('latin1');
    const r = this.row.get(key);
    return r === undefined ? undefined : this.at(key, r);
  }

  add(pack: string, e: BlobEntry): void {
    // The first location seen wins; a duplicate is as good as any.
    const k = e.id.toString('latin1');
    if (this.row.has(k)) {
      this.duplicates++;
      return;
    }
    let p = this.packNumber.get(pack);
    if (p === undefined) {
      p = this.packNames.push(pack) - 1;
      this.packNumber.set(pack, p);
    }
    this.row.set(k, this.pack.push(p) - 1);
    this.offset.push(e.offset);
    this.length.push(e.length);
    this.rawLength.push(e.rawLength);
    this.kind.push((e.type << 8) | e.codec);
  }

  get size(): number {
    return this.row.size;
  }

  *locations(): Generator<Location> {
    for (const [key, r] of this.row) yield this.at(key, r);
  }

  /** Every pack some index file names. */
  packs(): Set<string> {
    const s = new Set<string>();
    for (const ps of this.files.values()) for (const p of ps) s.add(p);
    return s;
  }

  static async load(store: Store, dedup: DedupKeys): Promise<RepoIndex> {
    const idx = new RepoIndex();
    const identity = dedup.identity(INDEX_SLOT);
    for (const f of await store.list('index')) {
      const name = f.path.slice('index/'.length);
      let packs: PackEntries[];
      try {
        const file = await SealedFile.fromBytes(f.path, await store.read(f.path));
        await file.unlock(identity);
        packs = decodeIndexFile(await file.readAll(), f.path);
      } catch (err) {
        // A file pruned between the listing and the read is simply no longer part of the index.
        if ((err as { detail?: { missing?: string } }).detail?.missing === f.path) continue;
        throw err;
      }
      idx.files.set(name, packs.map((p) => p.pack));
      for (const p of packs) for (const e of p.entries) idx.add(p.pack, e);
    }
    return idx;
  }
}
