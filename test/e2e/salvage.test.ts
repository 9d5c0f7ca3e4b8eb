// restore --salvage, verify and a normal restore on damaged copies of one archive, through the
// built CLI. The expectation in every case is computed from the archive's own index and the
// damage done: an entry whose record lies wholly in segments that are present and untouched must
// come back byte-identical with its metadata; every other one must be named as lost, with its
// size; the exit code is 10 when something is lost, 0 when nothing is; a normal restore still
// refuses (exit 5) and leaves DEST as it was.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { TAG_LEN } from '../../src/archive/format.js';
import type { IndexEntry } from '../../src/archive/entries.js';
import { mapArchive } from '../support/archive-map.js';
import {
  STACK_TRACE, exists, exportTreeSpec, makeHome, newRecoveryCode, onlyJson, runCli, snapshot, writeTree,
  type RecoveryCode, type SnapEntry, type TreeSpec,
} from '../support/cli.js';

const SEG = 4096;
const SEALED = SEG + TAG_LEN;

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let good: Buffer;
let source: Record<string, SnapEntry>;
let L: { headerLength: number; segments: number; index: IndexEntry[]; indexOffset: number; indexEnd: number; plainSize: number };

/** A realistic export: the standard tree plus hundreds of small files and a few larger than a segment. */
function bigSpec(): TreeSpec {
  const s = exportTreeSpec();
  s['Media/Bulk'] = { type: 'dir', mode: 0o755 };
  for (let i = 0; i < 320; i++) s[`Media/Bulk/msg-${String(i).padStart(4, '0')}.bin`] = { type: 'file', mode: 0o644, data: randomBytes(40 + ((i * 997) % 2600)) };
  for (let i = 0; i < 4; i++) s[`Media/Bulk/large-${i}.bin`] = { type: 'file', mode: 0o600, data: randomBytes(9_000 + i * 7_000) };
  return s;
}

const segOf = (p: number) => Math.floor(p / SEG);
const segStart = (i: number) => L.headerLength + i * SEALED;
const fileOffset = (p: number) => segStart(segOf(p)) + (p % SEG);
function flip(buf: Buffer, ...at: number[]): Buffer {
  const b = Buffer.from(buf);
  for (const a of at) b[a]! ^= 0x10;
  return b;
}

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-salvage-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  await writeTree(join(home, 'export'), bigSpec());
  source = await snapshot(join(home, 'export'));
  const path = join(home, 'good.bkp');
  const r = await runCli(['create', join(home, 'export'), '-o', path, '--segment-size', String(SEG)], { configDir });
  expect(r.exitCode, r.stderr).toBe(0);
  good = await readFile(path);
  const m = await mapArchive(path, rc.code);
  L = { ...m, indexOffset: m.footer.indexOffset, indexEnd: m.footer.indexOffset + m.footer.indexLength };
  expect(L.index.length).toBeGreaterThan(300);
  expect(L.index.filter((e) => e.length > SEG).length).toBeGreaterThan(3);
}, 60_000);
afterAll(() => cleanup());

const code = () => ['--recovery-code-file', rc.file];
type Lost = { path: string | null; size: number | null; segments: [number, number]; why: string };
type SalvageJson = { ok: boolean; entries: number; lost: Lost[]; damagedSegments: number[]; truncated: unknown; intact: number };

/** The entries a salvage must give back: every segment of their record present and undamaged. */
function intactEntries(damaged: Set<number>, present: number): IndexEntry[] {
  return L.index.filter((e) => {
    for (let s = segOf(e.offset); s <= segOf(e.offset + e.length - 1); s++) if (damaged.has(s) || s >= present) return false;
    return true;
  });
}

/** DEST holds exactly the intact entries as they were (content, mode, time), and the dirs above them. */
async function expectSalvaged(dest: string, intact: IndexEntry[], what: string): Promise<void> {
  const got = await snapshot(dest);
  for (const e of intact) expect(got[e.path], `${what}: ${e.path}`).toEqual(source[e.path]);
  const allowed = new Set(intact.map((e) => e.path));
  for (const p of Object.keys(got)) {
    if (allowed.has(p)) continue;
    // Only directories made for intact entries whose own record was lost.
    expect(got[p]!.type, `${what}: unexpected ${p}`).toBe('dir');
    expect(intact.some((e) => e.path.startsWith(p + '/')), `${what}: unexpected dir ${p}`).toBe(true);
  }
}

/** Run a salvage from the file (and from stdin when `stdin`), a normal restore and verify; check all. */
async function check(name: string, bytes: Buffer, damaged: number[], opts: { stdin?: boolean; present?: number; unnamed?: 'file' | 'stdin' | 'both' } = {}): Promise<SalvageJson> {
  const slug = name.replace(/\W+/g, '-');
  const file = join(home, `${slug}.bkp`);
  await writeFile(file, bytes);
  const present = opts.present ?? L.segments;
  const intact = intactEntries(new Set(damaged), present);
  const lostPaths = L.index.filter((e) => !intact.includes(e)).map((e) => e.path).sort();
  const used = join(home, `used-${slug}`);
  await mkdir(join(used, 'Media'), { recursive: true });
  await writeFile(join(used, 'Media', 'mine.txt'), 'keep me\n');
  const before = await snapshot(used);

  const dests = [join(home, `dest-${slug}`), join(home, `dest-stdin-${slug}`)];
  const runs = await Promise.all([
    runCli(['restore', '--json', '--salvage', file, '-d', dests[0]!, ...code()], { configDir }),
    opts.stdin ? runCli(['restore', '--json', '--salvage', '-', '-d', dests[1]!, ...code()], { configDir, inputFile: file }) : null,
    runCli(['restore', file, '-d', used, ...code()], { configDir }),
    runCli(['verify', file, ...code()], { configDir }),
  ]);
  const [fromFile, fromStdin, normal, verify] = runs;
  const results: SalvageJson[] = [];
  for (const [k, r] of [fromFile, fromStdin].entries()) {
    if (!r) continue;
    const how = `${name} (${k ? 'stdin' : 'file'})`;
    expect(r.stderr, how).not.toMatch(STACK_TRACE);
    expect(r.exitCode, `${how}: ${r.stderr}`).toBe(lostPaths.length ? 10 : 0);
    const j = onlyJson<SalvageJson>(r);
    expect(j.ok, how).toBe(lostPaths.length === 0);
    expect(j.intact, how).toBe(intact.length);
    await expectSalvaged(dests[k]!, intact, how);
    // Every lost entry is named, with its size and the segments that cost it.
    const named = j.lost.filter((l) => l.path !== null);
    const unnamedHere = opts.unnamed === 'both' || opts.unnamed === (k ? 'stdin' : 'file');
    if (unnamedHere) {
      // The index is lost or damaged: entries whose records and index records are both gone
      // cannot be named, but they are reported, and every name that is known is given.
      expect(lostPaths, how).toEqual(expect.arrayContaining(named.map((l) => l.path)));
      expect(named.length, how).toBeGreaterThan(0);
      expect(j.lost.some((l) => l.path === null), how).toBe(true);
    } else expect(named.map((l) => l.path).sort(), how).toEqual(lostPaths);
    for (const l of named) {
      const e = L.index.find((x) => x.path === l.path)!;
      // The size is in the index and the record's tail: a record cut short without an index has neither.
      if (l.size !== null || !unnamedHere) expect(l.size, how).toBe(Number(e.size));
      expect(l.why, how).toMatch(/segments? \d+(\.\.\d+)? (damaged|missing)/);
    }
    expect(j.damagedSegments, how).toEqual(damaged.filter((s) => s < present));
    results.push(j);
  }
  // A normal restore refuses, names the damage, and changes nothing. (From a file it reads only
  // the footer, the index and the records: damage to the padding alone does not concern it.)
  const normalReadsIt = present < L.segments || damaged.some((s) => s <= segOf(L.indexEnd - 1) || s >= segOf(L.plainSize - 40));
  if (!normalReadsIt) expect(normal!.exitCode, normal!.stderr).toBe(0);
  else expect(normal!.exitCode, `${name}: ${normal!.stderr}`).toBe(5);
  if (normalReadsIt) {
    expect(normal!.stderr, name).toMatch(/^backupctl: [^\n]+\n$/);
    if (lostPaths.length) expect(normal!.stderr, name).toContain(`restore --salvage would recover the ${intact.length} intact entr`);
    expect(await snapshot(used), name).toEqual(before);
  }
  // verify names the affected entries and how many are intact.
  expect(verify!.exitCode, name).toBe(5);
  expect(verify!.stderr, name).toMatch(/^backupctl: [^\n]+\n$/);
  if (lostPaths.length) expect(verify!.stderr, name).toContain(`affected: ${lostPaths.length === 1 ? lostPaths[0] : ''}`);
  expect(verify!.stderr, name).toContain(` entries intact`);
  return results[0]!;
}

describe('restore --salvage: damaged segments', () => {
  it('a byte flipped in each of many segments, one at a time', async () => {
    const video = L.index.find((e) => e.path.endsWith('.mp4'))!;
    const picks = [0, 1, 7, segOf(video.offset) + 3, Math.floor(L.segments / 2), segOf(L.index[L.index.length - 1]!.offset), L.segments - 3];
    for (const [k, s] of [...new Set(picks)].entries()) {
      await check(`flip-${s}`, flip(good, segStart(s) + 100 + k), [s], { stdin: k % 2 === 0 });
    }
  }, 240_000);

  it('bytes flipped in several segments at once (two of them adjacent)', async () => {
    const segs = [2, 40, 41, Math.floor(L.segments / 3), Math.floor((2 * L.segments) / 3)];
    const j = await check('flip-several', flip(good, ...segs.map((s) => segStart(s) + 9)), segs, { stdin: true });
    expect(j.damagedSegments).toEqual(segs);
    // From a pipe, which cannot be read twice, a normal restore still points to --salvage.
    const dest = join(home, 'normal-stdin');
    const r = await runCli(['restore', '-', '-d', dest, ...code()], { configDir, inputFile: join(home, 'flip-several.bkp') });
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toMatch(/^backupctl: payload segment 2 failed authentication [^\n]*; nothing was restored; restore --salvage recovers every intact entry\n$/);
    expect(await exists(dest)).toBe(false);
  }, 120_000);
});

describe('restore --salvage: truncated', () => {
  const cuts: Array<[string, () => number]> = [
    ['1%', () => Math.floor(good.length * 0.01)],
    ['10%', () => Math.floor(good.length * 0.1)],
    ['50%', () => Math.floor(good.length * 0.5)],
    ['90%', () => Math.floor(good.length * 0.9)],
    ['99.9%', () => Math.floor(good.length * 0.999)],
    ['at a segment boundary', () => segStart(Math.floor(L.segments * 0.6))],
  ];
  it.each(cuts)('at %s', async (name, at) => {
    const n = at();
    const present = Math.floor((n - L.headerLength) / SEALED);
    // Unless the cut spares the whole index, the entries after it cannot be named.
    const unnamed = present * SEG < L.indexEnd ? 'both' : undefined;
    const j = await check(`trunc-${name}`, good.subarray(0, n), [], { stdin: name === '50%' || name === 'at a segment boundary', present, unnamed });
    expect(j.truncated).toMatchObject({ missingSegments: expect.any(Number) });
    // The human form says "truncated" with the byte counts.
    const r = await runCli(['restore', '--salvage', join(home, `trunc-${name.replace(/\W+/g, '-')}.bkp`), '-d', join(home, `human-${name.replace(/\W+/g, '-')}`), ...code()], { configDir });
    expect(r.stderr).toMatch(new RegExp(`truncated: ${n} of (at least )?\\d+ bytes present \\((at least )?the last \\d+ segments? (is|are) missing\\)`));
  }, 60_000);

  it('at 99.9% the index survives: the exact length and the missing segment count', async () => {
    const n = Math.floor(good.length * 0.999);
    const r = await runCli(['verify', join(home, 'trunc-99-9-.bkp'), ...code()], { configDir });
    const k = L.segments - Math.floor((n - L.headerLength) / SEALED);
    expect(r.stderr).toContain(`truncated: ${n} of ${good.length} bytes present (the last ${k} segment${k > 1 ? 's are' : ' is'} missing)`);
  });
});

describe('restore --salvage: the index, the footer, the padding', () => {
  it('the index damaged', async () => {
    const s = segOf(L.indexOffset + 20);
    expect(s).toBeLessThan(L.segments - 1);
    // From a file, the footer says where the index ends, so its records after the damage are
    // found and name every lost entry; a stream's index is read in order, so only how many.
    await check('index', flip(good, fileOffset(L.indexOffset + 20)), [s], { stdin: true, unnamed: 'stdin' });
  });
  it('the footer damaged', async () => {
    await check('footer', flip(good, good.length - 30), [L.segments - 1]);
  });
  it('the padding damaged', async () => {
    const first = Math.ceil(L.indexEnd / SEG);
    const last = segOf(L.plainSize - 40) - 1;
    expect(first, 'padding spans a whole segment').toBeLessThanOrEqual(last);
    const j = await check('padding', flip(good, segStart(first) + 50), [first], { stdin: true });
    expect(j.lost).toEqual([]);
  });
});

describe('inspect --list on a damaged archive', () => {
  it.each([
    ['truncated at 50%', () => good.subarray(0, Math.floor(good.length * 0.5)), () => Math.floor((Math.floor(good.length * 0.5) - L.headerLength) / SEALED), (): number[] => []],
    ['the index damaged', () => flip(good, fileOffset(L.indexOffset + 20)), () => L.segments, () => [segOf(L.indexOffset + 20)]],
  ] as const)('%s: lists exactly the intact entries, then says what is lost (exit 5)', async (name, make, present, damaged) => {
    const file = join(home, `inspect-${name.replace(/\W+/g, '-')}.bkp`);
    await writeFile(file, make());
    const intact = intactEntries(new Set(damaged()), present());
    const [human, json] = await Promise.all([
      runCli(['inspect', '--list', file, ...code()], { configDir }),
      runCli(['inspect', '--list', '--json', file, ...code()], { configDir }),
    ]);
    expect(human.exitCode, human.stderr).toBe(5);
    expect(human.stderr).toMatch(/^backupctl: [^\n]*entries intact; listed the entries that are intact\n$/);
    const listed = human.stdout.split('\n').flatMap((l) => /^ {4}[-dl][rwx-]{9} +\d+ \S+ \S+ (.*?)(?: -> .*)?$/.exec(l)?.slice(1) ?? []);
    expect(listed.sort()).toEqual(intact.map((e) => e.path).sort());
    expect(json.exitCode).toBe(5);
    const j = onlyJson<{ ok: boolean; entries: Array<{ path: string; sha256?: string }>; error: { kind: string } }>(json);
    expect(j.ok).toBe(false);
    expect(j.error.kind).toBe('corrupt');
    expect(j.entries.map((e) => e.path).sort()).toEqual(intact.map((e) => e.path).sort());
  });
});

describe('restore --salvage: nothing lost, and --only', () => {
  it('an intact archive comes back whole, exit 0, with no word of damage', async () => {
    const dest = join(home, 'intact');
    const r = await runCli(['restore', '--salvage', join(home, 'good.bkp'), '-d', dest, ...code()], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/warning|lost|damaged/);
    expect(await snapshot(dest)).toEqual(source);
  });

  it('with --only, only the selection is restored and only its losses count', async () => {
    const video = L.index.find((e) => e.path.endsWith('.mp4'))!;
    const s = segOf(video.offset + Math.floor(video.length / 2));
    const file = join(home, 'only.bkp');
    await writeFile(file, flip(good, segStart(s) + 77));
    const [lost, fine] = await Promise.all([
      runCli(['restore', '--json', '--salvage', file, '-d', join(home, 'only-video'), '--only', 'Media/WhatsApp Video', ...code()], { configDir }),
      runCli(['restore', '--json', '--salvage', file, '-d', join(home, 'only-chat'), '--only', '_chat.txt', ...code()], { configDir }),
    ]);
    expect(lost.exitCode, lost.stderr).toBe(10);
    expect(onlyJson<SalvageJson>(lost).lost.map((l) => l.path)).toEqual([video.path]);
    expect(Object.keys(await snapshot(join(home, 'only-video'))).sort()).toEqual(['Media', 'Media/WhatsApp Video']);
    expect(fine.exitCode, fine.stderr).toBe(0);
    expect(onlyJson<SalvageJson>(fine).lost).toEqual([]);
    expect(await snapshot(join(home, 'only-chat'))).toEqual({ '_chat.txt': source['_chat.txt'] });
  });
});
