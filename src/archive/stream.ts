// STREAM over fixed-size segments (Hoang–Reyhanitabar–Rogaway–Vizár, as age's payload):
// AES-256-GCM with payload key = HKDF(file key, salt = payload nonce, "backupctl/v1 payload") and
// per-segment nonce = 88-bit big-endian counter || last-segment flag byte. Reordered, duplicated,
// dropped, truncated or appended segments all fail authentication. backupctl-format(5) "PAYLOAD".
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { corruptError } from '../errors.js';
import { INFO_PAYLOAD, TAG_LEN } from './format.js';
import { ByteQueue } from '../util/bytequeue.js';
import { disposable } from './output.js';

export function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Buffer {
  return Buffer.from(hkdf(sha256, fileKey, nonce, INFO_PAYLOAD, 32));
}

function segmentNonce(index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  // 88-bit counter; a JS number is exact to 2^53, far beyond any real archive's segment count.
  n.writeUIntBE(Math.floor(index / 2 ** 32), 3, 4);
  n.writeUInt32BE(index >>> 0, 7);
  n[11] = last ? 1 : 0;
  return n;
}

/** Decrypt one segment; throws a "corrupt" error naming the segment when it does not authenticate. */
export function openSegment(key: Buffer, index: number, last: boolean, sealed: Uint8Array): Buffer {
  if (sealed.length < TAG_LEN || (!last && sealed.length === TAG_LEN)) {
    throw corruptError(`payload segment ${index} is truncated`, { segment: index });
  }
  const d = createDecipheriv('aes-256-gcm', key, segmentNonce(index, last));
  d.setAuthTag(Buffer.from(sealed.buffer, sealed.byteOffset + sealed.length - TAG_LEN, TAG_LEN));
  const out = d.update(Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length - TAG_LEN));
  try {
    d.final();
  } catch {
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

/** Ciphertext bytes per cipher update() when sealing (see SegmentSealer.seal). */
const SEAL_PIECE = 16 << 10;

/**
 * Cuts a plaintext byte stream into segments and seals them. The last segment is only known
 * when the stream ends, so one full segment is always held back until more data arrives.
 */
export class SegmentSealer {
  private buf: Buffer;
  private fill = 0;
  private index = 0;
  private pendingFull: Buffer | null = null;

  constructor(
    private readonly key: Buffer,
    private readonly segmentSize: number,
    private readonly emit: (sealed: Buffer) => void | Promise<void>,
  ) {
    this.buf = Buffer.allocUnsafe(segmentSize);
  }

  /** Plaintext bytes accepted so far. */
  get position(): number {
    return this.index * this.segmentSize + (this.pendingFull ? this.segmentSize : 0) + this.fill;
  }

  async write(data: Uint8Array): Promise<void> {
    let off = 0;
    while (off < data.length) {
      if (this.fill === this.segmentSize) await this.rotate();
      const n = Math.min(data.length - off, this.segmentSize - this.fill);
      this.buf.set(data.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
    }
  }

  /** Append `n` zero bytes (padding) without allocating them. */
  async zeros(n: number): Promise<void> {
    while (n > 0) {
      if (this.fill === this.segmentSize) await this.rotate();
      const k = Math.min(n, this.segmentSize - this.fill);
      this.buf.fill(0, this.fill, this.fill + k);
      this.fill += k;
      n -= k;
    }
  }

  /**
   * Seal and emit the ciphertext piece by piece, then the tag: node:crypto allocates a new output
   * buffer per update(), and small ones are recycled by the allocator while still in cache, where
   * a 1 MiB one costs fresh pages each time (AES took 1.1 s of CPU per GB that way, 0.6 s in
   * 16 KiB pieces). The sink frees each piece once written (see `disposable`).
   */
  private async seal(last: boolean, plain: Buffer): Promise<void> {
    const c = createCipheriv('aes-256-gcm', this.key, segmentNonce(this.index++, last));
    for (let off = 0; off < plain.length; off += SEAL_PIECE) await this.emit(disposable(c.update(plain.subarray(off, off + SEAL_PIECE))));
    c.final();
    await this.emit(c.getAuthTag());
  }

  private async rotate(): Promise<void> {
    const full = this.buf;
    if (this.pendingFull) {
      await this.seal(false, this.pendingFull);
      this.buf = this.pendingFull; // sealed: its plaintext buffer is free again
    } else {
      this.buf = Buffer.allocUnsafe(this.segmentSize);
    }
    this.pendingFull = full;
    this.fill = 0;
  }

  /** Seal what is left; the final segment carries the last-segment flag. */
  async finish(): Promise<void> {
    if (this.fill === 0 && this.pendingFull) {
      await this.seal(true, this.pendingFull);
    } else {
      if (this.pendingFull) await this.seal(false, this.pendingFull);
      await this.seal(true, this.buf.subarray(0, this.fill));
    }
    this.pendingFull = null;
    this.key.fill(0);
  }
}

/**
 * Opens a sealed payload arriving as a byte stream of unknown length (stdin): holds back one
 * sealed segment so that the final one is opened with the last-segment flag.
 */
export async function* openStream(
  key: Buffer,
  segmentSize: number,
  sealedChunks: AsyncIterable<Uint8Array>,
): AsyncGenerator<Buffer> {
  const sealedSize = segmentSize + TAG_LEN;
  const q = new ByteQueue();
  let index = 0;
  for await (const chunk of sealedChunks) {
    q.push(chunk);
    // Open as non-final only segments that have at least one byte after them.
    while (q.length > sealedSize) yield openSegment(key, index++, false, q.take(sealedSize));
  }
  if (q.length === 0) throw corruptError(index === 0 ? 'archive has no payload (truncated)' : 'payload ends without a final segment (truncated)');
  yield openSegment(key, index, true, q.take(q.length));
}
