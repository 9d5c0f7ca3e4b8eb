// Keyed content-defined chunking: FastCDC's gear hash with normalised chunking (Xia et al., 2016),
// its gear table derived from the dedup key so that boundaries (and so chunk lengths) depend on a
// secret. An edit moves only the boundaries near it: an appended chat log costs about one new
// chunk, a renamed photo none. Sizes from the measurements in backupctl-repository(5): small
// enough for logs, large enough that a GB is about 16,000 chunks.
//
// Speed is fragile here (the notes measured a 10x drop when masks became module-level
// bindings): the loop keeps the table and the masks in locals, and 32-bit integer arithmetic.

export const MIN_CHUNK = 16 << 10;
export const AVG_CHUNK = 64 << 10;
export const MAX_CHUNK = 256 << 10;

/** The gear table and the same shifted left by one, for two bytes per step (cutPoint). */
export interface Gear {
  g: Int32Array;
  g2: Int32Array;
}

export function gearTable(bytes: Uint8Array): Gear {
  const g = new Int32Array(256);
  for (let i = 0; i < 256; i++) g[i] = (bytes[4 * i]! << 24) | (bytes[4 * i + 1]! << 16) | (bytes[4 * i + 2]! << 8) | bytes[4 * i + 3]!;
  return { g, g2: g.map((x) => x << 1) };
}

/**
 * The length of the chunk that starts at `start` in `data[start, end)`; `end - start` must be at
 * least MAX_CHUNK unless the data ends at `end`. Bit k of the gear hash depends on the last k+1
 * bytes, so the masks test high bits: 17 of them before the average size (rarely cut), 13 after
 * (soon cut), which narrows the spread of sizes around the average. The hash takes two bytes per
 * step (FastCDC 2020's "rolling two bytes"): h = (h << 2) + (G[a] << 1) + G[b], the same value as
 * two one-byte steps, tested at every second byte only (hence one mask bit fewer); measured here
 * about twice the speed of one byte per step.
 */
export function cutPoint(gear: Gear, data: Uint8Array, start: number, end: number): number {
  const n = end - start;
  if (n <= MIN_CHUNK) return n;
  const maskS = 0xffff8000 | 0;
  const maskL = 0xfff80000 | 0;
  const g = gear.g;
  const g2 = gear.g2;
  const d = data;
  const mid = start + Math.min(AVG_CHUNK, n);
  const lim = start + Math.min(MAX_CHUNK, n);
  let h = 0;
  let i = start + MIN_CHUNK;
  for (; i + 1 < mid; i += 2) {
    h = ((h << 2) + g2[d[i]!]! + g[d[i + 1]!]!) | 0;
    if ((h & maskS) === 0) return i - start + 2;
  }
  for (; i + 1 < lim; i += 2) {
    h = ((h << 2) + g2[d[i]!]! + g[d[i + 1]!]!) | 0;
    if ((h & maskL) === 0) return i - start + 2;
  }
  return lim - start;
}

/**
 * Chunks of content stored as is (media: JPEG, MP4, Opus...): fixed 1 MiB pieces. Such files
 * never change once written, so content-defined cuts would buy nothing (a renamed or copied
 * photo still has the same pieces) and cost the chunker's time on most of an export's bytes;
 * fixed lengths also say nothing about the dedup key.
 */
export const FIXED_CHUNK = 1 << 20;
/** The largest chunk either way. */
export const LARGEST_CHUNK = Math.max(MAX_CHUNK, FIXED_CHUNK);

/** Reads into the buffer given; returns the bytes read (fewer than asked only at the end). */
export type Reader = (dst: Buffer) => number | Promise<number>;

const BLOCK = 4 << 20;

/** A buffer for chunkStream: reused from one stream to the next. */
export const chunkBuffer = () => Buffer.allocUnsafe(BLOCK + LARGEST_CHUNK);

/**
 * Cut everything `read` gives into chunks, content-defined (`gear`) or, with `gear` null, in
 * FIXED_CHUNK pieces, calling `each` with every chunk in order (a view into `buf`, which is
 * reused: copy what is kept).
 */
export async function chunkStream(gear: Gear | null, read: Reader, each: (chunk: Buffer) => void | Promise<void>, buf = chunkBuffer()): Promise<void> {
  const largest = gear ? MAX_CHUNK : FIXED_CHUNK;
  let have = 0;
  let eof = false;
  while (!eof) {
    const want = buf.length - have;
    const got = await read(buf.subarray(have));
    have += got;
    eof = got < want;
    let pos = 0;
    while (have - pos >= largest || (eof && pos < have)) {
      const len = gear ? cutPoint(gear, buf, pos, have) : Math.min(FIXED_CHUNK, have - pos);
      await each(buf.subarray(pos, pos + len));
      pos += len;
    }
    buf.copy(buf, 0, pos, have);
    have -= pos;
  }
}
