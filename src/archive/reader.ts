// Reading an archive: from a file (random access: the footer, the index, any entry's
// segments) or from a pipe (sequential only). Nothing is trusted before the header MAC checks.
import type { KeyObject } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { corruptError, ioError, noKeyError } from '../errors.js';
import type { Identity } from '../keys/types.js';
import { ByteQueue } from '../util/bytequeue.js';
import { FOOTER_LEN, PREAMBLE_LEN, TAG_LEN } from './format.js';
import { headerLengthFromPreamble, looksLikeArchive, parseHeader, readHeaderFrom, confirmFileKey, type ParsedHeader } from './header.js';
import { decodeFooter, type Footer } from './entries.js';
import { freeBuffers, openSegment, openStream, payloadKey, segmentKey, segmentLayout } from './stream.js';

/** Try each identity in turn; the first file key that also verifies the header MAC wins. */
export async function unlockHeader(header: ParsedHeader, identities: Identity[]): Promise<Uint8Array> {
  for (const id of identities) {
    const fileKey = await id.unwrap(header.slots);
    if (fileKey) return confirmFileKey(header, fileKey);
  }
  throw noKeyError(`no slot of this archive opens with the ${identities.map((i) => i.description).join(' or ') || 'given keys'}`);
}

/** A payload's key and its sealed bytes, for a reader that opens segments one by one itself. */
export interface SealedPayload {
  key: KeyObject;
  bytes: AsyncIterable<Uint8Array>;
}

/** An archive whose header has been read; the payload is reachable once a key is attached. */
export interface Archive {
  header: ParsedHeader;
  /** Sequential plaintext of the whole payload, segment by segment. */
  plaintext(): AsyncIterable<Buffer>;
  sealedPayload(): SealedPayload;
  close(): Promise<void>;
}

export class ArchiveFile implements Archive {
  private key: KeyObject | null = null;
  private geometry: ReturnType<typeof segmentLayout> | null = null;
  private constructor(
    private readonly fh: FileHandle,
    readonly path: string,
    readonly size: number,
    readonly header: ParsedHeader,
  ) {}

  static async open(path: string): Promise<ArchiveFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw ioError(err, path, 'open');
    }
    try {
      const size = (await fh.stat()).size;
      return new ArchiveFile(fh, path, size, await readHeaderFrom(fh, path));
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Derive the payload key; `fileKey` must already have verified the header MAC. */
  attachKey(fileKey: Uint8Array): void {
    this.key = segmentKey(payloadKey(fileKey, this.header.nonce));
  }

  /** The segment geometry the file's length implies; computed on first use, so that a damaged length fails there and salvage (which needs none) can still read the file. */
  private get layout(): ReturnType<typeof segmentLayout> {
    return (this.geometry ??= segmentLayout(this.size - this.header.headerLength, this.header.segmentSize));
  }

  /**
   * The payload key and the sealed payload bytes in order (salvage.ts opens them itself), read a
   * sealed segment at a time, so that each can be freed as soon as it is opened.
   */
  sealedPayload(): SealedPayload {
    const { fh, size, path } = this;
    const start = this.header.headerLength;
    const sealedSize = this.header.segmentSize + TAG_LEN;
    async function* bytes() {
      for (let at = start; at < size; ) {
        const buf = Buffer.allocUnsafe(Math.min(sealedSize, size - at));
        const { bytesRead } = await fh.read(buf, 0, buf.length, at);
        if (bytesRead === 0) throw corruptError(`${path} shrank while being read`);
        at += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    }
    return { key: this.key!, bytes: bytes() };
  }

  get segmentCount(): number {
    return this.layout.count;
  }
  get plainSize(): number {
    return this.layout.plainSize;
  }

  /** Ciphertext of segments [first, first+count). */
  private async readSealed(first: number, count: number, into?: Buffer): Promise<Buffer> {
    const start = this.header.headerLength + first * this.layout.sealedSize;
    const end = Math.min(this.size, start + count * this.layout.sealedSize);
    const buf = into ? into.subarray(0, end - start) : Buffer.allocUnsafe(end - start);
    let off = 0;
    while (off < buf.length) {
      const { bytesRead } = await this.fh.read(buf, off, buf.length - off, start + off);
      if (bytesRead === 0) throw corruptError(`${this.path} shrank while being read`);
      off += bytesRead;
    }
    return buf;
  }

  /** Authenticate one segment (throws a corrupt error naming it when it does not). */
  async checkSegment(i: number): Promise<void> {
    const sealed = await this.readSealed(i, 1);
    freeBuffers(openSegment(this.key!, i, i === this.layout.count - 1, sealed));
    freeBuffers([sealed]);
  }

  /** Plaintext bytes [offset, offset+length) as a sequence of buffers, reading ahead. */
  async *range(offset: number, length: number): AsyncGenerator<Buffer> {
    if (length === 0) return;
    const seg = this.header.segmentSize;
    const first = Math.floor(offset / seg);
    const last = Math.floor((offset + length - 1) / seg);
    if (last >= this.layout.count) throw corruptError('a record points beyond the end of the payload');
    // No bigger than the range: a footer or an index entry is read with a segment's worth.
    const BATCH = Math.min(last - first + 1, Math.max(1, Math.floor((4 << 20) / this.layout.sealedSize)));
    // Two batch buffers alternate: one is read into while the other's segments are opened (a
    // batch is fully opened, into new plaintext buffers, before its buffer is read into again).
    const bufs = [Buffer.allocUnsafe(BATCH * this.layout.sealedSize), Buffer.allocUnsafe(BATCH * this.layout.sealedSize)];
    let i = first;
    let turn = 0;
    let next: Promise<Buffer> | null = this.readSealed(i, Math.min(BATCH, last - i + 1), bufs[turn]);
    try {
      while (next) {
        const sealed = await next;
        const n = Math.ceil(sealed.length / this.layout.sealedSize);
        const after = i + n;
        turn ^= 1;
        next = after <= last ? this.readSealed(after, Math.min(BATCH, last - after + 1), bufs[turn]) : null;
        for (let k = 0; k < n; k++, i++) {
          const part = sealed.subarray(k * this.layout.sealedSize, (k + 1) * this.layout.sealedSize);
          // The segment's pieces that overlap the range, cut to it.
          const lo = offset - i * seg;
          const hi = offset + length - i * seg;
          let at = 0;
          for (const piece of openSegment(this.key!, i, i === this.layout.count - 1, part)) {
            const from = Math.max(lo - at, 0);
            const to = Math.min(hi - at, piece.length);
            at += piece.length;
            if (from >= to) freeBuffers([piece]);
            else yield from === 0 && to === piece.length ? piece : piece.subarray(from, to);
          }
        }
      }
    } finally {
      // Freed now rather than by the garbage collector, once no read is filling them.
      await next?.catch(() => {});
      freeBuffers(bufs);
    }
  }

  async readRange(offset: number, length: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const p of this.range(offset, length)) parts.push(p);
    return Buffer.concat(parts, length);
  }

  plaintext(): AsyncIterable<Buffer> {
    return this.range(0, this.plainSize);
  }

  async footer(): Promise<Footer> {
    if (this.plainSize < FOOTER_LEN) throw corruptError('payload too short to hold a footer');
    return decodeFooter(await this.readRange(this.plainSize - FOOTER_LEN, FOOTER_LEN), this.plainSize);
  }


  async close(): Promise<void> {
    this.key = null;
    await this.fh.close().catch(() => {});
  }
}

/** An archive arriving on a pipe: the header is read first, the payload streamed after it. */
export class ArchiveStream implements Archive {
  private key: KeyObject | null = null;
  private constructor(
    readonly header: ParsedHeader,
    private readonly rest: AsyncIterable<Uint8Array>,
  ) {}

  static async open(input: AsyncIterable<Uint8Array>, name = 'standard input'): Promise<ArchiveStream> {
    const it = input[Symbol.asyncIterator]();
    const q = new ByteQueue();
    const fill = async (n: number) => {
      while (q.length < n) {
        const r = await it.next();
        if (r.done) return false;
        q.push(r.value);
      }
      return true;
    };
    await fill(PREAMBLE_LEN);
    const pre = q.length ? q.take(Math.min(q.length, PREAMBLE_LEN)) : Buffer.alloc(0);
    if (!looksLikeArchive(pre)) throw corruptError(`${name} is not a backupctl archive`);
    const len = headerLengthFromPreamble(pre);
    if (!(await fill(len - PREAMBLE_LEN))) throw corruptError(`${name}: truncated header`);
    const header = parseHeader(Buffer.concat([pre, q.take(len - PREAMBLE_LEN)]));
    const leftover = q.length ? q.take(q.length) : null;
    async function* rest() {
      if (leftover) yield leftover;
      for (;;) {
        const r = await it.next();
        if (r.done) return;
        yield r.value;
      }
    }
    return new ArchiveStream(header, rest());
  }

  attachKey(fileKey: Uint8Array): void {
    this.key = segmentKey(payloadKey(fileKey, this.header.nonce));
  }

  plaintext(): AsyncIterable<Buffer> {
    return openStream(this.key!, this.header.segmentSize, this.rest);
  }

  /** The payload key and the sealed bytes as they arrive (instead of plaintext(), not as well). */
  sealedPayload(): SealedPayload {
    return { key: this.key!, bytes: this.rest };
  }

  async close(): Promise<void> {
    this.key = null;
  }
}

