// Parsing the payload plaintext record by record, as it streams: each entry record's head,
// its content (decoded frame by frame), its tail; then the index marker. Used by restore and
// verify alike, whether the plaintext comes from a file or a pipe.
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { BackupctlError, Exit, corruptError } from '../errors.js';
import { ByteQueue } from '../util/bytequeue.js';
import { Codec, EntryType, MAX_FRAME, REC_ENTRY, REC_INDEX } from './format.js';
import { readHead, readTail, type ByteSource, type EntryMeta } from './entries.js';

/** A ByteSource over a stream of plaintext buffers. */
export class StreamSource implements ByteSource {
  private q = new ByteQueue();
  private it: AsyncIterator<Buffer>;
  /** Plaintext offset of the next byte to be read. */
  position = 0;
  constructor(plain: AsyncIterable<Buffer>) {
    this.it = plain[Symbol.asyncIterator]();
  }
  private async fill(n: number): Promise<void> {
    while (this.q.length < n) {
      const r = await this.it.next();
      if (r.done) throw corruptError('payload ends in the middle of a record');
      this.q.push(r.value);
    }
  }
  async read(n: number): Promise<Buffer> {
    await this.fill(n);
    this.position += n;
    return this.q.take(n);
  }
  /** Up to n bytes without copying (at least 1). */
  async readSome(n: number): Promise<Buffer> {
    await this.fill(1);
    const b = this.q.takeSome(n);
    this.position += b.length;
    return b;
  }
  /** Consume and return everything left. */
  async rest(): Promise<Buffer> {
    for (;;) {
      const r = await this.it.next();
      if (r.done) break;
      this.q.push(r.value);
    }
    this.position += this.q.length;
    return this.q.take(this.q.length);
  }
}

function decoder(codec: Codec, path: string): (frame: Buffer) => Buffer {
  if (codec === Codec.Stored) return (f) => f;
  return (f) => {
    try {
      if (codec === Codec.Deflate) return zlib.inflateRawSync(f, { maxOutputLength: MAX_FRAME });
      if (typeof zlib.zstdDecompressSync !== 'function') {
        throw new BackupctlError(Exit.corrupt, `${path} is zstd-compressed and this Node.js has no zstd: use Node.js 22.15 or newer`);
      }
      return zlib.zstdDecompressSync(f, { maxOutputLength: MAX_FRAME });
    } catch (err) {
      if (err instanceof BackupctlError) throw err;
      throw corruptError(`${path}: compressed content is damaged`);
    }
  };
}

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
   * size checked against the tail. `sink` gets every decoded chunk in order.
   */
  async content(head: Omit<EntryMeta, 'size' | 'sha256' | 'flags'>, sink: (chunk: Buffer) => void | Promise<void>): Promise<EntryMeta> {
    const hash = createHash('sha256');
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
            hash.update(piece);
            size += BigInt(piece.length);
            await sink(piece);
          }
        } else {
          const out = decode(await this.src.read(n));
          hash.update(out);
          size += BigInt(out.length);
          await sink(out);
        }
      }
    } else if (head.type === EntryType.Symlink) {
      const t = Buffer.from(head.target, 'utf8');
      hash.update(t);
      size = BigInt(t.length);
    }
    const tail = await readTail(this.src);
    if (tail.size !== size) throw corruptError(`${head.path}: size ${size} does not match the recorded ${tail.size}`);
    const digest = hash.digest();
    if (head.type !== EntryType.Dir && !digest.equals(tail.sha256)) throw corruptError(`${head.path}: content hash mismatch`);
    return { ...head, ...tail };
  }
}

/** Same entry, as recorded in the index and as met in the stream? */
export function sameEntry(a: EntryMeta, b: EntryMeta): boolean {
  return (
    a.type === b.type && a.path === b.path && a.mode === b.mode && a.mtimeNs === b.mtimeNs && a.codec === b.codec &&
    a.target === b.target && a.size === b.size && a.sha256.equals(b.sha256) && a.flags === b.flags
  );
}
