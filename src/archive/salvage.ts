// Salvage: the entry records of a damaged payload, found and proven intact one by one, where a
// normal read stops at the first segment that fails. The plaintext is read in runs of segments
// that authenticate (segment-survey.ts); a record cut by a damaged or missing segment is lost,
// and after it the walk resynchronises on the next record that can be proven
// (backupctl-format(5) "SALVAGE"):
// - from segment 0, and wherever the authenticated index says a record starts, a record is
//   authenticated data written with the file key: it must be well formed and pass the path
//   rules, or the archive is refused, as a normal restore would;
// - anywhere else (no index), a record boundary is only a candidate: a plausible head that passes
//   the path rules, whose content is then confirmed by its size and SHA-256. A candidate that
//   fails is not a record, and the search goes on after it.
// An index met at the end of the walk (a stream) is checked against every record found.
import type { KeyObject } from 'node:crypto';
import { corruptError } from '../errors.js';
import { Codec, EntryType, FOOTER_LEN, MAX_PATH_BYTES, REC_ENTRY, TAG_LEN } from './format.js';
import { BufferSource, decodeFooter, padme, readHead, type EntryMeta, type IndexEntry } from './entries.js';
import { PathGuard, checkPath } from './paths.js';
import type { Folding } from './name-folding.js';
import { RecordReader, StreamSource, sameEntry } from './records.js';
import { newPayloadEnd, surveySegments, type PayloadEnd, type SegmentState } from './segment-survey.js';
import { damageError, damageReport, isDamaged, type DamageReport } from './damage.js';
import { ArchiveFile, type ArchiveStream } from './reader.js';
import { indexOfFile, isCorrupt, readIndexRecord, type KnownIndex } from './salvage-index.js';

/** The plaintext stops here: the next segment is damaged or missing. */
class Hole extends Error {}

type Head = Omit<EntryMeta, 'size' | 'sha256' | 'flags'>;

/** Where salvaged records' content goes (restore stages it; verify and inspect only count). */
export interface SalvageSink {
  /** Record `seq` starts; a file's content follows through data(). */
  begin(head: Head, seq: number): void | Promise<void>;
  data(chunk: Buffer): void | Promise<void>;
  /** Record `seq` ended: intact (`ok`), or given up (cut by damage, or a candidate that failed). */
  end(seq: number, ok: boolean): void | Promise<void>;
}

/** An entry whose whole record authenticated and checked. */
export interface FoundEntry {
  meta: EntryMeta;
  offset: number;
  length: number;
  seq: number;
}

export interface SalvageInput {
  key: KeyObject;
  segmentSize: number;
  /** The archive's bytes before the payload, for the byte counts in the report. */
  headerLength: number;
  sealed: AsyncIterable<Uint8Array>;
  /** What a file's footer and index told beforehand (salvage-index.ts). */
  index?: KnownIndex | null;
  sink: SalvageSink;
  signal?: AbortSignal;
  /** How the restore target compares names (name-folding.ts), for the path rules. */
  folding?: Folding;
}

/** A sink that keeps nothing: verify and inspect only need to know what is intact. */
export const NO_SINK: SalvageSink = { begin() {}, data() {}, end() {} };

/** The largest head: 'E', type, path length, path, mode, mtime, codec, target length, target. */
const MAX_HEAD = 1 + 1 + 2 + MAX_PATH_BYTES + 4 + 8 + 1 + 2 + MAX_PATH_BYTES;
const headLength = (h: Head) => 1 + 1 + 2 + Buffer.byteLength(h.path) + 4 + 8 + 1 + 2 + Buffer.byteLength(h.target);

/** What a writer puts in a head (stricter than what a reader accepts): checked on candidates only. */
function plausibleHead(h: Head): boolean {
  if (h.type !== EntryType.File && h.codec !== Codec.Stored) return false;
  if ((h.type === EntryType.Symlink) !== (h.target !== '')) return false;
  try {
    checkPath(h.path);
    return true;
  } catch {
    return false;
  }
}
const ZERO_HASH = Buffer.alloc(32);
const plausibleTail = (m: EntryMeta) => m.flags <= 1 && (m.type !== EntryType.Dir || m.sha256.equals(ZERO_HASH));

/** The segments of the payload, run by run: a run is a stretch of consecutive intact segments. */
class Runs {
  private pending: SegmentState | null = null;
  private readonly it: AsyncIterator<SegmentState>;
  /** Damaged segments, as inclusive ranges. */
  readonly damaged: Array<[number, number]> = [];
  /** The last FOOTER_LEN plaintext bytes of the last intact segment met (copied: pieces are freed once read). */
  tail = Buffer.alloc(0);
  /** That segment's index. */
  tailSegment = -1;

  constructor(feed: AsyncIterable<SegmentState>, private readonly end: PayloadEnd) {
    this.it = feed[Symbol.asyncIterator]();
  }

  private async pull(): Promise<SegmentState | null> {
    if (this.pending) {
      const s = this.pending;
      this.pending = null;
      return s;
    }
    const r = await this.it.next();
    if (r.done) return null;
    if (!r.value.plain) {
      const last = this.damaged[this.damaged.length - 1];
      if (last && last[1] === r.value.index - 1) last[1]++;
      else this.damaged.push([r.value.index, r.value.index]);
    } else {
      this.tail = Buffer.concat([this.tail, ...r.value.plain.slice(-2)]).subarray(-FOOTER_LEN);
      this.tail = Buffer.from(this.tail);
      this.tailSegment = r.value.index;
    }
    return r.value;
  }

  /** Skip damaged segments; the index of the next intact one, or null at the end. */
  async next(): Promise<number | null> {
    for (let s = await this.pull(); s; s = await this.pull()) {
      if (s.plain) {
        this.pending = s;
        return s.index;
      }
    }
    return null;
  }

  /** The plaintext of the run starting at the next intact segment; throws a Hole where it stops. */
  plaintext(): AsyncIterable<Buffer> {
    let pieces: Buffer[] = [];
    let k = 0;
    const next = async (): Promise<IteratorResult<Buffer>> => {
      while (k === pieces.length) {
        const s = await this.pull();
        if (!s) {
          if (this.end.kind === 'final') return { done: true, value: undefined };
          throw new Hole('missing');
        }
        if (!s.plain) {
          this.pending = s;
          throw new Hole('damaged');
        }
        pieces = s.plain;
        k = 0;
      }
      return { done: false, value: pieces[k++]! };
    };
    return { [Symbol.asyncIterator]: () => ({ next }) };
  }
}

async function* prepend(first: Buffer, rest: AsyncIterator<Buffer>): AsyncGenerator<Buffer> {
  if (first.length) yield first;
  for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
}

/** What a StreamSource has not consumed, as copies (it frees the buffers it hands out). */
async function* drain(src: StreamSource): AsyncGenerator<Buffer> {
  for (let b = await src.next(); b; b = await src.next()) yield Buffer.from(b);
}

/** The first index entry at or after `offset` (entries are in payload order). */
function firstAtOrAfter(entries: readonly IndexEntry[], offset: number): IndexEntry | undefined {
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid]!.offset < offset) lo = mid + 1;
    else hi = mid;
  }
  return entries[lo];
}

export interface SalvageResult {
  found: FoundEntry[];
  report: DamageReport;
}

/** Walk a payload's records as far as its segments allow (see the top of this file). */
export async function salvage(o: SalvageInput): Promise<SalvageResult> {
  const seg = o.segmentSize;
  const end = newPayloadEnd();
  const runs = new Runs(surveySegments(o.key, seg, o.sealed, end), end);
  const guard = new PathGuard(o.folding);
  const sink = o.sink;
  const found: FoundEntry[] = [];
  /** Records from a proven boundary that damage cut: their heads are authenticated. */
  const cut: Array<{ path: string; offset: number }> = [];
  /** The whole index, known beforehand: it says where every record starts. */
  const known = o.index?.complete ? o.index : null;
  let footer = o.index?.footer ?? null;
  /** Index entries read from the stream, as far as it goes; `indexProven`: all of it, confirmed. */
  let streamIndex: IndexEntry[] = [];
  let indexProven = false;
  let indexEnd: number | null = footer ? footer.indexOffset + footer.indexLength : null;
  let seq = 0;
  /** Where the records end (the index marker), once known: no record lies after it. */
  let indexMarker: number | null = footer?.indexOffset ?? null;
  /** Offsets of records found by scanning, to check against an index met later. */
  const scanned = new Set<number>();

  /** One record whose head was read at `offset`; false when a candidate proves not to be one. */
  async function record(reader: RecordReader, head: Head, offset: number, proven: boolean): Promise<boolean> {
    if (!proven && !plausibleHead(head)) return false;
    if (proven) guard.add(head.path, head.type, head.target);
    const s = seq++;
    await sink.begin(head, s);
    let meta: EntryMeta;
    try {
      meta = await reader.content(head, (c) => sink.data(c));
    } catch (err) {
      await sink.end(s, false);
      if (err instanceof Hole) {
        if (proven) cut.push({ path: head.path, offset });
        throw err;
      }
      if (proven) throw err;
      return false;
    }
    const length = reader.src.position - offset;
    const listed = known ? firstAtOrAfter(known.entries, offset) : undefined;
    const matches = !known || (listed?.offset === offset && listed.length === length && sameEntry(meta, listed));
    if (!proven) {
      let ok = plausibleTail(meta) && matches;
      if (ok) {
        try {
          guard.add(head.path, head.type, head.target);
        } catch {
          ok = false;
        }
      }
      if (!ok) {
        await sink.end(s, false);
        return false;
      }
      scanned.add(offset);
    } else if (!matches) {
      await sink.end(s, false);
      throw corruptError(`the index does not match the payload at ${head.path}`);
    }
    await sink.end(s, true);
    found.push({ meta, offset, length, seq: s });
    return true;
  }

  /**
   * The index met at `at` at the end of a chain of records, then the padding and the footer.
   * After a candidate (not `proven`) it counts only if the footer confirms it; false if not.
   */
  async function indexRegion(src: StreamSource, at: number, proven: boolean): Promise<boolean> {
    if (known) {
      if (at !== known.footer.indexOffset) throw corruptError('the footer does not point at the index');
      while (await src.next());
      return true;
    }
    let recordsEnd: number | null = null;
    try {
      // The index lists the records in order, the last one ending at the index: that is how its
      // end is known without the footer. What is read is kept for naming entries even if damage
      // cuts it short.
      streamIndex = [];
      for (let last = at === 0; !last; ) {
        const e = await readIndexRecord(src);
        const prev = streamIndex[streamIndex.length - 1];
        if (e.offset + e.length > at || (prev && e.offset < prev.offset + prev.length)) throw corruptError('the index is inconsistent');
        streamIndex.push(e);
        last = e.offset + e.length === at;
      }
      recordsEnd = src.position;
      // Padding and footer: only the last FOOTER_LEN bytes are kept.
      let tail = Buffer.alloc(0);
      for (let b = await src.next(); b; b = await src.next()) tail = Buffer.concat([tail, b]).subarray(-FOOTER_LEN);
      const f = decodeFooter(Buffer.from(tail), src.position);
      if (f.indexOffset !== at || f.indexLength !== recordsEnd - at || f.entryCount !== streamIndex.length) throw corruptError('the footer does not match the index');
      footer = f;
    } catch (err) {
      if (err instanceof Hole) {
        // Damage after the index (padding, footer): reached from a proven boundary, the index
        // read whole stands without the footer.
        if (proven) {
          indexMarker = at;
          if (recordsEnd !== null) {
            indexEnd = recordsEnd;
            indexProven = true;
          }
        }
        throw err;
      }
      if (proven) throw err;
      streamIndex = [];
      return false;
    }
    indexEnd = recordsEnd;
    indexMarker = at;
    indexProven = true;
    return true;
  }

  /**
   * Records one after another from `src`. From a proven boundary (`proven`) every record must be
   * well formed; after a candidate, a record that is not ends the chain: returns the source to
   * search on from, or null once the index has been read.
   */
  async function chain(src: StreamSource, proven: boolean): Promise<StreamSource | null> {
    const reader = new RecordReader(src);
    for (;;) {
      o.signal?.throwIfAborted();
      let rec: Awaited<ReturnType<RecordReader['next']>>;
      try {
        rec = await reader.next();
      } catch (err) {
        if (proven || err instanceof Hole) throw err;
        return src;
      }
      if (rec.kind === 'index') return (await indexRegion(src, rec.offset, proven)) ? null : src;
      if (!(await record(reader, rec.head, rec.offset, proven))) return src;
    }
  }

  /** Search the plaintext from `at` for a record candidate (head checks only); null at the end. */
  async function candidate(pieces: AsyncIterator<Buffer>, at: number) {
    let window = Buffer.alloc(0);
    // Damage ahead ends the search only once the bytes before it have been searched.
    let hole: Hole | null = null;
    const more = async () => {
      if (hole) return false;
      try {
        const r = await pieces.next();
        if (!r.done) window = Buffer.concat([window, r.value]);
        return !r.done;
      } catch (err) {
        if (!(err instanceof Hole)) throw err;
        hole = err;
        return false;
      }
    };
    let ended = false;
    for (let i = 0; ; ) {
      const k = window.indexOf(REC_ENTRY, i);
      if (k < 0) {
        at += window.length;
        window = Buffer.alloc(0);
        i = 0;
        if (ended || !(await more())) {
          if (hole) throw hole;
          return null;
        }
        continue;
      }
      while (!ended && window.length - k < MAX_HEAD) ended = !(await more());
      // A quick look at the type and path length first: most 'E' bytes are not heads.
      const plausible = k + 4 > window.length || (window[k + 1]! <= EntryType.Symlink && window.readUInt16BE(k + 2) - 1 < MAX_PATH_BYTES);
      if (plausible) {
        try {
          const head = await readHead(new BufferSource(window.subarray(k + 1)));
          if (plausibleHead(head)) {
            const rest = window.subarray(k + headLength(head));
            const h = hole;
            const after: AsyncIterator<Buffer> = h ? { next: () => Promise.reject(h) } : pieces;
            return { offset: at + k, head, rest, pieces: after };
          }
        } catch {
          /* not a head */
        }
      }
      i = k + 1;
      if (i > MAX_HEAD) {
        window = window.subarray(i);
        at += i;
        i = 0;
      }
    }
  }

  /** Resynchronise by scanning from `at`, then follow each candidate's chain. */
  async function scan(pieces: AsyncIterator<Buffer>, at: number): Promise<void> {
    for (;;) {
      const c = await candidate(pieces, at);
      if (!c) return;
      const src = new StreamSource(prepend(c.rest, c.pieces));
      src.position = c.offset + headLength(c.head);
      const reader = new RecordReader(src);
      const next = (await record(reader, c.head, c.offset, false)) ? await chain(src, false) : src;
      if (!next) return;
      pieces = drain(next)[Symbol.asyncIterator]();
      at = next.position;
    }
  }

  for (let first = await runs.next(); first !== null; first = await runs.next()) {
    const start = first * seg;
    const plain = runs.plaintext();
    try {
      if (start === 0) {
        await chain(new StreamSource(plain), true);
      } else if (known) {
        // The index says where the next record (or the index itself) starts.
        const target = firstAtOrAfter(known.entries, start)?.offset ?? known.footer.indexOffset;
        const src = new StreamSource(plain);
        src.position = start;
        if (target < start) while (await src.next());
        else {
          while (src.position < target) await src.readSome(target - src.position);
          await chain(src, true);
        }
      } else {
        await scan(plain[Symbol.asyncIterator](), start);
      }
    } catch (err) {
      if (!(err instanceof Hole)) throw err;
    }
  }

  // The footer, if the walk did not get to it but the final segment authenticated.
  if (!footer && end.kind === 'final' && runs.tailSegment === end.segments - 1) {
    try {
      footer = decodeFooter(runs.tail, end.bytes - end.appended - end.segments * TAG_LEN);
      indexMarker ??= footer.indexOffset;
      indexEnd ??= footer.indexOffset + footer.indexLength;
    } catch {
      /* not a footer: it is damaged */
    }
  }
  const complete = known?.entries ?? (indexProven ? streamIndex : null);
  // An index read from the stream is authenticated: records found by scanning that it does not
  // list as they are were not records, and those from proven boundaries must agree with it.
  let kept = found;
  if (complete && !known) {
    const byOffset = new Map(complete.map((e) => [e.offset, e]));
    kept = found.filter((f) => {
      const e = byOffset.get(f.offset);
      const same = !!e && e.length === f.length && sameEntry(f.meta, e);
      if (!same && !scanned.has(f.offset)) throw corruptError(`the index does not match the payload at ${f.meta.path}`);
      return same;
    });
  }
  const plainTotal = indexEnd !== null ? padme(indexEnd + FOOTER_LEN) : null;
  return {
    found: kept,
    report: damageReport({
      segmentSize: seg, headerLength: o.headerLength, end, damaged: runs.damaged, plainTotal,
      found: kept, index: complete ?? [...(o.index?.entries ?? []), ...streamIndex], indexComplete: complete !== null, cut,
      recordsEnd: indexMarker, entries: footer?.entryCount ?? null,
    }),
  };
}

/**
 * Salvage an unlocked archive: a file's index and footer are used when they authenticate (they
 * say where every record starts); a stream's index can only be met at the end.
 */
export async function salvageArchive(a: ArchiveFile | ArchiveStream, sink: SalvageSink = NO_SINK, signal?: AbortSignal, folding?: Folding): Promise<SalvageResult> {
  const index = a instanceof ArchiveFile ? await indexOfFile(a) : null;
  const { key, bytes } = a.sealedPayload();
  return salvage({ key, segmentSize: a.header.segmentSize, headerLength: a.header.headerLength, sealed: bytes, index, sink, signal, folding });
}

/**
 * The error to end with when reading the file `a` failed with `err`: if the archive is damaged
 * (segments fail, it is truncated), one naming what is damaged and lost; else `err` itself
 * (authenticated data that breaks the format, or something else went wrong).
 */
export async function explainDamage(a: ArchiveFile, err: unknown, then: (r: DamageReport) => string = () => ''): Promise<unknown> {
  if (!isCorrupt(err)) return err;
  try {
    const { report } = await salvageArchive(a);
    return isDamaged(report) ? damageError(report, then(report)) : err;
  } catch {
    return err;
  }
}
