// Pack files (backupctl-repository(5) "PACKS"): new chunks, compressed where that pays, gathered
// into files of about PACK_TARGET bytes, each sealed whole to the read key and padded (Padmé) so
// that the storage sees neither how many chunks a pack holds nor how long any of them is. A pack
// carries its own list of blobs (readable with the read key) and every pack gets an index file
// (readable with the dedup key) once it is written: the pack first, its index after it, so an
// index never names a pack that is not there.
import zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { BackupctlError, Exit, corruptError } from '../errors.js';
import { Codec } from '../archive/format.js';
import { decoder } from '../archive/records.js';
import type { Store } from '../store/store.js';
import { sealInto, sealedBound, SealedFile } from './sealed.js';
import { FIXED_CHUNK, LARGEST_CHUNK } from './chunker.js';
import { BLOB_ENTRY_LEN, decodeBlobEntries, writeIndexFile, type BlobEntry, type BlobType, type RepoIndex } from './index.js';
import { packRecipient, type DedupKeys, type MachineKeys } from './keys.js';
import type { PackJob, PackReply } from './pack-worker.js';
import { PackIds } from './pack-ids.js';

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

/** Closed packs being sealed and written at once: each write is a pack, a sync, then its index file and a sync, so one at a time left the disk idle between them. */
const WRITES_IN_FLIGHT = 2;
/** Chunks read into the open pack whose ids are still being computed (addRead), at most. */
const HASHING = 16;
/** Chunks smaller than this are hashed on this thread: a message to the hashing thread costs more. */
const HASH_ON_THREAD = 64 << 10;
/** Packs smaller than this are sealed on this thread (a small backup's last pack). */
const SEAL_ON_THREAD = 1 << 20;
/**
 * And, until content is read straight into packs (media, hashed on the hashing thread), the
 * first packs of a writer up to this many bytes: sealing 16 MB takes this thread some 10 ms,
 * while the sealing thread costs a V8 isolate, 13 MB of a backup's peak RSS (100,000 small
 * files), and 40 ms to start. Trees and backups of small files start none.
 */
const SEAL_HERE_FIRST = 64 << 20;
/**
 * While packs are being written, the event loop gets a turn every this many bytes added: a walk
 * of small files (read, compressed and hashed synchronously) never leaves its microtasks
 * otherwise, and the writes in flight (the sealing thread's answer, the disk's) waited for its
 * end, each holding its pack's buffer (100,000 files: a third pack buffer, 20 MB).
 */
const TURN_EVERY = 1 << 20;

interface Hashing {
  /** Its entry in the open pack's list. */
  entry: number;
  id: Promise<Buffer>;
  done: Buffer | null;
  failed: unknown;
}

/** The type byte of an entry taken out again (until the pack closes). */
const DROPPED = 0xff;

const threadFailure = (why: string) =>
  new BackupctlError(Exit.internal, `a thread writing packs failed (${why}); nothing refers to the packs it did not write, so the repository is consistent: run the command again`);

/** One of pack-worker.ts's threads; it answers in the order it is asked. */
class PackThread {
  private readonly worker: Worker;
  private readonly waiting: Array<{ resolve: (m: PackReply) => void; reject: (err: unknown) => void }> = [];
  private failure: BackupctlError | null = null;
  private readonly known: Array<SharedArrayBuffer | null> = [];

  constructor(keys: PackKeys) {
    // workerData is copied into the thread: this copy of the dedup key is zeroed at once, the thread's once derived.
    const dedupKey = Uint8Array.from(keys.dedupKey);
    this.worker = new Worker(new URL('./pack-worker.js', import.meta.url), { workerData: { readPublic: keys.readPublic, dedupKey } });
    dedupKey.fill(0);
    this.worker.unref(); // never what keeps the process alive
    this.worker.on('message', (m: PackReply) => {
      const w = this.waiting.shift();
      if (!w) return; // an answer that came after the thread's failure was reported
      if (m.t === 'error') w.reject(threadFailure(m.message));
      else w.resolve(m);
    });
    const fail = (why: string) => {
      this.failure ??= threadFailure(why);
      for (const w of this.waiting.splice(0)) w.reject(this.failure);
    };
    this.worker.on('error', (err) => fail(err.message));
    this.worker.on('exit', () => fail('it stopped unexpectedly'));
  }

  private ask(job: PackJob): Promise<PackReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.worker.postMessage(job);
    });
  }

  /** The number the thread knows `buf` by (sent to it the first time). */
  private number(buf: Buffer): number {
    let n = this.known.indexOf(buf.buffer as SharedArrayBuffer);
    if (n < 0) {
      n = this.known.push(buf.buffer as SharedArrayBuffer) - 1;
      void this.ask({ t: 'buffer', n, buf: buf.buffer as SharedArrayBuffer }).catch(() => {}); // a failure fails the next job too
    }
    return n;
  }

  /** `buf` is no longer used: the thread lets go of it after the jobs sent before. */
  forget(buf: Buffer): void {
    const n = this.known.indexOf(buf.buffer as SharedArrayBuffer);
    if (n < 0) return;
    this.known[n] = null;
    void this.ask({ t: 'forget', n }).catch(() => {});
  }

  async hash(buf: Buffer, offset: number, length: number): Promise<Buffer> {
    const r = await this.ask({ t: 'hash', n: this.number(buf), offset, length });
    return Buffer.from((r as { id: Uint8Array }).id);
  }

  /** Seal the first `length` bytes of `buf` where they are (sealInto); the sealed file's length. */
  async seal(buf: Buffer, length: number): Promise<number> {
    const r = await this.ask({ t: 'seal', n: this.number(buf), length });
    return (r as { length: number }).length;
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}

/** What a pack writer needs of the repository's keys: the read key's public half, and the dedup key for its hashing thread. */
export type PackKeys = Pick<MachineKeys, 'readPublic' | 'dedupKey'>;

/**
 * Gathers new blobs into one buffer per pack and writes a pack (and then its index file)
 * whenever the target is reached. Closed packs are sealed on a thread of their own and up to
 * WRITES_IN_FLIGHT of them written at once while the next one fills: the reading never waits
 * for the disk unless the disk is slower than it. Stored content is read straight into the open
 * pack (reserve, addRead) and its id computed on another thread meanwhile; a chunk whose id the
 * repository turns out to have is taken out again before the pack closes.
 */
export class PackWriter {
  private buf: Buffer | null = null;
  private readonly spare: Buffer[] = [];
  private readonly capacity: number;
  /** The open pack's blobs, encoded as in the pack (BLOB_ENTRY_LEN bytes each; objects cost 180 bytes a chunk). */
  private list = Buffer.alloc(BLOB_ENTRY_LEN * 1024);
  private count = 0;
  private size = 0;
  /** Bytes added since the event loop last had a turn (TURN_EVERY). */
  private sinceTurn = 0;
  /** Chunks of the open pack whose ids are being computed, in order. */
  private hashing: Hashing[] = [];
  /** Ids in the open pack, and in each of those being written: a chunk met twice in a run is stored once. */
  private ids = new PackIds(this.list);
  private readonly writing = new Set<PackIds>();
  private readonly writes = new Set<Promise<void>>();
  private failure: unknown = null;
  private hasher: PackThread | null = null;
  private sealer: PackThread | null = null;
  /** Bytes of packs sealed on this thread (SEAL_HERE_FIRST). */
  private sealedHere = 0;
  packs = 0;
  storedBytes = 0;
  newChunks = 0;

  constructor(
    private readonly store: Store,
    private readonly keys: PackKeys,
    private readonly dedup: DedupKeys,
    private readonly index: RepoIndex,
    private readonly target = packTarget(),
  ) {
    // Room for the blobs, their list and the padding (Padmé adds at most 12%), sealed where they are.
    this.capacity = sealedBound(Math.ceil((target + LARGEST_CHUNK) * 1.13) + (64 << 10), 1);
  }

  has(id: Buffer): boolean {
    if (this.index.has(id) || this.ids.has(id)) return true;
    for (const w of this.writing) if (w.has(id)) return true;
    return false;
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** The open pack's buffer: shared memory, which the threads read where it is. */
  private room(): Buffer {
    return (this.buf ??= this.spare.pop() ?? Buffer.from(new SharedArrayBuffer(this.capacity)));
  }

  /** Store a blob of `type` unless the repository has it: `plain` (copied), compressed where that pays. Whether it was stored. */
  async add(id: Buffer, type: BlobType, plain: Buffer, compressible: boolean): Promise<boolean> {
    this.check();
    this.settleReady();
    if (this.has(id)) return false;
    const { codec, data } = encodeBlob(plain, compressible);
    const buf = this.room();
    this.keep(this.entry(id, data.length, plain.length, type, codec));
    data.copy(buf, this.size);
    this.size += data.length;
    this.sinceTurn += data.length;
    await this.closeIfFull();
    return true;
  }

  /** A new entry at the pack's end; its index. */
  private entry(id: Uint8Array | null, length: number, rawLength: number, type: BlobType, codec: Codec): number {
    if ((this.count + 1) * BLOB_ENTRY_LEN > this.list.length) {
      const bigger = Buffer.alloc(2 * this.list.length);
      this.list.copy(bigger);
      this.list = this.ids.list = bigger;
    }
    const o = this.count * BLOB_ENTRY_LEN;
    if (id) this.list.set(id, o);
    this.list.writeUInt32BE(this.size, o + 32);
    this.list.writeUInt32BE(length, o + 36);
    this.list.writeUInt32BE(rawLength, o + 40);
    this.list[o + 44] = type;
    this.list[o + 45] = codec;
    return this.count++;
  }

  /** Entry `entry` (its id set) is stored. */
  private keep(entry: number): void {
    this.ids.add(entry);
    this.newChunks++;
  }

  /**
   * Room for the next chunk of stored content (FIXED_CHUNK bytes) at the open pack's end, to be
   * read into and handed to addRead before anything else is asked of this writer.
   */
  async reserve(): Promise<Buffer> {
    this.check();
    this.settleReady();
    while (this.hashing.length >= HASHING) await this.settleFirst();
    await this.closeIfFull();
    return this.room().subarray(this.size, this.size + FIXED_CHUNK);
  }

  /**
   * Close the open pack once it holds the target. Content read again (a renamed video) fills the
   * buffer until its ids show it stored: take that out first, or a night would close a small pack
   * early and write one file more.
   */
  private async closeIfFull(): Promise<void> {
    if (this.writes.size && this.sinceTurn >= TURN_EVERY) {
      this.sinceTurn = 0;
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (this.size < this.target) return;
    await this.settleAll();
    if (this.size >= this.target) await this.closePack();
  }

  /** Every id known, and the chunks found stored taken out. */
  private async settleAll(): Promise<void> {
    while (this.hashing.length) await this.settleFirst();
    this.compact();
  }

  /** The first `length` bytes of the reserved room hold a chunk of stored content of `type`: its id. */
  addRead(length: number, type: BlobType): Promise<Buffer> {
    const entry = this.entry(null, length, length, type, Codec.Stored);
    let id: Promise<Buffer>;
    if (length < HASH_ON_THREAD) id = Promise.resolve(this.dedup.chunkId(this.buf!.subarray(this.size, this.size + length)));
    else id = (this.hasher ??= new PackThread(this.keys)).hash(this.buf!, this.buf!.byteOffset + this.size, length);
    const h: Hashing = { entry, id, done: null, failed: null };
    id.then((v) => void (h.done = v), (err: unknown) => void (h.failed = err));
    this.hashing.push(h);
    this.size += length;
    this.sinceTurn += length;
    return id;
  }

  /** Decide the chunks whose ids are known, in order: kept, or taken out again when the repository has them. */
  private settleReady(): void {
    while (this.hashing.length && (this.hashing[0]!.done || this.hashing[0]!.failed)) this.decide(this.hashing.shift()!);
  }

  private async settleFirst(): Promise<void> {
    await this.hashing[0]!.id.catch(() => {});
    this.settleReady();
  }

  /** Kept (the id set), or marked to be taken out when the pack closes: rare, a file read again whose content is stored. */
  private decide(h: Hashing): void {
    if (h.failed) throw h.failed;
    const o = h.entry * BLOB_ENTRY_LEN;
    if (this.has(h.done!)) {
      this.list[o + 44] = DROPPED;
      return;
    }
    h.done!.copy(this.list, o);
    this.keep(h.entry);
  }

  /** Take out the chunks found stored after all (their bytes may be read by the hashing thread until every id is in). */
  private compact(): void {
    let at = 0;
    let n = 0;
    for (let i = 0; i < this.count; i++) {
      const o = i * BLOB_ENTRY_LEN;
      if (this.list[o + 44] === DROPPED) continue;
      const offset = this.list.readUInt32BE(o + 32);
      const length = this.list.readUInt32BE(o + 36);
      if (offset !== at) this.buf!.copy(this.buf!, at, offset, offset + length);
      if (n !== i) this.list.copy(this.list, n * BLOB_ENTRY_LEN, o, o + BLOB_ENTRY_LEN);
      this.list.writeUInt32BE(at, n * BLOB_ENTRY_LEN + 32);
      at += length;
      n++;
    }
    if (n !== this.count) {
      // Entries moved: their numbers in the table with them (every one left is kept, its id known).
      this.ids = new PackIds(this.list);
      for (let i = 0; i < n; i++) this.ids.add(i);
    }
    this.count = n;
    this.size = at;
  }

  /** Close the open pack: sealed and written once fewer than WRITES_IN_FLIGHT others are. */
  async flush(): Promise<void> {
    this.check();
    await this.settleAll();
    await this.closePack();
  }

  /** Close the open pack, its ids settled. */
  private async closePack(): Promise<void> {
    if (this.count === 0) return;
    while (this.writes.size >= WRITES_IN_FLIGHT) await Promise.race(this.writes);
    this.check();
    const { count, size } = this;
    const buf = this.buf!;
    const list = Buffer.from(this.list.subarray(0, count * BLOB_ENTRY_LEN));
    const ids = this.ids;
    ids.list = list;
    this.ids = new PackIds(this.list);
    this.writing.add(ids);
    const used = size + list.length + PACK_FOOTER_LEN;
    const footer = Buffer.alloc(PACK_FOOTER_LEN);
    PACK_MAGIC.copy(footer, 0);
    footer.writeUInt32BE(count, 8);
    footer.writeUInt32BE(size, 12);
    // Completed and sealed in place when it fits (it always does but for packs of thousands of tiny chunks).
    const total = padme(used);
    let plain = buf;
    if (sealedBound(total, 1) > buf.length) {
      plain = Buffer.from(new SharedArrayBuffer(sealedBound(total, 1)));
      buf.copy(plain, 0, 0, size);
      this.spare.push(buf);
    }
    list.copy(plain, size);
    plain.fill(0, size + list.length, total - PACK_FOOTER_LEN);
    footer.copy(plain, total - PACK_FOOTER_LEN);
    this.count = 0;
    this.size = 0;
    this.buf = null;
    const w: Promise<void> = this.write(plain, total, list, ids, plain === buf)
      .catch((err: unknown) => void (this.failure ??= err))
      .then(() => void this.writes.delete(w));
    this.writes.add(w);
  }

  /** Seal (in place) and write a pack (the first `length` bytes of `buf`), then its index file; the index in memory learns it last. */
  private async write(buf: Buffer, length: number, list: Buffer, ids: PackIds, reuse: boolean): Promise<void> {
    const id = randomBytes(16).toString('hex');
    const sealedLength =
      length < SEAL_ON_THREAD || (!this.hasher && (this.sealedHere += length) <= SEAL_HERE_FIRST)
        ? sealInto(buf.subarray(0, length), [packRecipient(this.keys.readPublic)], buf)
        : await (this.sealer ??= new PackThread(this.keys)).seal(buf, length);
    await this.store.write(packPath(id), [buf.subarray(0, sealedLength)]);
    this.storedBytes += sealedLength;
    if (reuse) this.spare.push(buf);
    else {
      this.hasher?.forget(buf);
      this.sealer?.forget(buf);
    }
    this.storedBytes += await writeIndexFile(this.store, this.dedup, [{ pack: id, entries: list }]);
    this.index.addEncoded(id, list, list.length / BLOB_ENTRY_LEN);
    this.writing.delete(ids);
    this.packs++;
  }

  /** Everything added is written and indexed. */
  async finish(): Promise<void> {
    try {
      await this.flush();
      while (this.writes.size) await Promise.race(this.writes);
      this.check();
    } finally {
      await this.close();
    }
  }

  /** Stop the threads (also after a failure elsewhere). */
  async close(): Promise<void> {
    await this.hasher?.close();
    await this.sealer?.close();
    this.hasher = this.sealer = null;
  }
}

/** A pack opened with the read key: blobs by range, and its own list of blobs. */
export class PackReader {
  private constructor(readonly id: string, readonly file: SealedFile) {}

  static async open(store: Store, id: string, size: number, identity: Parameters<SealedFile['unlock']>[0]): Promise<PackReader> {
    const path = packPath(id);
    const file = await SealedFile.open(path, size, (o, l) => store.readRange(path, o, l));
    await file.unlock(identity);
    return new PackReader(id, file);
  }

  /** The blob `e` describes, decompressed; its plaintext must hash to its id. */
  async blob(e: BlobEntry, dedup: DedupKeys): Promise<Buffer> {
    const data = await this.file.read(e.offset, e.length);
    const plain = decoder(e.codec, `chunk in pack ${this.id}`, e.rawLength)(data);
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
