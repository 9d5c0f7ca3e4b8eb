// Entry metadata as it appears in the payload plaintext: an entry record's head and tail, the
// index (the same head and tail again, with the record's position), and the footer.
// backupctl-format(5) "PAYLOAD PLAINTEXT". All integers are big-endian.
import { corruptError } from '../errors.js';
import { Codec, EntryType, FOOTER_LEN, FOOTER_MAGIC, MAX_PATH_BYTES } from './format.js';

export interface EntryMeta {
  type: EntryType;
  /** Relative UTF-8 path with '/' separators. */
  path: string;
  /** Permission bits (lower 12 bits of st_mode). */
  mode: number;
  /** Modification time in nanoseconds since the epoch. */
  mtimeNs: bigint;
  codec: Codec;
  /** Symlink target (symlinks only). */
  target: string;
  /** Content bytes (files), target bytes (symlinks), 0 (dirs). */
  size: bigint;
  /** SHA-256 of the content (files) or target (symlinks); zeros for dirs. */
  sha256: Buffer;
  flags: number;
}

/** An index entry: the metadata plus where its record sits in the plaintext. */
export interface IndexEntry extends EntryMeta {
  offset: number;
  length: number;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Head: type(1) pathLen(2) path mode(4) mtimeNs(8, signed) codec(1) targetLen(2) target. */
export function encodeHead(m: EntryMeta): Buffer {
  const path = Buffer.from(m.path, 'utf8');
  const target = Buffer.from(m.target, 'utf8');
  if (path.length === 0 || path.length > MAX_PATH_BYTES || target.length > MAX_PATH_BYTES) throw new Error(`path too long: ${m.path}`);
  const b = Buffer.alloc(1 + 2 + path.length + 4 + 8 + 1 + 2 + target.length);
  let o = b.writeUInt8(m.type, 0);
  o = b.writeUInt16BE(path.length, o);
  o += path.copy(b, o);
  o = b.writeUInt32BE(m.mode, o);
  o = b.writeBigInt64BE(m.mtimeNs, o);
  o = b.writeUInt8(m.codec, o);
  o = b.writeUInt16BE(target.length, o);
  target.copy(b, o);
  return b;
}

/** Tail: size(8) sha256(32) flags(1). */
export const TAIL_LEN = 41;
/** Where the tail's sha256 field starts. */
export const TAIL_SHA256_AT = 8;
export function encodeTail(m: Pick<EntryMeta, 'size' | 'sha256' | 'flags'>): Buffer {
  const b = Buffer.alloc(TAIL_LEN);
  b.writeBigUInt64BE(m.size, 0);
  m.sha256.copy(b, TAIL_SHA256_AT);
  b.writeUInt8(m.flags, 40);
  return b;
}

/** Pulls bytes from somewhere: a buffer (the index) or the decrypted payload stream. */
export interface ByteSource {
  read(n: number): Promise<Buffer> | Buffer;
}

// The head's checks, shared by the streaming reader (readHead) and the index decoder.
function checkType(type: number): EntryType {
  if (type > EntryType.Symlink) throw corruptError(`unknown entry type ${type}`);
  return type;
}
function checkPathLen(n: number): number {
  if (n === 0 || n > MAX_PATH_BYTES) throw corruptError(`bad path length ${n}`);
  return n;
}
function decodePath(b: Uint8Array): string {
  try {
    return utf8.decode(b);
  } catch {
    throw corruptError('entry path is not valid UTF-8');
  }
}
function checkTargetLen(n: number, path: string): number {
  if (n > MAX_PATH_BYTES) throw corruptError(`bad link target length for ${path}`);
  return n;
}
function decodeTarget(b: Uint8Array, path: string): string {
  if (b.length === 0) return '';
  try {
    return utf8.decode(b);
  } catch {
    throw corruptError(`link target of ${path} is not valid UTF-8`);
  }
}
function checkCodecMode(codec: number, mode: number, path: string): void {
  if (codec > Codec.Deflate) throw corruptError(`unknown codec ${codec} for ${path}`);
  if (mode > 0o7777) throw corruptError(`bad mode for ${path}`);
}

export async function readHead(src: ByteSource): Promise<Omit<EntryMeta, 'size' | 'sha256' | 'flags'>> {
  const a = await src.read(3);
  const type = checkType(a[0]!);
  const pathLen = checkPathLen(a.readUInt16BE(1));
  const b = await src.read(pathLen + 4 + 8 + 1 + 2);
  const path = decodePath(b.subarray(0, pathLen));
  const o = pathLen;
  const mode = b.readUInt32BE(o);
  const mtimeNs = b.readBigInt64BE(o + 4);
  const codec = b[o + 12]!;
  const targetLen = checkTargetLen(b.readUInt16BE(o + 13), path);
  const target = targetLen ? decodeTarget(await src.read(targetLen), path) : '';
  checkCodecMode(codec, mode, path);
  return { type, path, mode, mtimeNs, codec, target };
}

export async function readTail(src: ByteSource) {
  const t = await src.read(TAIL_LEN);
  return { size: t.readBigUInt64BE(0), sha256: Buffer.from(t.subarray(TAIL_SHA256_AT, TAIL_SHA256_AT + 32)), flags: t[40]! };
}


/** Index record: offset(8) length(8) head tail. */
export function encodeIndexEntry(e: IndexEntry): Buffer {
  const pos = Buffer.alloc(16);
  pos.writeBigUInt64BE(BigInt(e.offset), 0);
  pos.writeBigUInt64BE(BigInt(e.length), 8);
  return Buffer.concat([pos, encodeHead(e), encodeTail(e)]);
}

/** A ByteSource over one in-memory buffer. */
export class BufferSource implements ByteSource {
  private off = 0;
  constructor(private readonly buf: Buffer) {}
  read(n: number): Buffer {
    if (this.off + n > this.buf.length) throw corruptError('index is truncated');
    const r = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return r;
  }
  get done() {
    return this.off === this.buf.length;
  }
}

/** Every byte of an index record but its path and target. */
const FIXED = 16 + 3 + 4 + 8 + 1 + 2 + TAIL_LEN;

const NO_HASH = Buffer.alloc(32);

/**
 * Decodes the index region (after its 'I' byte) as it arrives, in pieces of any size, handing
 * back the entries each piece completes, so that a caller can also use them and let them go.
 * Records are parsed in place, synchronously, with no intermediate objects: for 100,000 entries
 * the per-field reads, views and promises used to make several times the index's own size in
 * garbage. A batch's SHA-256 fields are views of one buffer; only a record split between two
 * pieces is copied.
 */
export class IndexDecoder {
  private carry: Buffer | null = null;
  private n = 0;
  private scratch = Buffer.alloc(0);

  constructor(private readonly count: number, indexLength: number) {
    if (count > indexLength / FIXED) throw corruptError('index is truncated');
  }

  push(piece: Buffer): IndexEntry[] {
    const buf = this.carry ? Buffer.concat([this.carry, piece]) : piece;
    const batch: IndexEntry[] = [];
    const used = this.decode(buf, batch);
    this.carry = used < buf.length ? Buffer.from(buf.subarray(used)) : null;
    const hashes = Buffer.allocUnsafe(batch.length * 32);
    this.scratch.copy(hashes, 0, 0, hashes.length);
    for (let k = 0; k < batch.length; k++) batch[k]!.sha256 = hashes.subarray(k * 32, k * 32 + 32);
    return batch;
  }

  /** After the last piece: were there exactly `count` records? */
  end(): void {
    if (this.n < this.count) throw corruptError('index is truncated');
    if (this.carry) throw corruptError('index has trailing bytes');
  }

  /** Decode whole records from `b` into `batch` (hashes into the scratch); returns how many bytes they took. */
  private decode(b: Buffer, batch: IndexEntry[]): number {
    if (this.scratch.length < (b.length / FIXED) * 32) this.scratch = Buffer.allocUnsafe(Math.ceil(b.length / FIXED) * 32);
    let o = 0;
    while (this.n < this.count) {
      const start = o;
      // Return at a record that is not all here yet: the rest comes with the next piece.
      if (o + FIXED > b.length) return start;
      const type = checkType(b[o + 16]!);
      const pathLen = checkPathLen(b.readUInt16BE(o + 17));
      if (o + FIXED + pathLen > b.length) return start;
      const targetLen = b.readUInt16BE(o + 19 + pathLen + 13);
      if (targetLen <= MAX_PATH_BYTES && o + FIXED + pathLen + targetLen > b.length) return start;
      const offset = Number(b.readBigUInt64BE(o));
      const length = Number(b.readBigUInt64BE(o + 8));
      o += 19;
      const path = decodePath(b.subarray(o, (o += pathLen)));
      checkTargetLen(targetLen, path);
      const mode = b.readUInt32BE(o);
      const mtimeNs = b.readBigInt64BE(o + 4);
      const codec = b[o + 12]!;
      o += 15;
      const target = decodeTarget(b.subarray(o, (o += targetLen)), path);
      checkCodecMode(codec, mode, path);
      const size = b.readBigUInt64BE(o);
      b.copy(this.scratch, batch.length * 32, o + 8, o + 40);
      const flags = b[o + 40]!;
      o += TAIL_LEN;
      this.n++;
      batch.push({ type, path, mode, mtimeNs, codec, target, size, sha256: NO_HASH, flags, offset, length });
    }
    return o;
  }
}

/** Decode the whole index region (after its 'I' byte) held in one buffer. */
export async function decodeIndex(body: Buffer, count: number): Promise<IndexEntry[]> {
  const d = new IndexDecoder(count, body.length);
  const entries = d.push(body);
  d.end();
  return entries;
}

export interface Footer {
  indexOffset: number;
  indexLength: number;
  entryCount: number;
}

/** Footer: magic "BKPCTIDX" indexOffset(8) indexLength(8) entryCount(8) reserved(8)=0. */
export function encodeFooter(f: Footer): Buffer {
  const b = Buffer.alloc(FOOTER_LEN);
  FOOTER_MAGIC.copy(b, 0);
  b.writeBigUInt64BE(BigInt(f.indexOffset), 8);
  b.writeBigUInt64BE(BigInt(f.indexLength), 16);
  b.writeBigUInt64BE(BigInt(f.entryCount), 24);
  return b;
}

export function decodeFooter(b: Buffer, plainSize: number): Footer {
  if (b.length !== FOOTER_LEN || !b.subarray(0, 8).equals(FOOTER_MAGIC)) throw corruptError('payload footer is missing or damaged');
  const f = {
    indexOffset: Number(b.readBigUInt64BE(8)),
    indexLength: Number(b.readBigUInt64BE(16)),
    entryCount: Number(b.readBigUInt64BE(24)),
  };
  if (b.readBigUInt64BE(32) !== 0n || f.indexOffset + f.indexLength > plainSize - FOOTER_LEN || f.indexLength < 1) {
    throw corruptError('payload footer is inconsistent');
  }
  return f;
}

/** Padmé (Nikitin et al., PETS 2019): pad to a size revealing O(log log L) bits of L. */
export function padme(len: number): number {
  if (len < 2) return len;
  const e = Math.floor(Math.log2(len));
  const s = Math.floor(Math.log2(e)) + 1;
  const lastBits = e - s;
  const mask = 2 ** lastBits - 1;
  return Math.ceil(len / (mask + 1)) * (mask + 1);
}
