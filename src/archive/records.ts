// Parsing the payload plaintext record by record, as it streams: each entry record's head,
// its content (decoded frame by frame), its tail; then the index marker. Used by restore and
// verify alike, whether the plaintext comes from a file or a pipe.
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { BackupctlError, Exit, corruptError } from '../errors.js';
import { ByteQueue } from '../util/bytequeue.js';
import { freeBuffers } from './stream.js';
import { Codec, EntryType, FOOTER_LEN, MAX_FRAME, REC_ENTRY, REC_INDEX } from './format.js';
import { IndexDecoder, decodeFooter, encodeIndexEntry, readHead, readTail, type ByteSource, type EntryMeta, type Footer, type IndexEntry } from './entries.js';
import type { ArchiveFile } from './reader.js';

/**
 * A ByteSource over a stream of plaintext buffers. Buffers that own their memory (decrypted
 * segments) are freed as soon as they are consumed, at the next request (the bytes handed out
 * last are the caller's until then), instead of by the garbage collector: V8 lets tens of
 * megabytes of such memory pile up first. Callers must not keep what they are given beyond the
 * next request (every caller copies what it keeps, such as a tail's hash).
 */
export class StreamSource implements ByteSource {
  private q = new ByteQueue();
  private it: AsyncIterator<Buffer>;
  /** Each pushed buffer and its bytes not yet consumed, oldest first. */
  private pushed: Array<{ left: number; buf: Buffer }> = [];
  private retired: Buffer[] = [];
  /** Plaintext offset of the next byte to be read. */
  position = 0;
  constructor(plain: AsyncIterable<Buffer>) {
    this.it = plain[Symbol.asyncIterator]();
  }
  private push(b: Buffer): void {
    if (b.length === 0) return;
    this.q.push(b);
    this.pushed.push({ left: b.length, buf: b });
  }
  private consumed(n: number): void {
    this.position += n;
    while (n > 0) {
      const o = this.pushed[0]!;
      const k = Math.min(n, o.left);
      o.left -= k;
      n -= k;
      if (o.left === 0) {
        this.pushed.shift();
        this.retired.push(o.buf); // freeBuffers leaves alone what does not own its memory
      }
    }
  }
  /** Have at least n bytes queued; false if the payload ends first. */
  private async more(n: number): Promise<boolean> {
    // Freed two buffers late: freeing each at once handed its memory back to the system (the
    // top of the heap), to be faulted in again for the next segment (a third more CPU time).
    if (this.retired.length > 2) freeBuffers(this.retired.splice(0, this.retired.length - 2));
    while (this.q.length < n) {
      const r = await this.it.next();
      if (r.done) return false;
      this.push(r.value);
    }
    return true;
  }
  private async fill(n: number): Promise<void> {
    if (!(await this.more(n))) throw corruptError('payload ends in the middle of a record');
  }
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    this.consumed(n);
    return this.q.take(n);
  }
  /** Up to n bytes without copying (at least 1). */
  async readSome(n: number): Promise<Buffer> {
    await this.fill(1);
    const b = this.q.takeSome(n);
    this.consumed(b.length);
    return b;
  }
  /** The next bytes as they come (without copying), or null at the end of the payload. */
  async next(): Promise<Buffer | null> {
    if (!(await this.more(1))) return null;
    const b = this.q.takeSome(this.q.length);
    this.consumed(b.length);
    return b;
  }
}

/**
 * The output chunk size for decompressing a content frame: one chunk holds any frame (a writer
 * puts at most 1 MiB of input in one, backupctl-format(5)), so zlib's synchronous decoders give
 * the frame back as the start of a chunk of its own, which freeFrame can free. With zlib's default
 * 16 KiB chunks every frame left sixteen garbage buffers and a copy: restoring a 108 MB chat log
 * peaked 30 MB higher. (The asynchronous encoders copy their output out whatever the chunk size.)
 */
const FRAME_CHUNK = (1 << 20) + 1;

/** zlib's output chunk for a chunk of `size` bytes (zlib's smallest is 64). */
const decodedChunk = (size: number) => Math.max(64, size + 1);

/**
 * Free a chunk of `size` bytes that decoder(codec, path, size) gave, once used. Only a buffer of
 * zlib's own is: a small chunk comes back copied into Node's buffer pool (whose slabs are never
 * size + 1 bytes long: the pool takes only what is under half a slab), and one of Stored is the
 * input itself.
 */
export function freeDecoded(chunk: Buffer, codec: Codec, size: number): void {
  if (codec !== Codec.Stored && chunk.byteOffset === 0 && chunk.length === size && chunk.buffer.byteLength === decodedChunk(size)) freeBuffers([Buffer.from(chunk.buffer)]);
}

/** Free a frame decoded in FRAME_CHUNK chunks, once used (a larger one owns its memory). */
function freeFrame(frame: Buffer): void {
  freeBuffers([frame.byteOffset === 0 && frame.buffer.byteLength === FRAME_CHUNK ? Buffer.from(frame.buffer) : frame]);
}

/**
 * Decodes frames of `codec` (Stored: as they are). `size`, when known (a repository chunk's
 * rawLength), is the size of zlib's output chunk (plus the byte that shows the end): a chunk
 * then comes back as the start of a buffer of its own size, freeable with freeDecoded, instead
 * of a view of a FRAME_CHUNK buffer (a restore of 100,000 files left 1 MiB per chunk to the
 * garbage collector, reading its tree alone 180 MB).
 */
export function decoder(codec: Codec, path: string, size?: number): (frame: Buffer) => Buffer {
  if (codec === Codec.Stored) return (f) => f;
  const options = { maxOutputLength: MAX_FRAME, chunkSize: size === undefined ? FRAME_CHUNK : decodedChunk(size) };
  return (f) => {
    try {
      if (codec === Codec.Deflate) return zlib.inflateRawSync(f, options);
      if (typeof zlib.zstdDecompressSync !== 'function') {
        throw new BackupctlError(Exit.corrupt, `${path} is zstd-compressed and this Node.js has no zstd: use Node.js 22.15 or newer`);
      }
      return zlib.zstdDecompressSync(f, options);
    } catch (err) {
      if (err instanceof BackupctlError) throw err;
      throw corruptError(`${path}: compressed content is damaged`);
    }
  };
}

export const hashMismatch = (path: string) => corruptError(`${path}: content hash mismatch`);

export type Record =
  | { kind: 'entry'; offset: number; head: Omit<EntryMeta, 'size' | 'sha256' | 'flags'> }
  | { kind: 'index'; offset: number };

export class RecordReader {
  constructor(readonly src: StreamSource) {}

  async next(): Promise<Record> {
    const offset = this.src.position;
    const kind = (await this.src.read(1))[0];
    if (kind === REC_INDEX) return { kind: 'index', offset };
    if (kind !== REC_ENTRY) throw corruptError(`unknown record type 0x${kind!.toString(16)} at payload offset ${offset}`);
    return { kind: 'entry', offset, head: await readHead(this.src) };
  }

  /**
   * The decoded content of the current file entry, then its tail, with the content hash and
   * size checked against the tail. `sink` gets every decoded chunk in order, and must not keep
   * it once it returns. `hashedBySink`: the sink checks a file's content against the tail's
   * hash itself (restore's staging thread), so it is not hashed here.
   */
  async content(head: Omit<EntryMeta, 'size' | 'sha256' | 'flags'>, sink: (chunk: Buffer) => void | Promise<void>, hashedBySink = false): Promise<EntryMeta> {
    const hash = hashedBySink && head.type === EntryType.File ? null : createHash('sha256');
    let size = 0n;
    if (head.type === EntryType.File) {
      const decode = decoder(head.codec, head.path);
      for (;;) {
        const n = (await this.src.read(4)).readUInt32BE(0);
        if (n === 0) break;
        if (n > MAX_FRAME) throw corruptError(`${head.path}: frame length ${n} out of range`);
        if (head.codec === Codec.Stored) {
          // Stored frames are passed on in the pieces they arrive in: no copy.
          let left = n;
          while (left > 0) {
            const piece = await this.src.readSome(left);
            left -= piece.length;
            hash?.update(piece);
            size += BigInt(piece.length);
            await sink(piece);
          }
        } else {
          const out = decode(await this.src.read(n));
          hash?.update(out);
          size += BigInt(out.length);
          await sink(out);
          freeFrame(out); // the sink is done with it (none keeps a chunk)
        }
      }
    } else if (head.type === EntryType.Symlink) {
      const t = Buffer.from(head.target, 'utf8');
      hash!.update(t);
      size = BigInt(t.length);
    }
    const tail = await readTail(this.src);
    if (tail.size !== size) throw corruptError(`${head.path}: size ${size} does not match the recorded ${tail.size}`);
    if (hash && head.type !== EntryType.Dir && !hash.digest().equals(tail.sha256)) throw hashMismatch(head.path);
    return { ...head, ...tail };
  }
}

/** Same head (everything before the content), as recorded in the index and as met in the stream? */
export function sameHead(a: Omit<EntryMeta, 'size' | 'sha256' | 'flags'>, b: Omit<EntryMeta, 'size' | 'sha256' | 'flags'>): boolean {
  return a.type === b.type && a.path === b.path && a.mode === b.mode && a.mtimeNs === b.mtimeNs && a.codec === b.codec && a.target === b.target;
}

/** Same entry, as recorded in the index and as met in the stream? */
export function sameEntry(a: EntryMeta, b: EntryMeta): boolean {
  return sameHead(a, b) && a.size === b.size && a.sha256.equals(b.sha256) && a.flags === b.flags;
}

/**
 * What the index must be, built from the entries as they are met in the stream: the hash and
 * length of their index records, so that the index can be checked against the payload in
 * constant memory instead of keeping every entry until the index arrives. The encoding is
 * canonical (backupctl-format(5) "PAYLOAD PLAINTEXT"), so equal bytes mean equal entries.
 */
export class ExpectedIndex {
  private hash = createHash('sha256');
  length = 0;
  count = 0;
  add(meta: EntryMeta, offset: number, length: number): void {
    const rec = encodeIndexEntry({ ...meta, offset, length });
    this.hash.update(rec);
    this.length += rec.length;
    this.count++;
  }
  digest(): Buffer {
    return this.hash.digest();
  }
}

const ZEROS = Buffer.alloc(64 << 10);
function isZero(b: Buffer): boolean {
  for (let o = 0; o < b.length; o += ZEROS.length) {
    const part = b.subarray(o, o + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

/**
 * Everything after the index marker met at `markerOffset`, streamed: the index must be exactly
 * `expected`, the padding all zeros, and the footer must point at this index.
 */
export async function checkIndexAndTail(src: StreamSource, markerOffset: number, expected: ExpectedIndex): Promise<Footer> {
  const hash = createHash('sha256');
  let indexLeft = expected.length;
  // Every byte after the index but the last FOOTER_LEN is padding and must be zero; only the
  // last FOOTER_LEN bytes seen so far are kept.
  let last = Buffer.alloc(0);
  for (let piece = await src.next(); piece; piece = await src.next()) {
    if (indexLeft > 0) {
      const part = piece.subarray(0, indexLeft);
      hash.update(part);
      indexLeft -= part.length;
      piece = piece.subarray(part.length);
    }
    if (piece.length >= FOOTER_LEN) {
      if (!isZero(last) || !isZero(piece.subarray(0, piece.length - FOOTER_LEN))) throw corruptError('padding is not zero');
      last = Buffer.from(piece.subarray(piece.length - FOOTER_LEN));
    } else if (piece.length > 0) {
      const all = Buffer.concat([last, piece]);
      const drop = Math.max(0, all.length - FOOTER_LEN);
      if (!isZero(all.subarray(0, drop))) throw corruptError('padding is not zero');
      last = all.subarray(drop);
    }
  }
  if (indexLeft > 0 || last.length < FOOTER_LEN) throw corruptError('payload too short to hold the index and footer');
  const footer = decodeFooter(last, src.position);
  if (footer.indexOffset !== markerOffset) throw corruptError('the footer does not point at the index');
  if (footer.indexLength !== expected.length + 1 || footer.entryCount !== expected.count || !hash.digest().equals(expected.digest())) {
    throw corruptError('the index does not match the entries in the payload');
  }
  return footer;
}

/**
 * The index of an archive file, decoded segment by segment as it is decrypted, in batches (the
 * entries each segment completes): never the whole index region in one buffer next to its
 * segments and the decoded entries, and a caller that only looks at each entry once need not
 * keep any.
 */
export async function* indexBatches(a: ArchiveFile): AsyncGenerator<IndexEntry[]> {
  const f = await a.footer();
  const d = new IndexDecoder(f.entryCount, f.indexLength - 1);
  let marker = true;
  for await (let piece of a.range(f.indexOffset, f.indexLength)) {
    if (marker) {
      if (piece[0] !== REC_INDEX) throw corruptError('index record marker missing');
      piece = piece.subarray(1);
      marker = false;
    }
    if (piece.length) yield d.push(piece);
  }
  d.end();
}

/** The whole index of an archive file. */
export async function readIndex(a: ArchiveFile): Promise<IndexEntry[]> {
  const entries: IndexEntry[] = [];
  for await (const batch of indexBatches(a)) for (const e of batch) entries.push(e);
  return entries;
}
