// A snapshot's tree (backupctl-repository(5) "TREES"): every entry of the backed-up directory in
// walk order, with each file's chunk ids. The encoded tree is itself cut into chunks and stored
// as tree blobs, so the part of it that did not change since last night is stored once.
import { corruptError } from '../errors.js';
import { EntryType } from '../archive/format.js';
import { MAX_CHUNK, cutPoint, type Gear } from './chunker.js';

export interface TreeEntry {
  type: EntryType;
  path: string;
  mode: number;
  mtimeNs: bigint;
  /** Files: content bytes; others 0. */
  size: number;
  target: string;
  /** Files: chunk ids in order (32 bytes each). */
  chunks: Buffer[];
}

/**
 * type(u8) pathLen(u16) path mode(u32) mtimeNs(i64) size(u64), then for a symlink
 * targetLen(u16) target, for a file count(u32) and the ids. All big-endian.
 */
export function encodeEntry(e: TreeEntry): Buffer {
  const path = Buffer.from(e.path, 'utf8');
  const target = Buffer.from(e.target, 'utf8');
  const extra = e.type === EntryType.Symlink ? 2 + target.length : e.type === EntryType.File ? 4 + 32 * e.chunks.length : 0;
  // Pooled (allocUnsafe): every byte is written below, and 100,000 entries are not 100,000 ArrayBuffers.
  const b = Buffer.allocUnsafe(1 + 2 + path.length + 4 + 8 + 8 + extra);
  let o = 0;
  b[o++] = e.type;
  o = b.writeUInt16BE(path.length, o);
  o += path.copy(b, o);
  o = b.writeUInt32BE(e.mode, o);
  o = b.writeBigInt64BE(e.mtimeNs, o);
  o = b.writeBigUInt64BE(BigInt(e.size), o);
  if (e.type === EntryType.Symlink) {
    o = b.writeUInt16BE(target.length, o);
    target.copy(b, o);
  } else if (e.type === EntryType.File) {
    o = b.writeUInt32BE(e.chunks.length, o);
    for (const c of e.chunks) o += c.copy(b, o);
  }
  return b;
}

/**
 * A tree being written: entries encoded one by one and cut into chunks (the same cuts as
 * chunkStream on the whole tree: a cut needs only the MAX_CHUNK bytes after its start) as they
 * come, so that the tree is never held whole.
 */
export class TreeChunker {
  private buf = Buffer.allocUnsafe(4 * MAX_CHUNK);
  private have = 0;

  constructor(
    private readonly gear: Gear,
    /** Called with each chunk in order (a view, reused once it returns). */
    private readonly each: (chunk: Buffer) => Promise<void>,
  ) {}

  async add(e: TreeEntry): Promise<void> {
    const b = encodeEntry(e);
    if (this.have + b.length > this.buf.length) {
      const bigger = Buffer.allocUnsafe(Math.max(2 * this.buf.length, this.have + b.length));
      this.buf.copy(bigger, 0, 0, this.have);
      this.buf = bigger;
    }
    this.have += b.copy(this.buf, this.have);
    if (this.have >= 2 * MAX_CHUNK) await this.cut(false);
  }

  private async cut(end: boolean): Promise<void> {
    let pos = 0;
    while (this.have - pos >= MAX_CHUNK || (end && pos < this.have)) {
      const len = cutPoint(this.gear, this.buf, pos, this.have);
      await this.each(this.buf.subarray(pos, pos + len));
      pos += len;
    }
    this.buf.copy(this.buf, 0, pos, this.have);
    this.have -= pos;
  }

  /** The rest of the tree. */
  finish(): Promise<void> {
    return this.cut(true);
  }
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function decodeTree(b: Buffer): TreeEntry[] {
  const out: TreeEntry[] = [];
  let o = 0;
  const need = (n: number) => {
    if (o + n > b.length) throw corruptError('a snapshot tree is truncated');
  };
  const text = (n: number) => {
    need(n);
    try {
      return strictUtf8.decode(b.subarray(o, (o += n)));
    } catch {
      throw corruptError('a snapshot tree holds a name that is not UTF-8');
    }
  };
  while (o < b.length) {
    need(3);
    const type = b[o++]! as EntryType;
    if (type > EntryType.Symlink) throw corruptError(`a snapshot tree holds an unknown entry type ${type}`);
    const path = text(b.readUInt16BE((o += 2) - 2));
    need(20);
    const mode = b.readUInt32BE(o);
    const mtimeNs = b.readBigInt64BE(o + 4);
    const size = Number(b.readBigUInt64BE(o + 12));
    o += 20;
    let target = '';
    const chunks: Buffer[] = [];
    if (type === EntryType.Symlink) {
      need(2);
      target = text(b.readUInt16BE((o += 2) - 2));
    } else if (type === EntryType.File) {
      need(4);
      const n = b.readUInt32BE(o);
      o += 4;
      need(32 * n);
      for (let i = 0; i < n; i++, o += 32) chunks.push(b.subarray(o, o + 32));
    }
    out.push({ type, path, mode, mtimeNs, size, target, chunks });
  }
  return out;
}
