// A snapshot's content restored pack by pack (ops/restore-snapshot.ts): every pack the selection
// needs is read once, with one read per run of the segments it needs (into memory shared with the
// threads), and handed to one of THREADS threads (unpack-worker.ts) that authenticate, decrypt and
// check it and write each chunk at its place in the staged files. Chunk by chunk in file order, a
// restore opened a pack's segments one read at a time on this thread (4.1 s for 1 GB, restic: 3.8 s).
import { closeSync, constants, fchmodSync, futimesSync, openSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { BackupctlError, Exit, corruptError, ioError } from '../errors.js';
import { stagedPath } from '../archive/staged-path.js';
import { packIdentity } from './keys.js';
import { PackReader, packPath } from './pack.js';
import type { RepoReader } from './reader.js';
import type { Spot } from './index.js';
import type { UnpackJob, UnpackReply, UnpackSetup } from './unpack-worker.js';
import { DIRECT_ALIGN } from '../util/direct-io.js';

/** Threads decrypting and writing, each given one pack at a time while the next is read here. */
const THREADS = 2;
/** Packs in memory at once: one per thread and the next one, read meanwhile. */
const SLOTS = THREADS + 1;
/**
 * Files from this size (64 KiB) whose chunks all start aligned (media, cut into pieces of 1 MiB) are
 * written with direct I/O (util/direct-io.ts); smaller ones, and text cut where its content
 * says, through the page cache.
 */
const DIRECT_FROM = 64 << 10;

export interface UnpackTarget {
  path: string;
  /** Permission bits and modification time (seconds, as a numeric string) to set once written. */
  mode: number;
  mtime: string;
  size: number;
  chunks: Buffer[];
}

/** What a pack's job will hold, gathered in arrays as the selection is planned. */
class PackPlan {
  /** Chunk by its offset in the pack (a pack holds each blob once, at its own offset). */
  readonly byOffset = new Map<number, number>();
  readonly ids: Uint8Array[] = [];
  readonly offset: number[] = [];
  readonly length: number[] = [];
  readonly rawLength: number[] = [];
  readonly codec: number[] = [];
  /** Per write: chunk, file (of this job), offset in the file. */
  readonly dChunk: number[] = [];
  readonly dFile: number[] = [];
  readonly dAt: number[] = [];
  /** Per file of this job: index in the targets, whether the job creates it, writes into it. */
  readonly targets: number[] = [];
  readonly own: number[] = [];
  readonly direct: number[] = [];
  readonly writes: number[] = [];

  /** Chunk `id` at `l` goes to target `ti` at `at`; a target's chunks are added one after another. */
  add(id: Uint8Array, l: Spot, ti: number, own: boolean, direct: boolean, at: number): void {
    let ci = this.byOffset.get(l.offset);
    if (ci === undefined) {
      ci = this.ids.push(id) - 1;
      this.offset.push(l.offset);
      this.length.push(l.length);
      this.rawLength.push(l.rawLength);
      this.codec.push(l.codec);
      this.byOffset.set(l.offset, ci);
    }
    let fi = this.targets.length - 1;
    if (this.targets[fi] !== ti) {
      fi = this.targets.push(ti) - 1;
      this.own.push(own ? 1 : 0);
      this.direct.push(direct ? 1 : 0);
      this.writes.push(0);
    }
    this.dChunk.push(ci);
    this.dFile.push(fi);
    this.dAt.push(at);
    this.writes[fi]!++;
  }

  /**
   * Bytes decrypted and written, what the job's time goes with. The packs go to the threads the
   * largest first, so that the last jobs are small: in the order the selection first needed them,
   * the last (a 9 MB pack of a compressed chat log, 27 MB once decoded) took 147 ms alone on one
   * thread while the other had finished.
   */
  work(): number {
    let n = 0;
    for (const l of this.length) n += l;
    for (const c of this.dChunk) n += this.rawLength[c]!;
    return n;
  }

  /** The job's arrays, chunks in offset order; `order[k]` is the plan's chunk at the job's k. */
  job(targets: readonly UnpackTarget[]): { arrays: Omit<UnpackJob, 'name' | 'key' | 'segmentSize' | 'sealedSize' | 'count' | 'runs' | 'slot' | 'salvage'>; order: number[] } {
    const n = this.ids.length;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => this.offset[a]! - this.offset[b]!);
    const rank = new Uint32Array(n);
    order.forEach((ci, k) => (rank[ci] = k));
    const ids = new Uint8Array(32 * n);
    order.forEach((ci, k) => ids.set(this.ids[ci]!, 32 * k));
    const destStart = new Uint32Array(n + 1);
    for (const ci of this.dChunk) destStart[rank[ci]! + 1]!++;
    for (let k = 0; k < n; k++) destStart[k + 1]! += destStart[k]!;
    const fill = destStart.slice(0, n);
    const destFile = new Uint32Array(this.dChunk.length);
    const destAt = new Float64Array(this.dChunk.length);
    this.dChunk.forEach((ci, d) => {
      const k = fill[rank[ci]!]!++;
      destFile[k] = this.dFile[d]!;
      destAt[k] = this.dAt[d]!;
    });
    const pick = <T>(a: readonly T[]) => order.map((ci) => a[ci]!);
    const files = this.targets.map((ti) => targets[ti]!);
    return {
      order,
      arrays: {
        ids, offset: Uint32Array.from(pick(this.offset)), length: Uint32Array.from(pick(this.length)), rawLength: Uint32Array.from(pick(this.rawLength)),
        codec: Uint8Array.from(pick(this.codec)), destStart, destFile, destAt,
        paths: files.map((f) => f.path).join('\0'), own: Uint8Array.from(this.own), mode: Uint32Array.from(files.map((f) => f.mode)),
        mtime: files.map((f) => f.mtime), writes: Uint32Array.from(this.writes),
        direct: Uint8Array.from(this.direct),
      },
    };
  }
}

const threadFailure = (why: string) => new BackupctlError(Exit.internal, `a thread restoring the snapshot failed (${why}); nothing was restored`);

class UnpackThread {
  readonly worker = new Worker(new URL('./unpack-worker.js', import.meta.url));
  private readonly waiting: Array<{ slot: number; resolve: (r: UnpackReply) => void; reject: (err: unknown) => void }> = [];
  private failure: BackupctlError | null = null;
  private memory: PackMemory | null = null;

  constructor() {
    // The job's memory is free again as soon as the thread is (none waiting: it came after the failure was reported).
    this.worker.on('message', (r: UnpackReply) => {
      const w = this.waiting.shift();
      if (!w) return;
      this.memory!.release(w.slot);
      w.resolve(r);
    });
    const fail = (why: string) => {
      this.failure ??= threadFailure(why);
      for (const w of this.waiting.splice(0)) w.reject(this.failure);
    };
    this.worker.on('error', (err) => fail(err.message));
    this.worker.on('exit', () => fail('it stopped unexpectedly'));
  }

  /** Where this restore writes, the key it checks with, the memory packs are read into. */
  begin(root: string, dedupKey: Uint8Array, memory: PackMemory): void {
    this.memory = memory;
    const key = Uint8Array.from(dedupKey); // transferred: no copy stays on this thread
    this.worker.postMessage({ root, dedupKey: key, slots: memory.slots } satisfies UnpackSetup, [key.buffer]);
  }

  get busy(): number {
    return this.waiting.length;
  }

  run(job: UnpackJob): Promise<UnpackReply> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push({ slot: job.slot, resolve, reject });
      this.worker.postMessage(job);
    });
  }

  async stop(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}

/**
 * A restore's THREADS threads, started before the repository is opened: a thread took 250-300 ms
 * to start on a loaded machine (Node's bootstrap and its modules), with nothing to do meanwhile
 * but read the first pack; now the unlock, the index and the tree are read as they start.
 * Stopped once the files are written (unpackFiles), or by whoever started them if it never got there.
 */
export class UnpackThreads {
  readonly threads = Array.from({ length: THREADS }, () => new UnpackThread());
  private stopped: Promise<void> | null = null;

  stop(): Promise<void> {
    return (this.stopped ??= Promise.all(this.threads.map((t) => t.stop())).then(() => undefined));
  }
}

/**
 * Write `targets` into the staging directory `root`, each file's content complete, checked and
 * with its mode and time, or (salvage) named lost. Returns the indices of the lost targets.
 */
export async function unpackFiles(
  reader: RepoReader,
  root: string,
  targets: readonly UnpackTarget[],
  pool: UnpackThreads,
  o: { salvage: boolean; signal?: AbortSignal; onProgress?: (bytes: number) => void },
): Promise<Set<number>> {
  const lost = new Set<number>();
  const lose = (ti: number, err: unknown) => {
    if (!o.salvage || !(err instanceof BackupctlError) || err.code !== Exit.corrupt) throw err;
    lost.add(ti);
  };
  // The plan: per pack, its chunks and where each goes.
  const plans = new Map<string, PackPlan>();
  const spread: number[] = []; // targets whose chunks are in more than one pack, or in none
  targets.forEach((t, ti) => {
    let locs;
    try {
      locs = t.chunks.map((id) => reader.spot(id, t.path));
      const held = locs.reduce((a, l) => a + l.rawLength, 0);
      if (held !== t.size) throw corruptError(`${t.path}: its chunks hold ${held} bytes, the snapshot records ${t.size}`);
    } catch (err) {
      lose(ti, err);
      return;
    }
    const own = locs.length > 0 && locs.every((l) => l.pack === locs[0]!.pack);
    if (!own) spread.push(ti);
    const direct = t.size >= DIRECT_FROM && locs.every((l, j) => j === locs.length - 1 || l.rawLength % DIRECT_ALIGN === 0);
    let at = 0;
    locs.forEach((l, j) => {
      let p = plans.get(l.pack);
      if (!p) plans.set(l.pack, (p = new PackPlan()));
      p.add(t.chunks[j]!, l, ti, own, direct, at);
      at += l.rawLength;
    });
  });
  const open = (ti: number, flags: number) => {
    const path = stagedPath(root, targets[ti]!.path);
    try {
      return openSync(path, constants.O_WRONLY | constants.O_NOFOLLOW | flags, 0o600);
    } catch (err) {
      throw ioError(err, path, 'write');
    }
  };
  const memory = new PackMemory([...plans.keys()].reduce((a, pack) => Math.max(a, reader.packSizes.get(pack)!), 0));
  const threads = pool.threads;
  for (const t of threads) t.begin(root, reader.keys.dedupKey, memory);
  const running = new Set<Promise<void>>();
  let failure: unknown = null;
  let bytes = 0;
  try {
    // Files of several packs (and empty ones) exist before any thread writes into them.
    for (const ti of spread) if (!lost.has(ti)) closeSync(open(ti, constants.O_CREAT | constants.O_EXCL));
    const work = new Map([...plans].map(([pack, plan]) => [pack, plan.work()]));
    for (const [pack, plan] of [...plans].sort((a, b) => work.get(b[0])! - work.get(a[0])!)) {
      o.signal?.throwIfAborted();
      if (failure) break;
      const { arrays, order } = plan.job(targets);
      let job: UnpackJob;
      try {
        job = { ...(await readPack(reader, pack, arrays, memory)), ...arrays, salvage: o.salvage };
      } catch (err) {
        for (const ti of plan.targets) lose(ti, err);
        continue;
      }
      // The least busy thread, once it has room.
      let t = threads.reduce((a, b) => (b.busy < a.busy ? b : a));
      while (t.busy > 0 && !failure) {
        await Promise.race(running);
        t = threads.reduce((a, b) => (b.busy < a.busy ? b : a));
      }
      const done: Promise<void> = t
        .run(job)
        .then((r) => {
          if (r.t === 'corrupt') throw corruptError(r.message, r.detail);
          if (r.t === 'error') throw ioError(Object.assign(new Error(r.message), { code: r.code }), r.path, 'write');
          for (const k of r.lost) {
            const ci = order[k]!;
            plan.dChunk.forEach((c, d) => c === ci && lost.add(plan.targets[plan.dFile[d]!]!));
          }
          bytes += r.bytes;
          o.onProgress?.(bytes);
        })
        .catch((err: unknown) => void (failure ??= err))
        .then(() => void running.delete(done));
      running.add(done);
    }
    await Promise.all(running);
    if (failure) throw failure;
    o.signal?.throwIfAborted();
  } finally {
    await pool.stop();
  }
  // Mode and time of the files written by several threads, now that they are complete.
  for (const ti of spread) {
    if (lost.has(ti)) continue;
    const fd = open(ti, 0);
    try {
      fchmodSync(fd, targets[ti]!.mode);
      futimesSync(fd, targets[ti]!.mtime, targets[ti]!.mtime);
    } finally {
      closeSync(fd);
    }
  }
  return lost;
}

/**
 * The memory packs are read into: SLOTS buffers as large as the largest pack, shared with every
 * thread once, when it starts. A job names its slot, which is written again only once the thread
 * has replied. A fresh buffer for each pack, handed to its thread, cost a page fault per 4 KiB
 * every time (85-120k faults a GB).
 */
class PackMemory {
  readonly slots: SharedArrayBuffer[];
  private readonly free: number[];

  constructor(size: number) {
    this.slots = Array.from({ length: SLOTS }, () => new SharedArrayBuffer(size));
    this.free = this.slots.map((_, i) => i);
  }

  take(): number {
    const slot = this.free.pop();
    if (slot === undefined) throw new BackupctlError(Exit.internal, 'no memory is free for the next pack of the restore');
    return slot;
  }

  release(slot: number): void {
    this.free.push(slot);
  }
}

/** A pack's job: its header unlocked here, the segments its chunks need read into `memory`, in one read but where the store would rather skip the segments between. */
async function readPack(reader: RepoReader, pack: string, c: { offset: Uint32Array; length: Uint32Array }, memory: PackMemory) {
  const size = reader.packSizes.get(pack)!;
  const p = await PackReader.open(reader.store, pack, size, packIdentity(reader.keys));
  const { key, headerLength, segmentSize, sealedSize, count } = p.file.payload;
  const spans: Array<[number, number]> = []; // first and last segment of each read
  for (let k = 0; k < c.offset.length; k++) {
    const a = Math.floor(c.offset[k]! / segmentSize);
    const b = Math.floor((c.offset[k]! + Math.max(c.length[k]!, 1) - 1) / segmentSize);
    const span = spans.at(-1);
    if (span && (a - span[1] - 1) * sealedSize <= reader.store.readThrough) span[1] = Math.max(span[1], b);
    else spans.push([a, b]);
  }
  const slot = memory.take();
  const runs: UnpackJob['runs'] = [];
  let at = 0;
  try {
    for (const [first, last] of spans) {
      const offset = headerLength + first * sealedSize;
      const want = Math.max(0, Math.min((last - first + 1) * sealedSize, size - offset)); // the last segment is shorter (none: a reference beyond the end)
      const length = (await reader.store.readRange(packPath(pack), offset, want, new Uint8Array(memory.slots[slot]!, at, want))).length;
      runs.push({ first, at, length });
      at += length;
    }
  } catch (err) {
    memory.release(slot);
    throw err;
  }
  return { name: packPath(pack), key, segmentSize, sealedSize, count, runs, slot };
}
