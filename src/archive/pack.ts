// Writing an archive: entries in, sealed segments out. The caller supplies entries (a directory
// walk, a decrypted WhatsApp backup, ...) and recipients; this module owns the layout.
import { createHash, randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { promisify } from 'node:util';
import type { Recipient } from '../keys/types.js';
import { encodeHeader } from './header.js';
import { freeBuffers, payloadKey, SegmentSealer } from './stream.js';
import { Codec, DEFAULT_SEGMENT_SIZE, EntryType, FLAG_CHANGED, FOOTER_LEN, MAX_FRAME, PAYLOAD_NONCE_LEN, REC_ENTRY, REC_INDEX } from './format.js';
import { encodeFooter, encodeHead, encodeIndexEntry, encodeTail, padme, type EntryMeta } from './entries.js';
import type { Sink } from './output.js';

/** Entry content, opened just before its record is written. */
export interface OpenedContent {
  chunks: AsyncIterable<Uint8Array>;
  /** false: store as is (media); true: compress if the first chunk shrinks. */
  compressible: boolean;
  /** After the chunks are consumed: did the file change while it was read? */
  changed(): boolean;
}

export interface SourceEntry {
  path: string;
  type: EntryType;
  mode: number;
  mtimeNs: bigint;
  target?: string;
  /** Files only. May throw SkipEntry (vanished, unreadable) before yielding anything. */
  open?: () => Promise<OpenedContent>;
}

/** Thrown by a source to skip an entry with a warning (exit 3 at the end). */
export class SkipEntry extends Error {}

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
    const res: PackResult = { entries: 0, files: 0, bytesIn: 0, plainSize: 0, archiveSize: 0, skipped: 0, changed: 0 };
    for await (const e of o.entries) {
      o.signal?.throwIfAborted();
      const offset = sealer.position;
      let content: OpenedContent | null = null;
      if (e.type === EntryType.File) {
        try {
          content = await e.open!();
        } catch (err) {
          if (!(err instanceof SkipEntry)) throw err;
          res.skipped++;
          o.onWarning?.(err.message);
          continue;
        }
      }
      const meta: EntryMeta = {
        type: e.type, path: e.path, mode: e.mode & 0o7777, mtimeNs: e.mtimeNs, codec: Codec.Stored,
        target: e.target ?? '', size: 0n, sha256: Buffer.alloc(32), flags: 0,
      };
      if (content) {
        const { size, sha256, codec, changed } = await writeContent(sealer, meta, content, o, res);
        Object.assign(meta, { size, sha256, codec, flags: changed ? FLAG_CHANGED : 0 });
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
    for (const e of index) await sealer.write(e);
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

async function writeContent(sealer: SegmentSealer, meta: EntryMeta, c: OpenedContent, o: PackOptions, res: PackResult) {
  const hash = createHash('sha256');
  let size = 0;
  const it = c.chunks[Symbol.asyncIterator]();
  let first = await it.next();
  // The codec is in the record head, so decide on the first chunk before writing it.
  let codec = Codec.Stored;
  const wanted = o.codec ?? writeCodec;
  let firstFrame: Buffer | null = null;
  if (!first.done && c.compressible && first.value.length >= 64) {
    const z = await compress(first.value, wanted);
    if (z.length < first.value.length * 0.9) {
      codec = wanted;
      firstFrame = z;
    }
  }
  meta.codec = codec;
  await sealer.write(Buffer.of(REC_ENTRY));
  await sealer.write(encodeHead(meta));
  const emit = async (frame: Uint8Array) => {
    await sealer.write(frameHeader(frame.length));
    await sealer.write(frame);
  };
  /** A compressed frame is copied into its segment: its memory can go at once. */
  const emitFree = async (frame: Buffer) => {
    await emit(frame);
    freeBuffers([frame]);
  };
  // Compressed frames in the making, in order: up to COMPRESS_DEPTH chunks are compressed at
  // once on the thread pool, each from its own copy (the source may reuse its buffer).
  const compressing: Array<Promise<Buffer>> = [];
  try {
    while (!first.done) {
      o.signal?.throwIfAborted();
      const chunk = first.value;
      if (chunk.length > MAX_FRAME) throw new Error('content chunk larger than a frame');
      hash.update(chunk);
      size += chunk.length;
      res.bytesIn += chunk.length;
      if (codec === Codec.Stored) {
        // Emit before asking for the next chunk: the source may reuse this chunk's buffer then.
        if (chunk.length) await emit(chunk);
      } else {
        const copy = firstFrame ? null : Buffer.from(chunk);
        const z = copy ? compress(copy, codec).finally(() => freeBuffers([copy])) : Promise.resolve(firstFrame!);
        z.catch(() => {}); // reported in its turn
        compressing.push(z);
        firstFrame = null;
        while (compressing.length >= COMPRESS_DEPTH) await emitFree(await compressing.shift()!);
      }
      first = await it.next();
    }
    while (compressing.length) await emitFree(await compressing.shift()!);
  } finally {
    await Promise.allSettled(compressing); // nothing left running on a failure
  }
  await sealer.write(frameHeader(0));
  const sha256 = hash.digest();
  const changed = c.changed();
  await sealer.write(encodeTail({ size: BigInt(size), sha256, flags: changed ? FLAG_CHANGED : 0 }));
  return { size: BigInt(size), sha256, codec, changed };
}
