// Writing an archive: entries in, sealed segments out. The caller supplies entries (a directory
// walk, a decrypted WhatsApp backup, ...) and recipients; this module owns the layout.
import { createHash, randomBytes, type Hash } from 'node:crypto';
import zlib from 'node:zlib';
import { promisify } from 'node:util';
import type { Recipient } from '../keys/types.js';
import { encodeHeader } from './header.js';
import { freeBuffers, payloadKey, SegmentSealer } from './stream.js';
import { Codec, DEFAULT_SEGMENT_SIZE, EntryType, FLAG_CHANGED, FOOTER_LEN, PAYLOAD_NONCE_LEN, REC_ENTRY, REC_INDEX } from './format.js';
import { encodeFooter, encodeHead, encodeIndexEntry, encodeTail, padme, TAIL_LEN, TAIL_SHA256_AT, type EntryMeta } from './entries.js';
import type { Sink } from './output.js';

/** Entry content, opened just before its record is written. */
export interface OpenedContent {
  /**
   * Put the next bytes of the content into `dst` and say how many: all of `dst` unless the
   * content ends there. Stored content is read this way straight into its place in the segment.
   */
  read(dst: Buffer): number | Promise<number>;
  /** false: store as is (media); true: compress if the first frame shrinks. */
  compressible: boolean;
  /** After the content has ended: did the file change while it was read? */
  changed(): boolean;
  /** Let go of the source; called once, whether or not the content was read to its end. */
  close(): void | Promise<void>;
}

/** Content from a stream of chunks (decrypted legacy backups, tests); a chunk may be reused once the next is asked for. */
export function chunkedContent(chunks: AsyncIterable<Uint8Array>, compressible: boolean): OpenedContent {
  const it = chunks[Symbol.asyncIterator]();
  let rest: Uint8Array = new Uint8Array(0);
  let ended = false;
  return {
    async read(dst) {
      let got = 0;
      while (got < dst.length && !ended) {
        if (rest.length === 0) {
          const r = await it.next();
          if (r.done) ended = true;
          else rest = r.value;
          continue;
        }
        const k = Math.min(rest.length, dst.length - got);
        dst.set(rest.subarray(0, k), got);
        rest = rest.subarray(k);
        got += k;
      }
      return got;
    },
    compressible,
    changed: () => false,
    async close() {
      if (!ended) await it.return?.();
    },
  };
}

export interface SourceEntry {
  path: string;
  type: EntryType;
  mode: number;
  mtimeNs: bigint;
  target?: string;
  /** Files only. May throw SkipEntry (vanished, unreadable) before yielding anything. */
  open?: () => Promise<OpenedContent>;
  /** Files only, as listed: what a repository's files cache compares (src/repo/files-cache.ts). */
  stat?: { size: bigint; ino: bigint; ctimeNs: bigint };
}

/** Thrown by a source to skip an entry with a warning (exit 3 at the end). */
export class SkipEntry extends Error {}

/** A file entry's content, or null when the source skips it (counted in `counts.skipped`, warned about). */
export async function openContent(e: SourceEntry, counts: { skipped: number }, warn?: (message: string) => void): Promise<OpenedContent | null> {
  try {
    return await e.open!();
  } catch (err) {
    if (!(err instanceof SkipEntry)) throw err;
    counts.skipped++;
    warn?.(err.message);
    return null;
  }
}

export interface PackOptions {
  recipients: Recipient[];
  entries: AsyncIterable<SourceEntry>;
  sink: Sink;
  segmentSize?: number;
  signal?: AbortSignal;
  onProgress?: (p: { bytes: number; entries: number; path: string }) => void;
  onWarning?: (message: string) => void;
  /** Test vectors only: fixed randomness. The CLI never sets this. */
  fixed?: { fileKey: Uint8Array; nonce: Uint8Array; created: string };
  /** Compression codec for compressible files (default: zstd where Node has it, else deflate). */
  codec?: Codec.Zstd | Codec.Deflate;
}

export interface PackResult {
  entries: number;
  files: number;
  bytesIn: number;
  plainSize: number;
  archiveSize: number;
  skipped: number;
  changed: number;
}

/** Chunks being compressed at once (libuv's pool has four threads). */
const COMPRESS_DEPTH = 4;

/**
 * Content bytes per frame: the kernel copied into a 256 KiB buffer at four times the speed of a
 * 1 MiB one (it stays in the CPU's cache, where the hashing then finds it).
 */
const FRAME = 256 << 10;

const hasZstd = typeof zlib.zstdCompress === 'function';
const zstd = hasZstd ? promisify(zlib.zstdCompress) : null;
const deflate = promisify(zlib.deflateRaw);
/** The codec new archives use: zstd (Node ≥ 22.15), raw deflate on older Node. */
export const writeCodec = hasZstd ? Codec.Zstd : Codec.Deflate;

function compress(data: Uint8Array, codec: Codec): Promise<Buffer> {
  return codec === Codec.Zstd && zstd
    ? zstd(data, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } })
    : deflate(data, { level: 6 });
}

const NO_HASH = Buffer.alloc(32);

/** A frame: u32 length + bytes; a zero length ends the content. */
function frameHeader(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n, 0);
  return b;
}

export async function writeArchive(o: PackOptions): Promise<PackResult> {
  const segmentSize = o.segmentSize ?? DEFAULT_SEGMENT_SIZE;
  if (o.codec === Codec.Zstd && !hasZstd) throw new Error('zstd needs Node.js 22.15 or newer');
  const fileKey = o.fixed ? Uint8Array.from(o.fixed.fileKey) : new Uint8Array(randomBytes(32));
  const nonce = o.fixed ? o.fixed.nonce : new Uint8Array(randomBytes(PAYLOAD_NONCE_LEN));
  const created = o.fixed?.created ?? new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
  try {
    const slots = o.recipients.map((r) => r.wrap(fileKey));
    const header = encodeHeader({ created, segmentSize, nonce, slots }, fileKey);
    await o.sink.write(header);
    const sealer = new SegmentSealer(o.sink.segments(payloadKey(fileKey, nonce), segmentSize), segmentSize);
    fileKey.fill(0);

    // Index entries are kept encoded (their bytes in Node's shared pool: ~200 bytes each with a
    // 40-character path), not as objects with a Buffer and two bigints each (~530 bytes).
    const index: Buffer[] = [];
    /** Entries (ascending) whose hash the sealing side computes: it fills in their digests. */
    const sealerHashed: number[] = [];
    const res: PackResult = { entries: 0, files: 0, bytesIn: 0, plainSize: 0, archiveSize: 0, skipped: 0, changed: 0 };
    for await (const e of o.entries) {
      o.signal?.throwIfAborted();
      const offset = sealer.position;
      let content: OpenedContent | null = null;
      if (e.type === EntryType.File) {
        content = await openContent(e, res, o.onWarning);
        if (!content) continue;
      }
      const meta: EntryMeta = {
        type: e.type, path: e.path, mode: e.mode & 0o7777, mtimeNs: e.mtimeNs, codec: Codec.Stored,
        target: e.target ?? '', size: 0n, sha256: Buffer.alloc(32), flags: 0,
      };
      if (content) {
        const { size, sha256, codec, changed } = await writeContent(sealer, meta, content, o, res, index.length);
        Object.assign(meta, { size, sha256: sha256 ?? meta.sha256, codec, flags: changed ? FLAG_CHANGED : 0 });
        if (!sha256) sealerHashed.push(index.length);
        res.files++;
        if (changed) {
          res.changed++;
          o.onWarning?.(`${e.path} changed while it was being read; the archive holds what was read`);
        }
      } else {
        await sealer.write(Buffer.of(REC_ENTRY));
        await sealer.write(encodeHead(meta));
        if (e.type === EntryType.Symlink) {
          const t = Buffer.from(meta.target, 'utf8');
          meta.size = BigInt(t.length);
          meta.sha256 = createHash('sha256').update(t).digest();
        }
        await sealer.write(encodeTail(meta));
      }
      index.push(encodeIndexEntry({ ...meta, offset, length: sealer.position - offset }));
      res.entries++;
      o.onProgress?.({ bytes: res.bytesIn, entries: res.entries, path: e.path });
    }

    const indexOffset = sealer.position;
    await sealer.write(Buffer.of(REC_INDEX));
    for (let i = 0, k = 0; i < index.length; i++) {
      const e = index[i]!;
      if (sealerHashed[k] !== i) {
        await sealer.write(e);
        continue;
      }
      k++;
      await sealer.writeDigested(e, e.length - TAIL_LEN + TAIL_SHA256_AT, i);
    }
    const indexLength = sealer.position - indexOffset;
    const unpadded = sealer.position + FOOTER_LEN;
    await sealer.zeros(padme(unpadded) - unpadded);
    await sealer.write(encodeFooter({ indexOffset, indexLength, entryCount: index.length }));
    res.plainSize = sealer.position;
    await sealer.finish();
    await o.sink.commit();
    res.archiveSize = o.sink.bytesWritten;
    return res;
  } catch (err) {
    await o.sink.abort();
    throw err;
  } finally {
    fileKey.fill(0);
  }
}

/**
 * Write a file's record. Stored content is read in place into the segments and hashed either
 * here or, when the sealing side keeps up better, where the segments are sealed (span-hash.ts):
 * then no sha256 is returned, and the digest in the tail is filled in there.
 */
async function writeContent(sealer: SegmentSealer, meta: EntryMeta, c: OpenedContent, o: PackOptions, res: PackResult, id: number) {
  let hash: Hash | null = createHash('sha256');
  let size = 0;
  const took = (data: Uint8Array) => {
    hash?.update(data);
    size += data.length;
    res.bytesIn += data.length;
  };
  const read = (dst: Buffer) => {
    o.signal?.throwIfAborted();
    return c.read(dst);
  };
  try {
    // The codec is in the record head, so compressible content is decided on its first frame.
    let firstBuf: Buffer | null = null; // owns its memory: freed once used
    let first: Buffer | null = null;
    let firstFrame: Buffer | null = null;
    const wanted = o.codec ?? writeCodec;
    if (c.compressible) {
      firstBuf = Buffer.allocUnsafeSlow(FRAME);
      first = firstBuf.subarray(0, await read(firstBuf));
      if (first.length >= 64) {
        const z = await compress(first, wanted);
        if (z.length < first.length * 0.9) firstFrame = z;
        else freeBuffers([z]);
      }
    }
    meta.codec = firstFrame ? wanted : Codec.Stored;
    await sealer.write(Buffer.of(REC_ENTRY));
    await sealer.write(encodeHead(meta));
    if (firstFrame) {
      took(first!);
      const ended = first!.length < FRAME;
      freeBuffers([firstBuf!]); // (detaches `first` too)
      await writeCompressed(sealer, ended, firstFrame, meta.codec, read, took);
    } else {
      let ended = false;
      if (first) {
        // Compressible content that did not shrink: its first frame was read aside.
        took(first);
        if (first.length) {
          await sealer.write(frameHeader(first.length));
          await sealer.write(first);
        }
        ended = first.length < FRAME;
        freeBuffers([firstBuf!]);
      } else if (sealer.sealerHashes()) {
        hash = null;
      }
      while (!ended) {
        const area = await sealer.frame(FRAME);
        const n = await read(area);
        sealer.endFrame(n, hash ? undefined : id);
        if (n === 0) break; // that frame's zero length is the end mark
        took(area.subarray(0, n));
        ended = n < area.length;
      }
      if (ended) await sealer.write(frameHeader(0));
    }
  } finally {
    await c.close();
  }
  const changed = c.changed();
  const sha256 = hash?.digest() ?? null;
  const tail = encodeTail({ size: BigInt(size), sha256: sha256 ?? NO_HASH, flags: changed ? FLAG_CHANGED : 0 });
  if (sha256) await sealer.write(tail);
  else await sealer.writeDigested(tail, TAIL_SHA256_AT, id);
  return { size: BigInt(size), sha256, codec: meta.codec, changed };
}

/**
 * Compressed content after its first frame (`ended`: there is no more): up to COMPRESS_DEPTH
 * frames are compressed at once on the thread pool, each read into a buffer of its own that is
 * freed once compressed; frames are written in order, then the end mark.
 */
async function writeCompressed(
  sealer: SegmentSealer,
  ended: boolean,
  firstFrame: Buffer,
  codec: Codec,
  read: (dst: Buffer) => number | Promise<number>,
  took: (data: Uint8Array) => void,
) {
  const emit = async (frame: Buffer) => {
    await sealer.write(frameHeader(frame.length));
    await sealer.write(frame);
    freeBuffers([frame]); // copied into its segment
  };
  const compressing: Array<Promise<Buffer>> = [Promise.resolve(firstFrame)];
  try {
    while (!ended) {
      const buf = Buffer.allocUnsafeSlow(FRAME);
      const data = buf.subarray(0, await read(buf));
      ended = data.length < FRAME;
      if (data.length === 0) break;
      took(data);
      const z = compress(data, codec).finally(() => freeBuffers([buf]));
      z.catch(() => {}); // reported in its turn
      compressing.push(z);
      while (compressing.length >= COMPRESS_DEPTH) await emit(await compressing.shift()!);
    }
    while (compressing.length) await emit(await compressing.shift()!);
  } finally {
    await Promise.allSettled(compressing); // nothing left running on a failure
  }
  await sealer.write(frameHeader(0));
}
