// Every repository file but the marker and the locks is an archive-format envelope: the header
// with its key slots and MAC (archive/header.ts), then the STREAM segments (archive/stream.ts).
// Only the plaintext inside differs. A repository file is therefore opened exactly as an archive
// is, by whoever holds the slot's key, and `inspect` reads its header without one.
import { randomBytes, type KeyObject } from 'node:crypto';
import { corruptError, noKeyError } from '../errors.js';
import { confirmFileKey, encodeHeader, headerLengthFromPreamble, parseHeader, type ParsedHeader } from '../archive/header.js';
import { TAG_LEN } from '../archive/format.js';
import { freeBuffers, openSegment, payloadKey, sealSegment, segmentKey, segmentLayout } from '../archive/stream.js';
import type { Identity, Recipient } from '../keys/types.js';

/** Plaintext bytes per segment in repository files: a chunk read by range decrypts little more than itself. */
export const REPO_SEGMENT = 64 << 10;

/** The file `plain` seals to: header (slots for `recipients`) and segments, as pieces to write. */
export function seal(plain: Uint8Array, recipients: readonly Recipient[]): Buffer[] {
  return [...sealSegments(plain, recipients)].flat();
}

/** The bytes seal() gives `plain` at most, with `slots` key slots (TAG_LEN per segment, a header of at most 4 KiB and 512 bytes a slot). */
export const sealedBound = (plainLength: number, slots: number) => plainLength + Math.ceil(plainLength / REPO_SEGMENT) * TAG_LEN + 4096 + 512 * slots;

/**
 * The same, written into `out` (at least sealedBound bytes); its length. Each segment's pieces are
 * freed as soon as the next one is sealed: the cipher's output memory is reused from one to the
 * next instead of being handed back to the system and faulted in again (a pack's worth at once
 * cost a third more page faults than `create` of the same export).
 */
export function sealInto(plain: Uint8Array, recipients: readonly Recipient[], out: Uint8Array): number {
  let at = 0;
  let previous: Buffer[] = [];
  for (const pieces of sealSegments(plain, recipients)) {
    for (const p of pieces) {
      out.set(p, at);
      at += p.length;
    }
    freeBuffers(previous);
    previous = pieces;
  }
  freeBuffers(previous);
  return at;
}

/** The file `plain` seals to, in order: its header, then each segment's pieces, each sealed when asked for. */
export function* sealSegments(plain: Uint8Array, recipients: readonly Recipient[]): Generator<Buffer[]> {
  if (plain.length === 0) throw new Error('a sealed repository file is never empty');
  const fileKey = randomBytes(32);
  const nonce = randomBytes(16);
  const slots = recipients.map((r) => r.wrap(fileKey));
  const created = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
  const header = encodeHeader({ created, segmentSize: REPO_SEGMENT, nonce, slots }, fileKey);
  const key = segmentKey(payloadKey(fileKey, nonce));
  fileKey.fill(0); // before the first yield: a consumer that stops early leaves no file key behind
  yield [header];
  const count = Math.ceil(plain.length / REPO_SEGMENT);
  for (let i = 0; i < count; i++) yield sealSegment(key, i, i === count - 1, plain.subarray(i * REPO_SEGMENT, (i + 1) * REPO_SEGMENT));
}

/**
 * Bytes read for a header at first: a repository file's is its preamble, a few hundred bytes of
 * JSON per key slot and its MAC. The preamble alone, then the header, took two requests a file on Drive.
 */
const HEADER_READ = 4096;

/** Reads `length` bytes at `offset` of the sealed file (fewer only at its end). */
export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

/** A sealed file being read: its header first, then any plaintext range once unlocked. */
export class SealedFile {
  private key: KeyObject | null = null;
  private layout!: ReturnType<typeof segmentLayout>;
  /** The segment decrypted last: consecutive chunks of one pack mostly share one. */
  private cached: { index: number; plain: Buffer } | null = null;

  private constructor(
    readonly name: string,
    readonly header: ParsedHeader,
    readonly size: number,
    private readonly readAt: ReadAt,
  ) {}

  /** Parse the header of a file of `size` bytes (nothing authenticated yet), with one read unless it is longer than HEADER_READ. */
  static async open(name: string, size: number, readAt: ReadAt): Promise<SealedFile> {
    const damaged = (err: unknown) => corruptError(`${name}: ${(err as Error).message}`, { file: name });
    const head = await readAt(0, Math.min(size, HEADER_READ));
    let len: number;
    try {
      len = headerLengthFromPreamble(head);
    } catch (err) {
      throw damaged(err);
    }
    const whole = len <= head.length ? head : await readAt(0, len);
    let header: ParsedHeader;
    try {
      header = parseHeader(whole);
    } catch (err) {
      throw damaged(err);
    }
    // A small file's content came with its header (trees and index files mostly): not read again.
    const rest: ReadAt = async (o, l) => (o + l <= head.length || head.length >= size ? head.subarray(o, o + l) : readAt(o, l));
    return new SealedFile(name, header, size, rest);
  }

  /** A file already read whole. */
  static fromBytes(name: string, bytes: Buffer): Promise<SealedFile> {
    return SealedFile.open(name, bytes.length, async (o, l) => bytes.subarray(o, o + l));
  }

  /** Unlock with `identity`; the header MAC must confirm the key (else the file was altered). */
  async unlock(identity: Identity): Promise<void> {
    const fileKey = await identity.unwrap(this.header.slots);
    if (!fileKey) throw noKeyError(`${this.name}: none of its key slots opens with the ${identity.description}`);
    try {
      confirmFileKey(this.header, fileKey);
    } catch {
      throw corruptError(`${this.name}: its header failed authentication (modified or damaged)`, { file: this.name });
    }
    this.key = segmentKey(payloadKey(fileKey, this.header.nonce));
    fileKey.fill(0);
    try {
      this.layout = segmentLayout(this.size - this.header.headerLength, this.header.segmentSize);
    } catch (err) {
      throw corruptError(`${this.name}: ${(err as Error).message}`, { file: this.name });
    }
  }

  get plainSize(): number {
    return this.layout.plainSize;
  }

  /** What another thread needs to open this file's segments itself (once unlocked; a KeyObject crosses to a thread without its bytes being exposed). */
  get payload() {
    return { key: this.key!, headerLength: this.header.headerLength, segmentSize: this.header.segmentSize, sealedSize: this.layout.sealedSize, count: this.layout.count };
  }

  /** Authenticate and decrypt segment `i` from its sealed bytes. */
  private open(i: number, sealed: Buffer): Buffer {
    let pieces: Buffer[];
    try {
      pieces = openSegment(this.key!, i, i === this.layout.count - 1, sealed);
    } catch (err) {
      throw corruptError(`${this.name}: ${(err as Error).message}`, { file: this.name });
    }
    return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces); // one piece per 64 KiB segment: no copy
  }

  /**
   * Plaintext bytes [offset, offset+length), every segment they touch authenticated. The sealed
   * segments are fetched with one read (one range request on a remote store), but the first when
   * it is the one decrypted last.
   */
  async read(offset: number, length: number): Promise<Buffer> {
    if (offset < 0 || length < 0 || offset + length > this.plainSize) throw corruptError(`${this.name}: a reference points beyond its end`, { file: this.name });
    if (length === 0) return Buffer.alloc(0);
    const seg = this.header.segmentSize;
    const sealedSize = this.layout.sealedSize;
    let first = Math.floor(offset / seg);
    const last = Math.floor((offset + length - 1) / seg);
    const plains: Buffer[] = [];
    if (this.cached?.index === first) {
      plains.push(this.cached.plain);
      first++;
    }
    if (first <= last) {
      const sealed = await this.readAt(this.header.headerLength + first * sealedSize, (last - first + 1) * sealedSize);
      for (let i = first; i <= last; i++) plains.push(this.open(i, sealed.subarray((i - first) * sealedSize, (i - first + 1) * sealedSize)));
      this.cached = { index: last, plain: plains[plains.length - 1]! };
    }
    const start = offset - Math.floor(offset / seg) * seg;
    const whole = plains.length === 1 ? plains[0]! : Buffer.concat(plains);
    return whole.subarray(start, start + length);
  }

  async readAll(): Promise<Buffer> {
    return this.read(0, this.plainSize);
  }
}
