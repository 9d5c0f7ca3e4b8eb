// A thread of a snapshot restore (unpack.ts), started before the snapshot is read and then told
// (UnpackSetup) where it writes and with which key it checks. For each pack it is told where, in
// memory shared with the restore, the sealed segments of it that the restore needs are (read once,
// in order), and what to do with each chunk in them; it authenticates and decrypts the segments,
// checks every chunk against its keyed id and its length, and writes it at its place in every
// staged file that holds it (media with direct I/O where the file system takes it). Files are
// created here when all of their chunks are in this pack (and their mode and times set once the
// last is written), else they exist already. Paths are relative to the staging directory; one
// that would resolve outside it is refused (stagedPath), and nothing is followed (O_NOFOLLOW).
import { closeSync, constants, fchmodSync, futimesSync, openSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { KeyObject } from 'node:crypto';
import { BackupctlError, Exit, corruptError } from '../errors.js';
import { Codec } from '../archive/format.js';
import { decoder, freeDecoded } from '../archive/records.js';
import { Outside, stagedPath } from '../archive/staged-path.js';
import { freeBuffers, openSegment } from '../archive/stream.js';
import { DedupKeys } from './keys.js';
import { writeAllSync } from '../util/write-all.js';
import { DIRECT_ALIGN, DirectWrites, directFlag } from '../util/direct-io.js';
import { keepFreedHeap } from '../util/heap.js';

/**
 * One pack's work, in arrays rather than an object per chunk and per file (a pack of 40,000 small
 * files is 40,000 of each, and each id sent as a view would carry its whole pooled buffer along).
 */
export interface UnpackJob {
  /** The pack's path, for messages. */
  name: string;
  key: KeyObject;
  segmentSize: number;
  sealedSize: number;
  /** Segments in the whole pack (the last one is sealed as last). */
  count: number;
  /** The slot of shared memory (UnpackSetup.slots) the pack was read into, and its runs of consecutive sealed segments from `first` on, `length` bytes at `at`. */
  slot: number;
  runs: Array<{ first: number; at: number; length: number }>;
  /** Per chunk, in offset order: its id (32 bytes each), offset, length and plain length in the pack, codec. */
  ids: Uint8Array;
  offset: Uint32Array;
  length: Uint32Array;
  rawLength: Uint32Array;
  codec: Uint8Array;
  /** Chunk i is written to file destFile[k] at destAt[k] for k in [destStart[i], destStart[i+1]). */
  destStart: Uint32Array;
  destFile: Uint32Array;
  destAt: Float64Array;
  /** Per file: its path (all of them joined with NUL), whether it is created here (all its chunks are in this pack: its mode and time set after its last), mode, time (seconds), writes in this job. */
  paths: string;
  own: Uint8Array;
  mode: Uint32Array;
  mtime: string[];
  writes: Uint32Array;
  /** Per file: whether it is written with direct I/O (every chunk at an aligned offset). */
  direct: Uint8Array;
  /** Salvage: a damaged chunk is reported lost instead of ending the job. */
  salvage: boolean;
}
/** The first message: the staging directory, the dedup key (transferred: no copy is left behind) and the shared memory packs are read into. */
export interface UnpackSetup {
  root: string;
  dedupKey: Uint8Array;
  slots: SharedArrayBuffer[];
}
export type UnpackReply =
  | { t: 'done'; bytes: number; lost: number[] }
  | { t: 'corrupt'; message: string; detail?: Record<string, unknown> }
  | { t: 'error'; code?: string; message: string; path: string };

let root = '';
let dedup: DedupKeys;
let slots: SharedArrayBuffer[] = [];
let ready = false;
/** Open files at most: a pack of 40,000 small files is written one file after another anyway. */
const MAX_OPEN = 64;
/** Where a compressed chunk spanning segments is put together (the largest chunk, 1 MiB). */
let scratch = Buffer.allocUnsafe(1 << 20);
/** Whether the file system takes direct writes, and whether one has worked yet (the first is waited for). */
let directWorks = directFlag() !== 0;
let directProven = false;
/** Direct writes run on the thread pool, from 4 buffers of 1 MiB (the largest chunk), while the next chunk is checked. */
const writes = new DirectWrites(4, 1 << 20);
keepFreedHeap();

async function run(job: UnpackJob): Promise<{ bytes: number; lost: number[] }> {
  const where = `pack ${job.name.slice(job.name.lastIndexOf('/') + 1)}`;
  const plain = new Map<number, Buffer>();
  const bad = new Set<number>();
  const sealedAt = new Map<number, Uint8Array>();
  for (const r of job.runs) {
    const data = new Uint8Array(slots[job.slot]!, r.at, r.length);
    const n = Math.ceil(r.length / job.sealedSize);
    for (let k = 0; k < n; k++) sealedAt.set(r.first + k, data.subarray(k * job.sealedSize, (k + 1) * job.sealedSize));
  }
  const segment = (i: number): Buffer | null => {
    let p = plain.get(i);
    if (p || bad.has(i)) return p ?? null;
    const sealed = sealedAt.get(i);
    try {
      if (!sealed) throw corruptError(`${job.name}: payload segment ${i} is missing`);
      const pieces = openSegment(job.key, i, i === job.count - 1, sealed);
      p = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
    } catch (err) {
      if (!job.salvage) throw err instanceof BackupctlError ? corruptError(`${job.name}: ${err.message}`, { file: job.name }) : err;
      bad.add(i);
      return null;
    }
    plain.set(i, p);
    return p;
  };

  const paths = job.paths.split('\0');
  const fds = new Map<number, number>(); // file index → fd, in order of opening
  const left = Array.from(job.writes);
  const opened = new Set<number>();
  const direct = new Set<number>(); // files whose fd has O_DIRECT
  const fdOf = (fi: number): number => {
    let fd = fds.get(fi);
    if (fd !== undefined) return fd;
    if (fds.size >= MAX_OPEN) {
      const [oldest, ofd] = fds.entries().next().value as [number, number];
      writes.after(ofd, () => closeSync(ofd));
      fds.delete(oldest);
      direct.delete(oldest);
    }
    const create = job.own[fi] === 1 && !opened.has(fi);
    const flags = constants.O_WRONLY | constants.O_NOFOLLOW | (create ? constants.O_CREAT | constants.O_EXCL : 0);
    fd = -1;
    let refused = false;
    if (job.direct[fi] === 1 && directWorks) {
      try {
        fd = openSync(stagedPath(root, paths[fi]!), flags | directFlag(), 0o600);
        direct.add(fi);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        directWorks = false; // the file system refuses O_DIRECT
        refused = true;
      }
    }
    // After that refusal the file may exist, created by the call refused (an entry there before would have been EEXIST).
    if (fd < 0) fd = openSync(stagedPath(root, paths[fi]!), refused ? flags & ~constants.O_EXCL : flags, 0o600);
    opened.add(fi);
    fds.set(fi, fd);
    return fd;
  };
  /** `chunk` written into file `fi` at `at`: directly where its fd is direct, else (and where the file system refuses the first direct write) through the page cache. */
  const write = async (fi: number, chunk: readonly Buffer[], size: number, at: number): Promise<number> => {
    const fd = fdOf(fi);
    if (!direct.has(fi)) return writeAllSync(fd, [...chunk], at);
    await writes.write(fd, chunk, size, at, () => openSync(stagedPath(root, paths[fi]!), constants.O_WRONLY | constants.O_NOFOLLOW));
    if (!directProven && size >= DIRECT_ALIGN) {
      const failure = (await writes.drain()) as NodeJS.ErrnoException | null; // the only write in flight
      if (failure?.code === 'EINVAL') {
        directWorks = false;
        closeSync(fd);
        fds.delete(fi);
        direct.delete(fi);
        return write(fi, chunk, size, at);
      }
      if (failure) throw failure;
      directProven = true;
    }
    return size;
  };
  /** One write into file `fi` is started; after its last is done, its mode and time (if it is its own) and close. */
  const wrote = (fi: number, intact: boolean) => {
    if (--left[fi]! > 0 || !fds.has(fi)) return;
    const fd = fds.get(fi)!;
    const own = intact && job.own[fi] === 1;
    writes.after(fd, () => {
      if (own) {
        fchmodSync(fd, job.mode[fi]!);
        futimesSync(fd, job.mtime[fi]!, job.mtime[fi]!); // after the writes, which set the time
      }
      closeSync(fd);
    });
    fds.delete(fi);
    direct.delete(fi);
  };

  let bytes = 0;
  const lost: number[] = [];
  try {
    for (let ci = 0; ci < job.offset.length; ci++) {
      const offset = job.offset[ci]!;
      const length = job.length[ci]!;
      const first = Math.floor(offset / job.segmentSize);
      const last = Math.floor((offset + length - 1) / job.segmentSize);
      // Segments behind this chunk are done with.
      for (const [k, p] of plain) {
        if (k >= first) continue;
        freeBuffers([p]); // at once: V8 would let tens of MB of them pile up
        plain.delete(k);
      }
      // The chunk's stored bytes, in the pieces of the segments holding it (fewer: a segment is damaged).
      const parts: Buffer[] = [];
      let held = 0;
      for (let i = first; i <= last && held < length; i++) {
        const s = segment(i);
        if (!s) break;
        const from = i === first ? offset - first * job.segmentSize : 0;
        const part = s.subarray(from, from + length - held);
        parts.push(part);
        held += part.length;
      }
      let chunk: Buffer[] | null = null;
      if (held === length) {
        try {
          // Stored content is hashed and written in its pieces; compressed content is put together to be decoded.
          const plain = job.codec[ci] === Codec.Stored ? parts : [decoder(job.codec[ci] as Codec, `chunk in ${where}`, job.rawLength[ci])(parts.length === 1 ? parts[0]! : joined(parts, length))];
          const size = plain.reduce((a, p) => a + p.length, 0);
          if (size === job.rawLength[ci] && dedup.chunkId(...plain).equals(job.ids.subarray(32 * ci, 32 * ci + 32))) chunk = plain;
        } catch (err) {
          if (!(err instanceof BackupctlError && err.code === Exit.corrupt)) throw err;
        }
        if (!chunk && !job.salvage) throw corruptError(`${where}: a chunk does not match its id (damaged or tampered)`, { pack: job.name.slice(job.name.lastIndexOf('/') + 1) });
      } else if (!job.salvage) throw corruptError(`${job.name}: a reference points beyond its end`, { file: job.name });
      if (!chunk) lost.push(ci); // its files stay out of the restore
      for (let k = job.destStart[ci]!; k < job.destStart[ci + 1]!; k++) {
        const fi = job.destFile[k]!;
        if (chunk) bytes += await write(fi, chunk, job.rawLength[ci]!, job.destAt[k]!);
        wrote(fi, chunk !== null);
      }
      if (chunk && job.codec[ci] !== Codec.Stored) freeDecoded(chunk[0]!, job.codec[ci] as Codec, job.rawLength[ci]!); // at once, as the segments
    }
    const failure = await writes.drain();
    if (failure) throw failure;
  } finally {
    await writes.drain(); // after a failure: every write and close done, and forgotten before the next job
    for (const fd of fds.values()) closeSync(fd);
    freeBuffers([...plain.values()]);
  }
  return { bytes, lost };
}

/** `parts` copied into one buffer of `length` bytes (the scratch buffer: it is decoded at once). */
function joined(parts: readonly Buffer[], length: number): Buffer {
  if (scratch.length < length) scratch = Buffer.allocUnsafe(length);
  let at = 0;
  for (const p of parts) at += p.copy(scratch, at);
  return scratch.subarray(0, length);
}

parentPort!.on('message', async (m: UnpackSetup | UnpackJob) => {
  if (!ready) {
    ({ root, slots } = m as UnpackSetup);
    dedup = new DedupKeys((m as UnpackSetup).dedupKey);
    (m as UnpackSetup).dedupKey.fill(0);
    ready = true;
    return;
  }
  const job = m as UnpackJob;
  let reply: UnpackReply;
  try {
    reply = { t: 'done', ...(await run(job)) };
  } catch (err) {
    if (err instanceof BackupctlError) reply = { t: 'corrupt', message: err.message, detail: err.detail };
    else if (err instanceof Outside) reply = { t: 'corrupt', message: `refusing to stage ${JSON.stringify(err.message)}: it resolves outside the staging directory` };
    else {
      const e = err as NodeJS.ErrnoException;
      reply = { t: 'error', code: e.code, message: e.message, path: e.path ?? root };
    }
  }
  parentPort!.postMessage(reply);
});
