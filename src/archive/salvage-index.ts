// A file's footer and index as far as they authenticate, for salvage (salvage.ts): the footer
// gives the index's place and length, so the index records after damage to the index can still
// be found (backupctl-format(5) "SALVAGE", "Index and footer").
import { BackupctlError, Exit } from '../errors.js';
import { BufferSource, readHead, readTail, type ByteSource, type Footer, type IndexEntry } from './entries.js';
import type { ArchiveFile } from './reader.js';
import { readIndex } from './records.js';

/** The footer, the index entries that could be read, and whether that is all of them. */
export interface KnownIndex {
  footer: Footer;
  entries: IndexEntry[];
  complete: boolean;
}

export const isCorrupt = (err: unknown) => err instanceof BackupctlError && err.code === Exit.corrupt;

/** One index record: offset(8) length(8) head tail (backupctl-format(5) "Index"). */
export async function readIndexRecord(src: ByteSource): Promise<IndexEntry> {
  const pos = await src.read(16);
  const head = await readHead(src);
  const tail = await readTail(src);
  return { ...head, ...tail, offset: Number(pos.readBigUInt64BE(0)), length: Number(pos.readBigUInt64BE(8)) };
}

/**
 * Index records from the start of `b` to its very end, in order, the last one ending at the
 * index marker `at`; null if `b` is not exactly such a run of records.
 */
async function indexRun(b: Buffer, at: number): Promise<IndexEntry[] | null> {
  const src = new BufferSource(b);
  const out: IndexEntry[] = [];
  try {
    while (!src.done) {
      const e = await readIndexRecord(src);
      const prev = out[out.length - 1];
      if (e.offset + e.length > at || (prev && e.offset < prev.offset + prev.length)) return null;
      out.push(e);
    }
  } catch {
    return null;
  }
  const last = out[out.length - 1];
  return last && last.offset + last.length === at ? out : null;
}

/**
 * What a file's footer and index tell, as far as their segments authenticate: the index records
 * after damage to it are found by trying each position after the damage for a run of records
 * that ends exactly at the index's end.
 */
export async function indexOfFile(a: ArchiveFile): Promise<KnownIndex | null> {
  let footer: Footer;
  try {
    footer = await a.footer();
  } catch (err) {
    if (!isCorrupt(err)) throw err;
    return null;
  }
  try {
    return { footer, entries: await readIndex(a), complete: true };
  } catch (err) {
    if (!isCorrupt(err)) throw err;
  }
  const seg = a.header.segmentSize;
  const at = footer.indexOffset;
  const end = at + footer.indexLength;
  const intact: boolean[] = [];
  for (let s = Math.floor(at / seg); s <= Math.floor((end - 1) / seg); s++) intact[s] = await a.checkSegment(s).then(() => true, () => false);
  const entries: IndexEntry[] = [];
  // From the marker to the first damaged segment.
  let s = Math.floor(at / seg);
  while (intact[s]) s++;
  if (s > Math.floor(at / seg)) {
    const head = new BufferSource((await a.readRange(at, Math.min(end, s * seg) - at)).subarray(1));
    try {
      while (!head.done) entries.push(await readIndexRecord(head));
    } catch {
      /* the last record runs into the damage */
    }
  }
  // After the last damaged segment to the end of the index.
  let t = Math.floor((end - 1) / seg);
  while (intact[t]) t--;
  if (t < Math.floor((end - 1) / seg)) {
    const tail = await a.readRange((t + 1) * seg, end - (t + 1) * seg);
    for (let p = 0; p < tail.length; p++) {
      const run = await indexRun(tail.subarray(p), at);
      if (run) {
        entries.push(...run);
        break;
      }
    }
  }
  return { footer, entries, complete: entries.length === footer.entryCount };
}

/** Do the footer and every segment the index lies in authenticate, so that it can be read as is? */
export async function indexIntact(a: ArchiveFile): Promise<boolean> {
  try {
    const f = await a.footer();
    const seg = a.header.segmentSize;
    for (let s = Math.floor(f.indexOffset / seg); s <= Math.floor((f.indexOffset + f.indexLength - 1) / seg); s++) await a.checkSegment(s);
    return true;
  } catch (err) {
    if (!isCorrupt(err)) throw err;
    return false;
  }
}
