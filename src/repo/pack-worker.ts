// The sealing thread of a PackWriter (pack.ts): it seals closed packs, compresses batches of
// text, and computes the ids of chunks read into the open pack when it has the time, reading all
// of them where they are (shared memory, nothing copied to reach it). On a store on this machine
// it writes the sealed file as it seals it, on the thread pool, through the descriptor of the
// store's temporary file (direct I/O where the file system takes it: util/direct-io.ts); else
// it seals into a shared buffer, reused from one pack to the next, that the store writes from.
// On the backup's own thread, hashing and sealing 1 GB took 1.4 s of its 2.5 s.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { DedupKeys, packRecipient } from './keys.js';
import { sealInto, sealSegments } from './sealed.js';
import { freeBuffers } from '../archive/stream.js';
import { finished } from '../util/backlog.js';
import { writeAllFd } from '../util/write-all.js';
import { DirectWriter, alignedBuffer } from '../util/direct-io.js';
import { encodeBlob } from './blob-codec.js';
import { keepFreedHeap } from '../util/heap.js';
import { Codec } from '../archive/format.js';

/** A pack buffer is sent once (`buffer`), then named by its number: a shared buffer in every message cost 0.4 ms each. */
export type Job =
  | { t: 'buffer'; n: number; buf: SharedArrayBuffer }
  | { t: 'forget'; n: number }
  | { t: 'hash'; n: number; offset: number; length: number }
  | { t: 'seal'; n: number; length: number; out: number }
  /** `direct`: `fd` was opened with O_DIRECT (util/direct-io.ts). */
  | { t: 'write'; n: number; length: number; fd: number; direct: boolean }
  /** Chunks of buffer `n` (offset and length each, in `ranges`) compressed into buffer `out`. */
  | { t: 'compress'; n: number; out: number; ranges: Uint32Array };
/** A job and its number, which its answer carries. */
export type PackJob = Job & { k: number };
export type PackReply = { k: number } & (
  | { t: 'buffer' | 'forget' }
  | { t: 'hash'; id: Uint8Array }
  | { t: 'seal'; length: number }
  /** Codec, offset in `out` and length of each chunk (a chunk stored as it is stays where it was). */
  | { t: 'compressed'; encoded: Uint32Array }
  | { t: 'error'; message: string; code?: string }
);

const buffers: Array<SharedArrayBuffer | undefined> = [];

const init = workerData as { readPublic: Uint8Array; dedupKey: Uint8Array; done: Int32Array };
const recipient = packRecipient(new Uint8Array(init.readPublic));
const dedup = new DedupKeys(init.dedupKey);
init.dedupKey.fill(0);
keepFreedHeap(); // the sealed pieces, freed once written
/** Test only: sealing fails as a crash of the thread would (the command must end in one clear line). */
const failing = process.env.BACKUPCTL_TEST_PACK_THREAD_FAILS === '1';

/** Sealed bytes per write request: the next ones are sealed while they are written (1 MiB: 2.60 s median first backup of 1 GB, 256 KiB: 2.74 s, 9 interleaved pairs). */
const WRITE_BATCH = 1 << 20;

/**
 * Seal the first `length` bytes of `plain` and write them at the start of `fd`; the file's length.
 * Written in requests of WRITE_BATCH bytes as they are sealed, each on the thread pool while this
 * thread seals the next: the copy into the page cache cost more than the sealing (1.4 s of system
 * time per GB here, against 0.5 s for AES-GCM), and on this thread the reading waited for it. The
 * page cache is filled in pieces, not a pack at once (the kernel sizes its pages by the write:
 * whole-pack writes of 16 MiB cost 0.4-3 s of system time per GB here, 64 KiB ones 0.22-0.36 s).
 */
async function sealToFile(plain: Uint8Array, fd: number, direct: boolean): Promise<number> {
  if (direct) return sealToDirect(plain, fd);
  let pos = 0;
  let batch: Buffer[] = [];
  let size = 0;
  let writing: Promise<void> = Promise.resolve();
  const send = async () => {
    await writing; // one request at a time, in order
    await nextTurn(); // the ids asked for meanwhile
    const bufs = batch;
    writing = writeAllFd(fd, [...bufs], pos).then(() => freeBuffers(bufs));
    pos += size;
    batch = [];
    size = 0;
  };
  for (const pieces of sealSegments(plain, [recipient])) {
    for (const p of pieces) size += p.length;
    batch.push(...pieces);
    if (size >= WRITE_BATCH) await send();
  }
  if (batch.length) await send();
  await writing;
  return pos;
}

/** The aligned buffers of direct writes, made once (each is its own mapping). */
let aligned: [Buffer, Buffer] | null = null;

/** The same into a file opened with O_DIRECT: the sealed pieces are copied into aligned buffers (0.1 s a GB) and freed at once. */
async function sealToDirect(plain: Uint8Array, fd: number): Promise<number> {
  const out = new DirectWriter(fd, (aligned ??= [alignedBuffer(WRITE_BATCH), alignedBuffer(WRITE_BATCH)]));
  let segments = 0;
  for (const pieces of sealSegments(plain, [recipient])) {
    for (const p of pieces) await out.add(p);
    freeBuffers(pieces);
    if (++segments % 16 === 0) await nextTurn(); // every MiB, the ids asked for meanwhile
  }
  return out.end();
}

function compress(input: Uint8Array, ranges: Uint32Array, out: Uint8Array): Uint32Array {
  const encoded = new Uint32Array((ranges.length / 2) * 3);
  let at = 0;
  for (let i = 0; i < ranges.length / 2; i++) {
    const { codec, data } = encodeBlob(input.subarray(ranges[2 * i]!, ranges[2 * i]! + ranges[2 * i + 1]!), true);
    encoded.set([codec, at, data.length], 3 * i);
    if (codec !== Codec.Stored) {
      out.set(data, at); // shorter than the chunk, so the batch's output always has room
      at += data.length;
    }
  }
  return encoded;
}

/** A job carried out, and answered with its number. */
async function carryOut(m: PackJob): Promise<void> {
  try {
    if (m.t === 'buffer') {
      buffers[m.n] = m.buf;
      parentPort!.postMessage({ t: 'buffer', k: m.k } satisfies PackReply);
    } else if (m.t === 'forget') {
      buffers[m.n] = undefined;
      parentPort!.postMessage({ t: 'forget', k: m.k } satisfies PackReply);
    } else if (m.t === 'hash') {
      const id = dedup.chunkId(new Uint8Array(buffers[m.n]!, m.offset, m.length));
      parentPort!.postMessage({ t: 'hash', id, k: m.k } satisfies PackReply);
    } else if (m.t === 'compress') {
      parentPort!.postMessage({ t: 'compressed', encoded: compress(new Uint8Array(buffers[m.n]!), m.ranges, new Uint8Array(buffers[m.out]!)), k: m.k } satisfies PackReply);
    } else if (m.t === 'write') {
      const length = await sealToFile(new Uint8Array(buffers[m.n]!, 0, m.length), m.fd, m.direct);
      parentPort!.postMessage({ t: 'seal', length, k: m.k } satisfies PackReply);
    } else {
      // Sealed into another shared buffer (`out`), from which the store writes it.
      const length = sealInto(new Uint8Array(buffers[m.n]!, 0, m.length), [recipient], new Uint8Array(buffers[m.out]!));
      parentPort!.postMessage({ t: 'seal', length, k: m.k } satisfies PackReply);
    }
  } catch (err) {
    // An errno (ENOSPC, EIO...) is the file's, for the store to report; anything else, the thread's.
    const code = (err as NodeJS.ErrnoException).code;
    parentPort!.postMessage({ t: 'error', message: (err as Error).message, code: code && /^E[A-Z0-9]+$/.test(code) ? code : undefined, k: m.k } satisfies PackReply);
  } finally {
    if (m.t === 'hash') finished(init.done);
  }
}

/**
 * Seals and batches one after the other (a pack's writes in order); ids, and the buffers they
 * name, at once, also while a seal waits for its writes.
 */
let queue = Promise.resolve();
parentPort!.on('message', (m: PackJob) => {
  if (m.t === 'buffer' || m.t === 'forget' || m.t === 'hash') return void carryOut(m);
  if (failing) throw new Error('test failure of the thread');
  queue = queue.then(() => carryOut(m));
});
