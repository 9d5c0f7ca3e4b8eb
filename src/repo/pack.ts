// Pack files (backupctl-repository(5) "PACKS"): new chunks, compressed where that pays, gathered
// into files of about PACK_TARGET bytes, each sealed whole to the read key and padded (Padmé) so
// that the storage sees neither how many chunks a pack holds nor how long any of them is. A pack
// carries its own list of blobs (readable with the read key) and every pack gets an index file
// (readable with the dedup key) once it is written: the pack first, its index after it, so an
// index never names a pack that is not there.
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { corruptError } from '../errors.js';
import { Codec } from '../archive/format.js';
import { decoder } from '../archive/records.js';
import type { Recipient } from '../keys/types.js';
import type { Store } from '../store/store.js';
import { seal, SealedFile } from './sealed.js';
import { BLOB_ENTRY_LEN, decodeBlobEntries, encodeBlobEntries, writeIndexFile, type BlobEntry, type BlobType, type RepoIndex } from './index.js';
import type { DedupKeys } from './keys.js';

/** Plaintext bytes a pack is closed at (tests make it small to get many packs). */
export function packTarget(): number {
  const v = Number(process.env.BACKUPCTL_REPO_PACK_SIZE);
  return Number.isInteger(v) && v > 0 ? v : 16 << 20;
}

const PACK_MAGIC = Buffer.from('BKRPACK\n', 'latin1');
const PACK_FOOTER_LEN = 16;

/** Padmé (Nikitin et al., PETS 2019): at most 12% more, and a length leaks O(log log L) bits. */
export function padme(len: number): number {
  if (len < 2) return len;
  const e = Math.floor(Math.log2(len));
  const s = Math.floor(Math.log2(e)) + 1;
  const mask = 2 ** (e - s) - 1;
  return Math.ceil(len / (mask + 1)) * (mask + 1);
}

export const packPath = (id: string) => `data/${id.slice(0, 2)}/${id}`;
export const packIdOf = (path: string) => path.slice(path.lastIndexOf('/') + 1);

const hasZstd = typeof zlib.zstdCompressSync === 'function';

/** A chunk as stored: compressed when that saves an eighth or more, else as it is. */
export function encodeBlob(plain: Buffer, compressible: boolean): { codec: Codec; data: Buffer } {
  if (compressible && plain.length >= 256) {
    const c = hasZstd
      ? zlib.zstdCompressSync(plain, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } })
      : zlib.deflateRawSync(plain, { level: 6 });
    if (c.length <= plain.length - (plain.length >> 3)) return { codec: hasZstd ? Codec.Zstd : Codec.Deflate, data: c };
  }
  return { codec: Codec.Stored, data: Buffer.from(plain) };
}

/** Gathers new blobs and writes a pack (and its index file) whenever PACK_TARGET is reached. */
export class PackWriter {
  private blobs: Buffer[] = [];
  private entries: BlobEntry[] = [];
  private size = 0;
  /** Ids waiting in the open pack: a chunk met twice in one run is stored once. */
  private pending = new Set<string>();
  packs = 0;
  storedBytes = 0;

  constructor(
    private readonly store: Store,
    private readonly readKey: Recipient,
    private readonly dedup: DedupKeys,
    private readonly index: RepoIndex,
    private readonly target = packTarget(),
  ) {}

  has(id: Buffer): boolean {
    const k = id.toString('latin1');
    return this.index.has(k) || this.pending.has(k);
  }

  /** Store a blob of `type`; `id` is its chunk id, `plain` its plaintext. Returns the bytes it added. */
  async add(id: Buffer, type: BlobType, plain: Buffer, compressible: boolean): Promise<number> {
    const { codec, data } = encodeBlob(plain, compressible);
    this.entries.push({ id, offset: this.size, length: data.length, rawLength: plain.length, type, codec });
    this.pending.add(id.toString('latin1'));
    this.blobs.push(data);
    this.size += data.length;
    if (this.size >= this.target) await this.flush();
    return data.length;
  }

  /** Write the open pack, then its index file; the index in memory learns it last. */
  async flush(): Promise<void> {
    if (this.entries.length === 0) return;
    const id = randomBytes(16).toString('hex');
    const list = encodeBlobEntries(this.entries);
    const used = this.size + list.length + PACK_FOOTER_LEN;
    const footer = Buffer.alloc(PACK_FOOTER_LEN);
    PACK_MAGIC.copy(footer, 0);
    footer.writeUInt32BE(this.entries.length, 8);
    footer.writeUInt32BE(this.size, 12);
    const plain = Buffer.concat([...this.blobs, list, Buffer.alloc(padme(used) - used), footer]);
    this.blobs = [];
    const sealed = seal(plain, [this.readKey]);
    await this.store.write(packPath(id), sealed);
    this.storedBytes += sealed.reduce((a, b) => a + b.length, 0);
    const entries = this.entries;
    this.entries = [];
    this.size = 0;
    this.storedBytes += await writeIndexFile(this.store, this.dedup, [{ pack: id, entries }]);
    for (const e of entries) this.index.add(id, e);
    this.pending.clear();
    this.packs++;
  }
}

/** A pack opened with the read key: blobs by range, and its own list of blobs. */
export class PackReader {
  private constructor(readonly id: string, private readonly file: SealedFile) {}

  static async open(store: Store, id: string, size: number, identity: Parameters<SealedFile['unlock']>[0]): Promise<PackReader> {
    const path = packPath(id);
    const file = await SealedFile.open(path, size, (o, l) => store.readRange(path, o, l));
    await file.unlock(identity);
    return new PackReader(id, file);
  }

  /** The blob `e` describes, decompressed; its plaintext must hash to its id. */
  async blob(e: BlobEntry, dedup: DedupKeys): Promise<Buffer> {
    const data = await this.file.read(e.offset, e.length);
    const plain = decoder(e.codec, `chunk in pack ${this.id}`)(data);
    if (plain.length !== e.rawLength || !dedup.chunkId(plain).equals(e.id)) {
      throw corruptError(`pack ${this.id}: a chunk does not match its id (damaged or tampered)`, { pack: this.id });
    }
    return plain;
  }

  /** The pack's own list of its blobs (from its footer). */
  async entries(): Promise<BlobEntry[]> {
    const size = this.file.plainSize;
    if (size < PACK_FOOTER_LEN) throw corruptError(`pack ${this.id} is too short`, { pack: this.id });
    const footer = await this.file.read(size - PACK_FOOTER_LEN, PACK_FOOTER_LEN);
    if (!footer.subarray(0, 8).equals(PACK_MAGIC)) throw corruptError(`pack ${this.id}: bad footer`, { pack: this.id });
    const count = footer.readUInt32BE(8);
    const at = footer.readUInt32BE(12);
    if (at + count * BLOB_ENTRY_LEN > size - PACK_FOOTER_LEN) throw corruptError(`pack ${this.id}: bad footer`, { pack: this.id });
    return decodeBlobEntries(await this.file.read(at, count * BLOB_ENTRY_LEN), count, `pack ${this.id}`);
  }
}
