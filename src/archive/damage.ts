// What a salvage walk (salvage.ts) found wrong with an archive, and the one-line account of it
// that verify, inspect --list and restore print: truncation, damaged segments, the entries lost
// and why, and how many are intact. backupctl(1) "DAMAGED ARCHIVES" documents the wording.
import { corruptError, type BackupctlError } from '../errors.js';
import { termSafe } from '../util/terminal-text.js';
import { FOOTER_LEN, TAG_LEN } from './format.js';
import { TAIL_LEN, encodeHead, padme, type EntryMeta, type IndexEntry } from './entries.js';
import type { PayloadEnd } from './segment-survey.js';

export interface LostEntry {
  /** null: records in these segments whose names are lost with the index. */
  path: string | null;
  /** For path null: how many entries, when the footer tells. */
  count?: number;
  /** Content bytes, when the index tells. */
  size: number | null;
  /** First and last segment the record lies in (as far as known). */
  segments: [number, number];
  why: string;
}

export interface DamageReport {
  /** Archive bytes present. */
  bytes: number;
  truncated: null | {
    /** The archive's whole length, when the index tells it; else a lower bound (`exact` false). */
    totalBytes: number;
    missingSegments: number;
    exact: boolean;
  };
  /** Damaged segments, as inclusive ranges. */
  damaged: Array<[number, number]>;
  /** Bytes after the final segment. */
  appended: number;
  indexReadable: boolean;
  /** Entries in the archive, when the index tells. */
  entries: number | null;
  intact: number;
  lost: LostEntry[];
}

export const isDamaged = (r: DamageReport) => r.truncated !== null || r.damaged.length > 0 || r.appended > 0 || r.lost.length > 0;

interface ReportInput {
  segmentSize: number;
  headerLength: number;
  end: PayloadEnd;
  damaged: Array<[number, number]>;
  /** The plaintext's whole length, when the index's end is known. */
  plainTotal: number | null;
  found: ReadonlyArray<{ offset: number; length: number; meta: EntryMeta }>;
  /** The index as far as it could be read; `indexComplete`: all of it. */
  index: readonly IndexEntry[];
  indexComplete: boolean;
  /** Records from a proven boundary cut by damage (their heads were read). */
  cut: ReadonlyArray<{ path: string; offset: number }>;
  /** Where the records end (the index marker), when known. */
  recordsEnd: number | null;
  /** The number of entries, when the footer tells. */
  entries: number | null;
}

const sealedBytes = (plain: number, seg: number) => plain + Math.ceil(plain / seg) * TAG_LEN;
const plural = (n: number, one: string, many: string) => (n === 1 ? one : many);

const segmentsWord = (ranges: ReadonlyArray<[number, number]>) => (ranges.length === 1 && ranges[0]![0] === ranges[0]![1] ? 'segment' : 'segments');

export function segmentRanges(ranges: ReadonlyArray<[number, number]>): string {
  const shown = ranges.slice(0, 10).map(([a, b]) => (a === b ? `${a}` : `${a}..${b}`));
  return shown.join(', ') + (ranges.length > 10 ? ', ...' : '');
}

export function damageReport(i: ReportInput): DamageReport {
  const seg = i.segmentSize;
  const missingFrom = i.end.kind === 'truncated' ? i.end.firstMissing : null;
  let truncated: DamageReport['truncated'] = null;
  if (missingFrom !== null) {
    let plain = i.plainTotal;
    const exact = plain !== null;
    if (plain === null) {
      // Lower bound: more plaintext than is present; past the last record found, the index
      // marker, an index record for every entry found (its head, position and tail) and the
      // footer; and a Padmé length (backupctl-format(5)).
      const present = Math.max(0, i.end.bytes - i.end.segments * TAG_LEN);
      const lastEnd = i.found.reduce((m, f) => Math.max(m, f.offset + f.length), 0);
      const indexBytes = i.found.reduce((n, f) => n + 16 + encodeHead(f.meta).length + TAIL_LEN, 1);
      plain = padme(Math.max(present + 1, lastEnd + indexBytes + FOOTER_LEN));
    }
    const total = Math.ceil(plain / seg);
    truncated = { totalBytes: i.headerLength + sealedBytes(plain, seg), missingSegments: total - missingFrom, exact };
  }
  const why = (first: number, last: number): string => {
    const parts: string[] = [];
    const hit = i.damaged.filter(([a, b]) => a <= last && b >= first).map(([a, b]): [number, number] => [Math.max(a, first), Math.min(b, last)]);
    if (hit.length) parts.push(`${segmentsWord(hit)} ${segmentRanges(hit)} damaged`);
    if (missingFrom !== null && last >= missingFrom) parts.push(`segment${last > missingFrom ? 's' : ''} ${missingFrom}${last > missingFrom ? `..${last}` : ''} missing (truncated)`);
    return parts.join(', ') || 'its record could not be proven intact';
  };
  /** The first segment at or after `s` that is damaged or missing (where a cut record ends). */
  const firstBad = (s: number) => {
    const d = i.damaged.find(([, b]) => b >= s);
    const cand = [d ? Math.max(d[0], s) : Infinity, missingFrom ?? Infinity];
    return Math.min(...cand);
  };
  const foundAt = new Set(i.found.map((f) => f.offset));
  const lost: LostEntry[] = [];
  const listed = new Set<number>();
  for (const e of i.index) {
    listed.add(e.offset);
    if (foundAt.has(e.offset)) continue;
    const first = Math.floor(e.offset / seg);
    const last = Math.floor((e.offset + Math.max(1, e.length) - 1) / seg);
    lost.push({ path: e.path, size: Number(e.size), segments: [first, last], why: why(first, last) });
  }
  for (const c of i.cut) {
    if (listed.has(c.offset)) continue;
    const first = Math.floor(c.offset / seg);
    const last = firstBad(first);
    lost.push({ path: c.path, size: null, segments: [first, last], why: why(first, last) });
  }
  if (!i.indexComplete) {
    // Without the whole index, records that lay wholly in damaged or missing segments have no
    // name; the footer, if it survives, still tells how many they are.
    const regions: Array<[number, number]> = [...i.damaged];
    if (missingFrom !== null && truncated) regions.push([missingFrom, missingFrom + truncated.missingSegments - 1]);
    const before = regions.filter(([a]) => i.recordsEnd === null || a * seg < i.recordsEnd);
    const unnamed = i.entries === null ? null : i.entries - i.found.length - lost.length;
    if (unnamed === null) for (const [a, b] of before) lost.push({ path: null, size: null, segments: [a, b], why: why(a, b) });
    else if (unnamed > 0 && before.length) {
      const [a, b] = [before[0]![0], before[before.length - 1]![1]];
      lost.push({ path: null, count: unnamed, size: null, segments: [a, b], why: why(a, b) });
    }
  }
  lost.sort((x, y) => x.segments[0] - y.segments[0]);
  return {
    bytes: i.headerLength + i.end.bytes,
    truncated,
    damaged: i.damaged,
    appended: i.end.appended,
    indexReadable: i.indexComplete,
    entries: i.entries ?? (i.indexComplete ? i.index.length : null),
    intact: i.found.length,
    lost,
  };
}

/** What happened to the archive: "truncated: ...", "segments i..j damaged", appended bytes. */
export function describeDamage(r: DamageReport): string {
  const parts: string[] = [];
  const t = r.truncated;
  if (t) {
    const k = t.missingSegments;
    parts.push(t.exact
      ? `truncated: ${r.bytes} of ${t.totalBytes} bytes present (the last ${k} ${plural(k, 'segment is', 'segments are')} missing)`
      : `truncated: ${r.bytes} of at least ${t.totalBytes} bytes present (at least the last ${k} ${plural(k, 'segment is', 'segments are')} missing)`);
  }
  if (r.damaged.length) parts.push(`${segmentsWord(r.damaged)} ${segmentRanges(r.damaged)} damaged`);
  if (r.appended) parts.push(`${r.appended} bytes after the final segment`);
  return parts.join('; ');
}

/** The lost entries by name ("affected: a, b and 3 more"), and how many are intact. */
export function describeLoss(r: DamageReport): string {
  const named = r.lost.filter((l) => l.path !== null).map((l) => termSafe(l.path!));
  const unnamed = r.lost.filter((l) => l.path === null);
  const count = unnamed.reduce((n, l) => n + (l.count ?? 0), 0);
  const others = !unnamed.length ? '' : count ? `${count} entr${count === 1 ? 'y' : 'ies'} whose names were in the damaged part of the index` : 'entries whose names were in the damaged or missing part of the index';
  const list = named.length > 5 ? `${named.slice(0, 5).join(', ')} and ${named.length - 5} more` : named.join(', ');
  const affected = named.length ? `affected: ${list}${others ? `, and ${others}` : ''}` : others ? `affected: ${others}` : 'no entry is affected (only the index, padding or footer)';
  const intact = r.entries !== null ? `${r.intact} of ${r.entries} entries intact` : `${r.intact} entries intact`;
  return `${affected}; ${intact}`;
}

/** The --json form of the report. */
export function damageJson(r: DamageReport) {
  return {
    damagedSegments: r.damaged.flatMap(([a, b]) => Array.from({ length: b - a + 1 }, (_, k) => a + k)),
    affectedFiles: r.lost.filter((l) => l.path !== null).map((l) => l.path!),
    indexReadable: r.indexReadable,
    truncated: r.truncated,
    appendedBytes: r.appended,
    intact: r.intact,
    archiveEntries: r.entries,
    lost: r.lost,
  };
}

/** The corrupt error verify and a normal restore end with; `then`: what to add, e.g. the --salvage hint. */
export function damageError(r: DamageReport, then = ''): BackupctlError {
  return corruptError(`${describeDamage(r) || 'damaged'}; ${describeLoss(r)}${then}`, damageJson(r));
}
