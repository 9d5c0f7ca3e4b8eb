// STREAM over fixed-size segments (Hoang–Reyhanitabar–Rogaway–Vizár, as age's payload):
// AES-256-GCM with payload key = HKDF(file key, salt = payload nonce, "backupctl/v1 payload") and
// per-segment nonce = 88-bit big-endian counter || last-segment flag byte. Reordered, duplicated,
// dropped, truncated or appended segments all fail authentication. backupctl-format(5) "PAYLOAD".
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto';
import { corruptError } from '../errors.js';
import { INFO_PAYLOAD, TAG_LEN } from './format.js';
import { ByteQueue } from '../util/bytequeue.js';
import { hkdfSha256 } from '../util/hkdf.js';
import { OP_DIGEST, OP_UPDATE, SpanHasher } from './span-hash.js';

/** The payload key; a view of HKDF's own output (Buffer.from of an array copies it, and the copy zeroed left the original). */
export function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Buffer {
  const key = hkdfSha256(fileKey, nonce, INFO_PAYLOAD, 32);
  return Buffer.from(key.buffer, key.byteOffset, key.length);
}

/**
 * The payload key as node:crypto's key object, made once; `raw` is zeroed. Given raw bytes,
 * node:crypto makes a key object of its own for every cipher (a thousand per GB, each a copy of
 * the key left for the garbage collector, and 40–70 ms of CPU per GB).
 */
export function segmentKey(raw: Buffer): KeyObject {
  const key = createSecretKey(raw);
  raw.fill(0);
  return key;
}

function segmentNonce(index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  // 88-bit counter; a JS number is exact to 2^53, far beyond any real archive's segment count.
  n.writeUIntBE(Math.floor(index / 2 ** 32), 3, 4);
  n.writeUInt32BE(index >>> 0, 7);
  n[11] = last ? 1 : 0;
  return n;
}

/**
 * Plaintext bytes per cipher update(), sealing and opening: node:crypto allocates a new output
 * buffer per call, and small ones are recycled by the allocator while still in cache, where a
 * 1 MiB one costs fresh pages each time (sealing took 1.1 s of CPU per GB that way, 0.6 s in
 * pieces; opening 1,000 segments 0.48-0.51 s whole, 0.35-0.36 s in pieces).
 */
const PIECE = 64 << 10;

/**
 * Decrypt one segment, in pieces of PIECE bytes that are handed out only once the whole segment
 * has authenticated; throws a "corrupt" error naming the segment when it does not.
 */
export function openSegment(key: KeyObject, index: number, last: boolean, sealed: Uint8Array): Buffer[] {
  if (sealed.length < TAG_LEN || (!last && sealed.length === TAG_LEN)) {
    throw corruptError(`payload segment ${index} is truncated`, { segment: index });
  }
  const d = createDecipheriv('aes-256-gcm', key, segmentNonce(index, last));
  d.setAuthTag(Buffer.from(sealed.buffer, sealed.byteOffset + sealed.length - TAG_LEN, TAG_LEN));
  const body = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length - TAG_LEN);
  const out: Buffer[] = [];
  for (let off = 0; off < body.length; off += PIECE) out.push(d.update(body.subarray(off, off + PIECE)));
  try {
    d.final();
  } catch {
    freeBuffers(out);
    throw corruptError(`payload segment ${index} failed authentication (damaged, tampered, truncated or reordered)`, { segment: index });
  }
  return out;
}

/** Geometry of a payload of `payloadBytes` ciphertext bytes with `segmentSize` plaintext segments. */
export function segmentLayout(payloadBytes: number, segmentSize: number) {
  const sealedSize = segmentSize + TAG_LEN;
  const count = Math.ceil(payloadBytes / sealedSize);
  if (count === 0) throw corruptError('archive has no payload (truncated)');
  const lastSealed = payloadBytes - (count - 1) * sealedSize;
  if (lastSealed <= TAG_LEN) throw corruptError('payload ends in an empty segment (truncated or extended)');
  return { sealedSize, count, plainSize: (count - 1) * segmentSize + lastSealed - TAG_LEN };
}

/** Seal segment `index` (backupctl-format(5) "PAYLOAD"): the ciphertext in pieces, then the tag. */
export function sealSegment(key: KeyObject, index: number, last: boolean, plain: Uint8Array): Buffer[] {
  const c = createCipheriv('aes-256-gcm', key, segmentNonce(index, last));
  const out: Buffer[] = [];
  for (let off = 0; off < plain.length; off += PIECE) out.push(c.update(plain.subarray(off, off + PIECE)));
  c.final();
  out.push(c.getAuthTag());
  return out;
}

/**
 * Free buffers that are done with (sealed pieces once written, decrypted segments once parsed)
 * at once, instead of waiting for the garbage collector: V8 lets about 64 MB of such external
 * memory pile up before it collects (a third of create's peak RSS). Only buffers that own all of
 * their memory are freed, as the cipher's and the compressor's output do; others are left alone.
 */
export function freeBuffers(bufs: readonly Buffer[]): void {
  for (const p of bufs) {
    // ArrayBuffer.prototype.transfer is ES2024 (Node 20+); the project's lib is ES2023.
    if (p.byteOffset === 0 && p.byteLength === p.buffer.byteLength) (p.buffer as ArrayBuffer & { transfer(n: number): ArrayBuffer }).transfer(0);
  }
}

/** Where a SegmentSealer's segments go to be sealed (in this thread or another) and written. */
export interface SegmentOutput {
  /** A buffer of segmentSize bytes for the next segment's plaintext; waits while all are in use. */
  take(): Buffer | Promise<Buffer>;
  /**
   * Seal and write segment `index`: the first `length` bytes of a buffer from take(), which it
   * gets back, after carrying out its span-hash operations (span-hash.ts).
   */
  put(index: number, last: boolean, buf: Buffer, length: number, ops: number[]): Promise<void>;
  /** Would hashing a file's content where it is sealed leave this thread less to do just now? */
  sealerHashes(): boolean;
  /** Wait until every segment put is written; forgets the key. */
  finish(): Promise<void>;
}

/**
 * Sealing in this thread; `write` gets each segment's sealed pieces in order. Hashing at sealing
 * time saves this thread nothing, so it is only asked for by tests (`hashOnSealing`).
 */
export function inlineSegments(raw: Buffer, segmentSize: number, write: (pieces: Buffer[]) => void | Promise<void>, hashOnSealing = false): SegmentOutput {
  const key = segmentKey(raw);
  const spare: Buffer[] = [];
  const hasher = new SpanHasher();
  return {
    take: () => spare.pop() ?? Buffer.allocUnsafe(segmentSize),
    async put(index, last, buf, length, ops) {
      hasher.apply(ops, buf);
      const pieces = sealSegment(key, index, last, buf.subarray(0, length));
      spare.push(buf);
      await write(pieces);
    },
    sealerHashes: () => hashOnSealing,
    async finish() {},
  };
}

/**
 * Cuts a plaintext byte stream into segments for a SegmentOutput. The last segment is only known
 * when the stream ends, so one full segment is always held back until more data arrives. Bytes
 * go in by copy (write) or are read in place into the segment (frame, endFrame).
 */
export class SegmentSealer {
  private buf: Buffer | null = null;
  private fill = 0;
  private index = 0;
  private pendingFull: Buffer | null = null;
  /** Span-hash operations of the segment being filled and of the one held back. */
  private ops: number[] = [];
  private pendingOps: number[] = [];
  /** Where the open frame's 4-byte length goes: (buffer, offset, bytes) per piece. */
  private header: Array<[Buffer, number, number]> = [];

  constructor(
    private readonly out: SegmentOutput,
    private readonly segmentSize: number,
  ) {}

  /** Plaintext bytes accepted so far. */
  get position(): number {
    return this.index * this.segmentSize + (this.pendingFull ? this.segmentSize : 0) + this.fill;
  }

  /** Would hashing the next file where it is sealed help (SegmentOutput.sealerHashes)? */
  sealerHashes(): boolean {
    return this.out.sealerHashes();
  }

  private async room(): Promise<Buffer> {
    if (this.fill === this.segmentSize) await this.rotate();
    return (this.buf ??= await this.out.take());
  }

  /** Take the next `n` bytes of the stream, calling `each` with every piece: (segment, offset, bytes, bytes before it). */
  private async reserve(n: number, each: (buf: Buffer, at: number, k: number, done: number) => void): Promise<void> {
    for (let done = 0; done < n; ) {
      const buf = await this.room();
      const k = Math.min(n - done, this.segmentSize - this.fill);
      each(buf, this.fill, k, done);
      this.fill += k;
      done += k;
    }
  }

  write(data: Uint8Array): Promise<void> {
    return this.reserve(data.length, (buf, at, k, done) => buf.set(data.subarray(done, done + k), at));
  }

  /** Append `n` zero bytes (padding) without allocating them. */
  zeros(n: number): Promise<void> {
    return this.reserve(n, (buf, at, k) => buf.fill(0, at, at + k));
  }

  /** Write `record`, whose 32 bytes at `at` the sealing side fills with file `id`'s digest (span-hash.ts). */
  async writeDigested(record: Uint8Array, at: number, id: number): Promise<void> {
    await this.write(record.subarray(0, at));
    await this.reserve(32, (buf, pos, k, done) => {
      buf.fill(0, pos, pos + k);
      this.ops.push(OP_DIGEST, id, pos, done, k);
    });
    await this.write(record.subarray(at + 32));
  }

  /**
   * Open a content frame (backupctl-format(5) "PAYLOAD PLAINTEXT": a 4-byte length, then the
   * bytes) whose bytes are read in place: returns the room for them, at most `max` bytes and
   * within one segment, so that neither the length nor the bytes are sent before endFrame.
   */
  async frame(max: number): Promise<Buffer> {
    this.header.length = 0;
    await this.reserve(4, (buf, at, k) => this.header.push([buf, at, k]));
    const buf = await this.room();
    return buf.subarray(this.fill, this.fill + Math.min(max, this.segmentSize - this.fill));
  }

  /** The frame opened last holds `n` bytes (0: it is the end of the content); `hashId`: they feed that file's hash on the sealing side. */
  endFrame(n: number, hashId?: number): void {
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(n, 0);
    let done = 0;
    for (const [buf, at, k] of this.header) done += len.copy(buf, at, done, done + k);
    if (hashId !== undefined && n) this.ops.push(OP_UPDATE, hashId, this.fill, this.fill + n, 0);
    this.fill += n;
  }

  /** A byte follows the full segment: the one held back before it is not the last. */
  private async rotate(): Promise<void> {
    if (this.pendingFull) await this.out.put(this.index++, false, this.pendingFull, this.segmentSize, this.pendingOps);
    this.pendingFull = this.buf;
    this.pendingOps = this.ops;
    this.buf = null;
    this.ops = [];
    this.fill = 0;
  }

  /** Seal what is left; the final segment carries the last-segment flag. */
  async finish(): Promise<void> {
    if (this.fill === 0 && this.pendingFull) {
      await this.out.put(this.index, true, this.pendingFull, this.segmentSize, this.pendingOps);
    } else {
      if (this.pendingFull) await this.out.put(this.index++, false, this.pendingFull, this.segmentSize, this.pendingOps);
      await this.out.put(this.index, true, this.buf ?? (await this.out.take()), this.fill, this.ops);
    }
    this.pendingFull = this.buf = null;
    await this.out.finish();
  }
}

/**
 * Opens a sealed payload arriving as a byte stream of unknown length (stdin): holds back one
 * sealed segment so that the final one is opened with the last-segment flag.
 */
export async function* openStream(
  key: KeyObject,
  segmentSize: number,
  sealedChunks: AsyncIterable<Uint8Array>,
): AsyncGenerator<Buffer> {
  const sealedSize = segmentSize + TAG_LEN;
  const q = new ByteQueue();
  let index = 0;
  for await (const chunk of sealedChunks) {
    q.push(chunk);
    // Open as non-final only segments that have at least one byte after them.
    while (q.length > sealedSize) yield* openSegment(key, index++, false, q.take(sealedSize));
  }
  if (q.length === 0) throw corruptError(index === 0 ? 'archive has no payload (truncated)' : 'payload ends without a final segment (truncated)');
  yield* openSegment(key, index, true, q.take(q.length));
}
