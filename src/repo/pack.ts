// Pack files (backupctl-repository(5) "PACKS"): new chunks, compressed where that pays, gathered
// into files of about PACK_TARGET bytes, each sealed whole to the read key and padded (Padmé) so
// that the storage sees neither how many chunks a pack holds nor how long any of them is. A pack
// carries its own list of blobs (readable with the read key) and is named by an index file
// (readable with the dedup key, INDEX_GROUP packs each) once it is written and synced: the packs
// first, their index after them, so an index never names a pack that is not there.
import { randomBytes } from 'node:crypto';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { BackupctlError, Exit, corruptError } from '../errors.js';
import { Codec } from '../archive/format.js';
import { decoder } from '../archive/records.js';
import type { StagedWrite, Store } from '../store/store.js';
import { seal, sealedBound, SealedFile } from './sealed.js';
import { FIXED_CHUNK, LARGEST_CHUNK } from './chunker.js';
import { freeBuffers } from '../archive/stream.js';
import { Backlog } from '../util/backlog.js';
import { BLOB_ENTRY_LEN, decodeBlobEntries, writeIndexFile, type BlobEntry, type BlobType, type RepoIndex } from './index.js';
import { packRecipient, type DedupKeys, type MachineKeys } from './keys.js';
import type { Job, PackJob, PackReply } from './pack-worker.js';
import { PackIds } from './pack-ids.js';
import { encodeBlob } from './blob-codec.js';

/** The pack size packs are closed around (tests make it small to get many packs). */
export function packTarget(): number {
  const v = Number(process.env.BACKUPCTL_REPO_PACK_SIZE);
  return Number.isInteger(v) && v > 0 ? v : 16 << 20;
}

const PACK_MAGIC = Buffer.from('BKRPACK\n', 'latin1');
const PACK_FOOTER_LEN = 16;

/** Padmé (Nikitin et al., PETS 2019): at most 12% more, and a length leaks O(log log L) bits. */
export function padme(len: number): number {
  if (len < 2) return len;
  const step = padmeStep(len);
  return Math.ceil(len / step) * step;
}

/** What Padmé rounds a length of `len` (at least 2) up to a multiple of. */
function padmeStep(len: number): number {
  const e = Math.floor(Math.log2(len));
  return 2 ** (e - Math.floor(Math.log2(e)) - 1);
}

const newPackId = () => randomBytes(16).toString('hex');
export const packPath = (id: string) => `data/${id.slice(0, 2)}/${id}`;
export const packIdOf = (path: string) => path.slice(path.lastIndexOf('/') + 1);

/** Closed packs being sealed and written at once (each holds its buffer until then). */
const WRITES_IN_FLIGHT = 2;
/**
 * Packs written whose sync (and index file) is still to come, at most. A sync only waits for the
 * disk and holds no buffer, so it holds no write slot either (two writes at once, each up to its
 * index file, and the reading waited for a slot 0.6-1.3 s of a first backup of 1 GB here).
 */
const SYNCS_IN_FLIGHT = 4;
/** Packs one index file names (a writer's last one: those left): a file and two syncs less for three packs in four. */
const INDEX_GROUP = 4;
/** Chunks read into the open pack whose ids are still being computed (addRead), at most. */
const HASHING = 16;
/** Chunks smaller than this are hashed on this thread: a message to the sealing thread costs more. */
const HASH_ON_THREAD = 64 << 10;
/** Packs smaller than this are sealed on this thread (trees, a small backup's last pack). */
const SEAL_ON_THREAD = 1 << 20;
/**
 * Until content is read into packs (media, hashed where the sealing thread has the time), the
 * first this many bytes of packs are sealed on this thread too: a tree writer and a backup of
 * small files then start no thread, a V8 isolate (100,000 small files' first backup: 187 -> 162 MB
 * peak RSS).
 */
const SEAL_HERE_FIRST = 64 << 20;

/**
 * Text (compressible content) is compressed on the sealing thread, once it is running, in batches
 * of about this many bytes, one message each: compressing a first backup's 27 MB chat log on this
 * thread, after its chunks were cut and hashed here, was 0.45 s with nothing else to do at the end
 * of the backup (the sealing thread idle). A message per 64 KiB chunk would cost as much as it saves.
 */
const COMPRESS_BATCH = 1 << 20;

/**
 * Blobs taken out of closing packs (carryOut) wait, up to this many bytes in all, to fill the
 * padding of later ones (fill) or, at a run's end, for its last pack.
 */
const HELD_MAX = 8 << 20;

/** A blob out of any pack for now: its entry (BLOB_ENTRY_LEN bytes, the id first) and bytes. */
interface Held {
  entry: Buffer;
  data: Buffer;
}

/** A batch with the sealing thread, its reply, and whether that has come back. */
interface SentBatch {
  batch: CompressBatch;
  reply: Promise<Uint32Array>;
  back: boolean;
}

/** Chunks gathered for the sealing thread to compress (shared memory, sent once each, reused). */
class CompressBatch {
  readonly input = Buffer.from(new SharedArrayBuffer(COMPRESS_BATCH));
  /** Where the thread puts them compressed: never longer than they are, or they are stored as they are. */
  readonly output = Buffer.from(new SharedArrayBuffer(COMPRESS_BATCH));
  blobs: Array<{ id: Buffer; type: BlobType; offset: number; length: number }> = [];
  size = 0;

  push(id: Buffer, type: BlobType, plain: Buffer): void {
    plain.copy(this.input, this.size);
    this.blobs.push({ id, type, offset: this.size, length: plain.length });
    this.size += plain.length;
  }

  has(id: Buffer): boolean {
    return this.blobs.some((b) => b.id.equals(id));
  }

  clear(): void {
    this.blobs = [];
    this.size = 0;
  }
}

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

/** pack-worker.ts's thread. */
class PackThread {
  private readonly worker: Worker;
  private failure: BackupctlError | null = null;
  private readonly known: Array<SharedArrayBuffer | null> = [];
  /** Ids asked for and done (counted by the thread as it goes). */
  private readonly backlog = new Backlog();
  /** Jobs asked for, by number: the thread answers ids at once, and seals and batches in turn. */
  private readonly waiting = new Map<number, { resolve: (m: PackReply) => void; reject: (err: unknown) => void }>();
  private jobs = 0;

  constructor(keys: PackKeys) {
    // workerData is copied into the thread: this copy of the dedup key is zeroed at once, the thread's once derived.
    const dedupKey = Uint8Array.from(keys.dedupKey);
    this.worker = new Worker(new URL('./pack-worker.js', import.meta.url), { workerData: { readPublic: keys.readPublic, dedupKey, done: this.backlog.done } });
    dedupKey.fill(0);
    this.worker.unref(); // never what keeps the process alive but while a job waits (ask)
    this.worker.on('message', (m: PackReply) => {
      const w = this.waiting.get(m.k);
      if (!w) return; // an answer that came after the thread's failure was reported
      this.waiting.delete(m.k);
      if (!this.waiting.size) this.worker.unref();
      // A failed write (disk full) is the store's to report; anything else is the thread's failure.
      if (m.t === 'error') w.reject(m.code ? Object.assign(new Error(m.message), { code: m.code }) : threadFailure(m.message));
      else w.resolve(m);
    });
    const fail = (why: string) => {
      this.failure ??= threadFailure(why);
      for (const w of this.waiting.values()) w.reject(this.failure);
      this.waiting.clear();
      this.worker.unref();
    };
    this.worker.on('error', (err) => fail(err.message));
    this.worker.on('exit', () => fail('it stopped unexpectedly'));
  }

  private ask(job: Job): Promise<PackReply> {
    if (this.failure) return Promise.reject(this.failure);
    if (job.t === 'hash') this.backlog.add();
    const k = this.jobs++;
    // Held while a job waits: else, with nothing else pending, the process ended (exit 13, an unsettled await) before the thread's answer or its failure came.
    if (!this.waiting.size) this.worker.ref();
    return new Promise((resolve, reject) => {
      this.waiting.set(k, { resolve, reject });
      this.worker.postMessage({ ...job, k } as PackJob);
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

  /**
   * Has it time for a chunk's id: at most the one it is working on? It computes ids between the
   * writes of a seal too (waiting for them on the thread pool took 0.35-0.53 s of its 1.6-2.1 s
   * in a 1 GB first backup here), where it had none while a seal was asked for.
   */
  keepsUp(): boolean {
    return this.backlog.keepsUp();
  }

  async hash(buf: Buffer, offset: number, length: number): Promise<Buffer> {
    const r = await this.ask({ t: 'hash', n: this.number(buf), offset, length });
    return Buffer.from((r as { id: Uint8Array }).id);
  }

  /** Compress `batch`'s chunks into its output: codec, offset and length of each, in order. */
  async compress(batch: CompressBatch): Promise<Uint32Array> {
    const ranges = Uint32Array.from(batch.blobs.flatMap((b) => [b.offset, b.length]));
    return ((await this.ask({ t: 'compress', n: this.number(batch.input), out: this.number(batch.output), ranges })) as { encoded: Uint32Array }).encoded;
  }

  /** Seal the first `length` bytes of `buf` into `out`; the sealed file's length. */
  seal(buf: Buffer, length: number, out: Buffer): Promise<number> {
    return this.ask({ t: 'seal', n: this.number(buf), length, out: this.number(out) }).then((r) => (r as { length: number }).length);
  }

  /** Seal the first `length` bytes of `buf` and write them to the staged file; the sealed file's length. */
  sealTo(buf: Buffer, length: number, file: { fd: number; direct: boolean }): Promise<number> {
    return this.ask({ t: 'write', n: this.number(buf), length, fd: file.fd, direct: file.direct }).then((r) => (r as { length: number }).length);
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}

/** A pack's name, and the store's temporary file it is written to. */
interface Staged {
  id: string;
  file: StagedWrite;
}

/** What a pack writer needs of the repository's keys: the read key's public half, and the dedup key for its thread's hashing. */
export type PackKeys = Pick<MachineKeys, 'readPublic' | 'dedupKey'>;

/**
 * Gathers new blobs into one buffer per pack and writes a pack once it is about the target size
 * (closeIfFull), then syncs it and indexes it in the background. Closed packs are sealed on a
 * thread of their own and up to WRITES_IN_FLIGHT of them written at once while the next one
 * fills: the reading never waits for the disk unless the disk is slower than it. Stored content
 * is read straight into the open pack (reserve, addRead) and its id computed meanwhile; a chunk whose id the
 * repository turns out to have is taken out again before the pack closes.
 */
export class PackWriter {
  private buf: Buffer | null = null;
  private readonly spare: Buffer[] = [];
  /** Buffers the sealing thread seals into, reused. */
  private readonly sealedSpare: Buffer[] = [];
  private readonly capacity: number;
  /** A pack closes at a chunk boundary between `least` and `most` bytes of blobs where its padding is small (endsHere). */
  private readonly least: number;
  private readonly most: number;
  /** The open pack's blobs, encoded as in the pack (BLOB_ENTRY_LEN bytes each; objects cost 180 bytes a chunk). */
  private list = Buffer.alloc(BLOB_ENTRY_LEN * 1024);
  private count = 0;
  private size = 0;
  /** Chunks of the open pack whose ids are being computed, in order. */
  private hashing: Hashing[] = [];
  /** Ids in the open pack, and in each of those being written: a chunk met twice in a run is stored once. */
  private ids = new PackIds(this.list);
  private readonly writing = new Set<PackIds>();
  /** Packs being sealed and written, and packs being synced. */
  private readonly writes = new Set<Promise<void>>();
  private readonly syncs = new Set<Promise<void>>();
  /** Packs written and synced, for the next index file. */
  private unindexed: Array<{ pack: string; ids: PackIds }> = [];
  private failure: unknown = null;
  private sealer: PackThread | null = null;
  private staged: Promise<Staged> | null = null;
  /** Chunks to compress on the sealing thread, being gathered; the batch there; batches to reuse. */
  private batch: CompressBatch | null = null;
  private compressed: SentBatch | null = null;
  private readonly batchSpare: CompressBatch[] = [];
  /** Blobs out of any pack (carryOut), by id in hex, and their bytes; whether the run is ending (flush: none is taken out). */
  private readonly held = new Map<string, Held>();
  private heldBytes = 0;
  private ending = false;
  /** Bytes of packs sealed on this thread; whether content has been read into packs (then the thread seals). */
  private sealedHere = 0;
  private readContent = false;
  packs = 0;
  storedBytes = 0;
  newChunks = 0;

  constructor(
    private readonly store: Store,
    private readonly keys: PackKeys,
    private readonly dedup: DedupKeys,
    private readonly index: RepoIndex,
    target = packTarget(),
  ) {
    this.least = target - target / 8;
    this.most = target + target / 8;
    // Room for the blobs (a chunk of content that grew while read may pass `most`), a list of up
    // to ~1,400 entries and the padding; a longer list gets a bigger buffer at the close.
    this.capacity = padme(this.most + LARGEST_CHUNK + (64 << 10));
  }

  has(id: Buffer): boolean {
    if (this.index.has(id) || this.ids.has(id)) return true;
    if (this.held.size && this.held.has(id.toString('hex'))) return true;
    for (const w of this.writing) if (w.has(id)) return true;
    return this.batch?.has(id) === true || this.compressed?.batch.has(id) === true;
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
    await this.letWritesProceed();
    this.settleReady();
    if (this.has(id)) return false;
    if (compressible && this.sealer && plain.length <= COMPRESS_BATCH) {
      if (this.batch && this.batch.size + plain.length > COMPRESS_BATCH) await this.sendBatch();
      (this.batch ??= this.batchSpare.pop() ?? new CompressBatch()).push(id, type, plain);
      return true;
    }
    const { codec, data } = encodeBlob(plain, compressible);
    await this.insert(id, type, plain.length, codec, data);
    return true;
  }

  /** A blob encoded as `codec` into the open pack (closed first if it is at a good place to end). */
  private async insert(id: Buffer, type: BlobType, rawLength: number, codec: Codec, data: Uint8Array): Promise<void> {
    await this.closeIfFull(data.length);
    const buf = this.room();
    this.keep(this.entry(id, data.length, rawLength, type, codec));
    buf.set(data, this.size);
    this.size += data.length;
  }

  /**
   * Send the gathered batch to the sealing thread to be compressed, once the one before it is back
   * and in the pack: the thread compresses a batch while this one cuts and hashes the next. While
   * the thread is still on the one before (or sealing a pack), this batch is compressed here
   * instead of waiting: the chat log comes last in a walk, and its compression, queued behind the
   * thread's seals, was most of the 0.6 s a first backup went on after this thread was done.
   */
  private async sendBatch(): Promise<void> {
    const batch = this.batch;
    if (batch?.blobs.length && this.compressed && !this.compressed.back) {
      const encoded = batch.blobs.map((b) => encodeBlob(batch.input.subarray(b.offset, b.offset + b.length), true));
      await this.insertCompressed(); // theirs first, then these (the batch is this.batch meanwhile: has() sees its ids)
      for (const [i, b] of batch.blobs.entries()) await this.insert(b.id, b.type, b.length, encoded[i]!.codec, encoded[i]!.data);
      this.batch = null;
      batch.clear();
      this.batchSpare.push(batch);
      return;
    }
    await this.insertCompressed();
    this.batch = null;
    if (!batch?.blobs.length) return;
    const sent: SentBatch = { batch, reply: this.sealer!.compress(batch), back: false };
    sent.reply.then(() => void (sent.back = true), () => {}); // a failure is the next insertCompressed's to throw (or the writer's, closed after one)
    this.compressed = sent;
  }

  /** The batch the thread compressed, in the pack. */
  private async insertCompressed(): Promise<void> {
    if (!this.compressed) return;
    const { batch, reply } = this.compressed;
    const encoded = await reply;
    for (const [i, b] of batch.blobs.entries()) {
      const [codec, offset, length] = [encoded[3 * i]!, encoded[3 * i + 1]!, encoded[3 * i + 2]!];
      const data = codec === Codec.Stored ? batch.input.subarray(b.offset, b.offset + b.length) : batch.output.subarray(offset, offset + length);
      await this.insert(b.id, b.type, b.length, codec, data);
    }
    this.compressed = null; // its ids are the open pack's now (has)
    batch.clear();
    this.batchSpare.push(batch);
  }

  /** Every chunk given to add() in the pack. */
  private async drainCompressed(): Promise<void> {
    if (this.batch?.blobs.length) await this.sendBatch();
    await this.insertCompressed();
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
   * read into and handed to addRead before anything else is asked of this writer; `expected`:
   * how much of it the file should fill (what its size says is left).
   */
  async reserve(expected = FIXED_CHUNK): Promise<Buffer> {
    this.check();
    await this.drainCompressed();
    await this.letWritesProceed();
    this.settleReady();
    while (this.hashing.length >= HASHING) await this.settleFirst();
    await this.closeIfFull(Math.min(expected, FIXED_CHUNK));
    return this.room().subarray(this.size, this.size + FIXED_CHUNK);
  }

  /**
   * Reading and hashing never wait for anything but here: the steps of the writes in flight
   * (a file opened, sealed, synced, indexed) and the ids from the thread would otherwise each
   * wait for the next time the pack writer is full, and the reading then for them.
   */
  private async letWritesProceed(): Promise<void> {
    if (this.writes.size || this.syncs.size || this.hashing.length) await nextTurn();
  }

  /**
   * Before a chunk of up to `next` bytes: close the open pack if it is at a good place to end.
   * Padmé rounds a pack of 14–18 MiB up to a multiple of 512 KiB, which cost 1.5–2% of a first
   * backup when packs were closed as soon as they reached the target: a pack now ends where the
   * padding is small, or before it would grow past `most`. Content read again (a renamed video)
   * fills the buffer until its ids show it stored: that is taken out before the decision is made,
   * or a night would close a small pack early and write one file more.
   */
  private async closeIfFull(next: number): Promise<void> {
    if (!this.endsHere(next)) return;
    await this.settleAll();
    if (this.endsHere(next)) await this.closePack();
  }

  /** The open pack's plaintext length before padding: blobs, their list, the footer. */
  private unpadded(): number {
    return this.size + this.count * BLOB_ENTRY_LEN + PACK_FOOTER_LEN;
  }

  private endsHere(next: number): boolean {
    if (this.size < this.least) return false;
    if (this.size + next > this.most) return true;
    const unpadded = this.unpadded();
    // The padding accepted grows from none at `least` to half of Padmé's step at `most`.
    return padme(unpadded) - unpadded <= (padmeStep(unpadded) * (this.size - this.least)) / (2 * (this.most - this.least));
  }

  /** Every id known, and the chunks found stored taken out. */
  private async settleAll(): Promise<void> {
    while (this.hashing.length) await this.settleFirst();
    this.compact();
  }

  /**
   * The first `length` bytes of the reserved room hold a chunk of stored content of `type`: its
   * id. Computed here, or by the sealing thread when it has the time: on two cores a thread of
   * its own for the ids, a message there and back per chunk, cost more than the hashing itself
   * (0.7-1 s of 4.1 s of CPU per GB), and hashing every chunk here left this thread the busiest.
   */
  addRead(length: number, type: BlobType): Promise<Buffer> {
    const entry = this.entry(null, length, length, type, Codec.Stored);
    if (length >= HASH_ON_THREAD) this.readContent = true;
    let id: Promise<Buffer>;
    if (length >= HASH_ON_THREAD && this.sealer?.keepsUp()) id = this.sealer.hash(this.buf!, this.buf!.byteOffset + this.size, length);
    else id = Promise.resolve(this.dedup.chunkId(this.buf!.subarray(this.size, this.size + length)));
    const h: Hashing = { entry, id, done: null, failed: null };
    id.then((v) => void (h.done = v), (err: unknown) => void (h.failed = err));
    this.hashing.push(h);
    this.size += length;
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

  /** Take out the chunks found stored after all (their bytes may be read by the sealing thread until every id is in). */
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

  /** Close the open pack, the blobs held put into packs first: sealed and written once fewer than WRITES_IN_FLIGHT others are. */
  async flush(): Promise<void> {
    this.check();
    await this.drainCompressed();
    await this.settleAll();
    this.ending = true;
    for (const key of [...this.held.keys()]) {
      const h = this.held.get(key);
      if (!h) continue; // into the padding of a pack closed meanwhile (fill)
      await this.closeIfFull(h.data.length);
      if (!this.held.has(key)) continue;
      this.append(h); // out of held only once in the open pack: has() sees it throughout
      this.drop(key, h);
    }
    await this.closePack();
  }

  /** Close the open pack, its ids settled: a blob taken out where that pads it less (but at a run's end), blobs held put into its padding. */
  private async closePack(): Promise<void> {
    if (this.count === 0) return;
    while (this.writes.size >= WRITES_IN_FLIGHT || this.syncs.size >= SYNCS_IN_FLIGHT) await Promise.race([...this.writes, ...this.syncs]);
    this.check();
    if (!this.ending) this.carryOut();
    this.fill();
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
    // Completed in place when it fits (it always does but for packs of thousands of tiny chunks).
    const total = padme(used);
    let plain = buf;
    if (total > buf.length) {
      plain = Buffer.from(new SharedArrayBuffer(total));
      buf.copy(plain, 0, 0, size);
      this.spare.push(buf);
    }
    list.copy(plain, size);
    plain.fill(0, size + list.length, total - PACK_FOOTER_LEN);
    footer.copy(plain, total - PACK_FOOTER_LEN);
    this.count = 0;
    this.size = 0;
    this.buf = null;
    this.track(this.writes, this.write(plain, total, ids, plain === buf));
  }

  /**
   * Take out the blob whose absence leaves the open pack the least padding, where that is less
   * than its padding with it, and hold it for a later pack (fill). A pack ends at a chunk
   * boundary, so where it ends still left it padded to Padmé's next multiple of 512 KiB by 0.6%
   * of a first backup of media (endsHere); the pack's blobs have many sizes, and without the right
   * one it ends just below a multiple instead. Padding still is what Padmé gives the length: the
   * storage learns nothing more.
   */
  private carryOut(): void {
    if (this.count < 2) return;
    const used = this.unpadded();
    let least = padme(used) - used;
    let best = -1;
    // From the last: of equals, the one with the fewest bytes after it to move up.
    for (let i = this.count - 1; i >= 0; i--) {
      const length = this.list.readUInt32BE(i * BLOB_ENTRY_LEN + 36);
      if (this.heldBytes + length > HELD_MAX) continue;
      const without = used - length - BLOB_ENTRY_LEN;
      const padding = padme(without) - without;
      if (padding < least) [least, best] = [padding, i];
    }
    if (best < 0) return;
    const o = best * BLOB_ENTRY_LEN;
    const offset = this.list.readUInt32BE(o + 32);
    const entry = Buffer.from(this.list.subarray(o, o + BLOB_ENTRY_LEN));
    const data = Buffer.from(this.buf!.subarray(offset, offset + this.list.readUInt32BE(o + 36))); // copied: compact() moves what follows over it
    this.held.set(entry.toString('hex', 0, 32), { entry, data });
    this.heldBytes += data.length;
    this.list[o + 44] = DROPPED;
    this.compact();
  }

  /**
   * Blobs held into the padding of the open pack where they fit without making it longer, largest
   * first: stored at no cost. A pack of nothing but a video's pieces of exactly 1 MiB is padded by
   * most of Padmé's step (256-512 KiB) whichever piece it ends at, and no blob taken out of it
   * changes that; the photos before it in the walk fill it.
   */
  private fill(): void {
    if (!this.held.size) return;
    const total = padme(this.unpadded());
    for (const [key, h] of [...this.held].sort((a, b) => b[1].data.length - a[1].data.length)) {
      if (this.unpadded() + h.data.length + BLOB_ENTRY_LEN > total || this.size + h.data.length > this.room().length) continue;
      this.append(h);
      this.drop(key, h);
    }
  }

  /** A blob held before, at the open pack's end (room for it: up to LARGEST_CHUNK past `most`). */
  private append(h: Held): void {
    const e = this.entry(h.entry.subarray(0, 32), h.data.length, h.entry.readUInt32BE(40), h.entry[44] as BlobType, h.entry[45] as Codec);
    this.ids.add(e);
    this.room().set(h.data, this.size);
    this.size += h.data.length;
  }

  private drop(key: string, h: Held): void {
    this.held.delete(key);
    this.heldBytes -= h.data.length;
  }

  /** `p` in `set` until it settles; its failure is the writer's. */
  private track(set: Set<Promise<void>>, p: Promise<void>): void {
    const w: Promise<void> = p.catch((err: unknown) => void (this.failure ??= err)).then(() => void set.delete(w));
    set.add(w);
  }

  /** Seal and write a pack (the first `length` bytes of `plain`); then, in the background, sync it and index it. */
  private async write(plain: Buffer, length: number, ids: PackIds, reuse: boolean): Promise<void> {
    const release = () => {
      if (reuse) this.spare.push(plain);
      else this.sealer?.forget(plain);
    };
    const here = length < SEAL_ON_THREAD || (!this.readContent && this.sealedHere < SEAL_HERE_FIRST);
    if (!here && this.store.stage) {
      // Sealed and written by the thread as it goes (pack-worker.ts), into the store's temporary file.
      const { id, file } = await this.takeStaged();
      let n: number;
      try {
        n = await (this.sealer ??= new PackThread(this.keys)).sealTo(plain, length, file);
      } catch (err) {
        throw await file.abort(err);
      }
      release();
      this.storedBytes += n;
      this.track(this.syncs, file.commit().then(() => this.indexLater(id, ids)));
    } else {
      const id = newPackId();
      let sealed: Buffer[];
      let out: Buffer | null = null;
      if (here) {
        sealed = seal(plain.subarray(0, length), [packRecipient(this.keys.readPublic)]);
        this.sealedHere += length;
      } else {
        out = this.sealedSpare.pop() ?? Buffer.from(new SharedArrayBuffer(sealedBound(this.capacity, 1)));
        sealed = [out.subarray(0, await (this.sealer ??= new PackThread(this.keys)).seal(plain, length, out))];
      }
      release();
      await this.store.write(packPath(id), sealed);
      this.storedBytes += sealed.reduce((a, b) => a + b.length, 0);
      if (out) this.sealedSpare.push(out);
      else freeBuffers(sealed);
      this.track(this.syncs, this.indexLater(id, ids));
    }
  }

  /**
   * The temporary file for the next pack the thread seals, and the one after it opened at once:
   * opened only once its pack was closed, it waited 5-10 ms a pack behind the syncs on the thread
   * pool while the thread had nothing to seal (0.5-0.8 s of a first backup of 1 GB here).
   */
  private takeStaged(): Promise<Staged> {
    const next = this.staged ?? this.stage();
    this.staged = this.stage();
    return next;
  }

  private stage(): Promise<Staged> {
    const id = newPackId();
    const staged = this.store.stage!(packPath(id)).then((file) => ({ id, file }));
    staged.catch(() => {}); // a failure is the taker's to report
    return staged;
  }

  /** Pack `id`, whose blobs `ids.list` gives, is written and synced: named by the next index file, written once INDEX_GROUP packs wait for one. */
  private async indexLater(pack: string, ids: PackIds): Promise<void> {
    this.unindexed.push({ pack, ids });
    if (this.unindexed.length >= INDEX_GROUP) await this.writeIndex();
  }

  /** An index file for the packs written and synced that none names yet; the index in memory learns them last. */
  private async writeIndex(): Promise<void> {
    const group = this.unindexed.splice(0);
    if (!group.length) return;
    const bytes = await writeIndexFile(this.store, this.dedup, group.map(({ pack, ids }) => ({ pack, entries: ids.list })));
    this.storedBytes += bytes; // not `+= await`: that adds to the value from before the wait, losing the packs written meanwhile
    for (const { pack, ids } of group) {
      this.index.addEncoded(pack, ids.list, ids.list.length / BLOB_ENTRY_LEN);
      this.writing.delete(ids);
      this.packs++;
    }
  }

  /** Everything added is written and indexed. */
  async finish(): Promise<void> {
    try {
      await this.flush();
      while (this.writes.size || this.syncs.size) await Promise.race([...this.writes, ...this.syncs]);
      this.check();
      await this.writeIndex();
    } finally {
      await this.close();
    }
  }

  /** Stop the threads and remove the file opened for a pack not written (also after a failure elsewhere). */
  async close(): Promise<void> {
    const staged = await this.staged?.catch(() => null);
    this.staged = null;
    await staged?.file.abort(null);
    await this.sealer?.close();
    this.sealer = null;
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
    return (await this.blobs([e], dedup))[0]!;
  }

  /** The blobs `es` describe, each as blob() gives it, from one read of the range they span (a tree's chunks lie together). */
  async blobs(es: readonly BlobEntry[], dedup: DedupKeys): Promise<Buffer[]> {
    const start = es.reduce((a, e) => Math.min(a, e.offset), Infinity);
    const data = await this.file.read(start, es.reduce((a, e) => Math.max(a, e.offset + e.length), 0) - start);
    return es.map((e) => {
      const plain = decoder(e.codec, `chunk in pack ${this.id}`, e.rawLength)(data.subarray(e.offset - start, e.offset - start + e.length));
      if (plain.length !== e.rawLength || !dedup.chunkId(plain).equals(e.id)) {
        throw corruptError(`pack ${this.id}: a chunk does not match its id (damaged or tampered)`, { pack: this.id });
      }
      return plain;
    });
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
