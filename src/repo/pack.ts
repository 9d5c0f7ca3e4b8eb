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
import { LARGEST_CHUNK } from './chunker.js';
import { freeBuffers } from '../archive/stream.js';
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

/** A chunk as stored: compressed when that saves an eighth or more, else as it is (not copied). */
export function encodeBlob(plain: Buffer, compressible: boolean): { codec: Codec; data: Buffer } {
  if (compressible && plain.length >= 256) {
    const c = hasZstd
      ? zlib.zstdCompressSync(plain, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } })
      : zlib.deflateRawSync(plain, { level: 6 });
    if (c.length <= plain.length - (plain.length >> 3)) return { codec: hasZstd ? Codec.Zstd : Codec.Deflate, data: c };
  }
  return { codec: Codec.Stored, data: plain };
}

/**
 * Gathers new blobs into one buffer per pack and writes a pack (and then its index file)
 * whenever the target is reached. One pack is written (sealed, synced) while the next one
 * fills: the chunking never waits for the disk unless the disk is slower than it.
 */
export class PackWriter {
  private buf: Buffer;
  private entries: BlobEntry[] = [];
  private size = 0;
  /** Ids in the open pack and in the one being written: a chunk met twice in a run is stored once. */
  private pending = new Set<string>();
  private writing: Promise<void> = Promise.resolve();
  private failure: unknown = null;
  packs = 0;
  storedBytes = 0;

  constructor(
    private readonly store: Store,
    private readonly readKey: Recipient,
    private readonly dedup: DedupKeys,
    private readonly index: RepoIndex,
    private readonly target = packTarget(),
  ) {
    // Room for the blobs, their list and the padding (Padmé adds at most 12%).
    this.buf = Buffer.allocUnsafe(Math.ceil((target + LARGEST_CHUNK) * 1.13) + (64 << 10));
  }

  has(id: Buffer): boolean {
    const k = id.toString('latin1');
    return this.index.has(k) || this.pending.has(k);
  }

  /** Store a blob of `type`; `id` is its chunk id, `plain` its plaintext (copied). */
  async add(id: Buffer, type: BlobType, plain: Buffer, compressible: boolean): Promise<void> {
    if (this.failure) throw this.failure;
    const { codec, data } = encodeBlob(plain, compressible);
    this.entries.push({ id, offset: this.size, length: data.length, rawLength: plain.length, type, codec });
    this.pending.add(id.toString('latin1'));
    data.copy(this.buf, this.size);
    this.size += data.length;
    if (this.size >= this.target) await this.flush();
  }

  /** Close the open pack: its write starts once the previous pack's has finished. */
  async flush(): Promise<void> {
    await this.writing;
    if (this.failure) throw this.failure;
    if (this.entries.length === 0) return;
    const entries = this.entries;
    const list = encodeBlobEntries(entries);
    const used = this.size + list.length + PACK_FOOTER_LEN;
    const footer = Buffer.alloc(PACK_FOOTER_LEN);
    PACK_MAGIC.copy(footer, 0);
    footer.writeUInt32BE(entries.length, 8);
    footer.writeUInt32BE(this.size, 12);
    // Completed in place when it fits (it always does but for packs of thousands of tiny chunks).
    const total = padme(used);
    const plain = total <= this.buf.length ? this.buf.subarray(0, total) : Buffer.concat([this.buf.subarray(0, this.size), Buffer.alloc(total - this.size)]);
    list.copy(plain, this.size);
    plain.fill(0, this.size + list.length, total - PACK_FOOTER_LEN);
    footer.copy(plain, total - PACK_FOOTER_LEN);
    this.entries = [];
    this.size = 0;
    // write() seals `plain` before its first await: the buffer is free for the next pack on return.
    this.writing = this.write(plain, entries).catch((err: unknown) => {
      this.failure = err;
    });
  }

  /** Seal and write a pack, then its index file; the index in memory learns it last. */
  private async write(plain: Buffer, entries: BlobEntry[]): Promise<void> {
    const id = randomBytes(16).toString('hex');
    const sealed = seal(plain, [this.readKey]);
    await this.store.write(packPath(id), sealed);
    this.storedBytes += sealed.reduce((a, b) => a + b.length, 0);
    freeBuffers(sealed);
    this.storedBytes += await writeIndexFile(this.store, this.dedup, [{ pack: id, entries }]);
    for (const e of entries) {
      this.index.add(id, e);
      this.pending.delete(e.id.toString('latin1'));
    }
    this.packs++;
  }

  /** Everything added is written and indexed. */
  async finish(): Promise<void> {
    await this.flush();
    await this.writing;
    if (this.failure) throw this.failure;
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
