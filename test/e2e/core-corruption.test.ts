// Damage at many offsets, through the built CLI: every case is exit 5 with one line on stderr,
// no stack trace, and the restore target left exactly as it was. Offsets inside the payload
// (where the index or one file lives) are found with the library and the code, as an attacker
// who knows the format could; the CLI under test gets only the damaged file.
import { beforeAll, describe, expect, it } from 'vitest';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TAG_LEN } from '../../src/archive/format.js';
import type { IndexEntry } from '../../src/archive/entries.js';
import { mapArchive } from '../support/archive-map.js';
import { STACK_TRACE, exists, onlyJson, runCli, snapshot } from '../support/cli.js';
import { archiveHome } from '../support/home.js';

const SEG = 4096; // small segments, so the payload has hundreds of them

const fx = archiveHome('backupctl-core-dmg-', { createArgs: ['--segment-size', String(SEG)] });
let good: Buffer;
/** Where things are in `good`. */
let layout: { headerLength: number; jsonStart: number; macStart: number; segments: number; sealed: number; index: IndexEntry[]; indexOffset: number; plainSize: number };

/** Byte offset in the archive file of plaintext payload offset `p`. */
const fileOffset = (p: number) => layout.headerLength + Math.floor(p / SEG) * layout.sealed + (p % SEG);
const segStart = (i: number) => layout.headerLength + i * layout.sealed;

function flip(buf: Buffer, at: number): Buffer {
  const b = Buffer.from(buf);
  b[at]! ^= 0x20;
  return b;
}

beforeAll(async () => {
  good = await readFile(fx.archive);
  const m = await mapArchive(fx.archive, fx.rc.code);
  layout = {
    headerLength: m.headerLength,
    jsonStart: 14,
    macStart: m.headerLength - 32,
    segments: m.segments,
    sealed: SEG + TAG_LEN,
    index: m.index,
    indexOffset: m.footer.indexOffset,
    plainSize: m.plainSize,
  };
  expect(layout.segments).toBeGreaterThan(100);
});

/** File offset of the `skip`-th character after `key` in the header JSON. */
function inJson(key: string, skip: number): number {
  const json = good.subarray(layout.jsonStart, layout.macStart).toString('utf8');
  return layout.jsonStart + Buffer.byteLength(json.slice(0, json.indexOf(key) + skip));
}

/** Every way of damaging the archive, as a function making the damaged bytes (run after beforeAll). */
function damages(): Array<[string, () => Buffer]> {
  const mid = () => Math.floor(layout.segments / 2);
  return [
    ['magic', () => flip(good, 2)],
    ['major version', () => Buffer.concat([good.subarray(0, 8), Buffer.of(9), good.subarray(9)])],
    ['header JSON: created', () => flip(good, inJson('"created"', 14))],
    ['header JSON: slot label', () => flip(good, inJson('"label"', 10))],
    ['header JSON: slot tag', () => flip(good, inJson('"tag"', 8))],
    ['header JSON: slot share', () => flip(good, inJson('"share"', 12))],
    ['header JSON: slot body', () => flip(good, inJson('"body"', 12))],
    ['header JSON: segment size', () => flip(good, inJson('"segmentSize"', 15))],
    ['header MAC', () => flip(good, layout.macStart + 7)],
    ['first segment', () => flip(good, segStart(0) + 100)],
    ['first segment tag', () => flip(good, segStart(1) - 1)],
    ['middle segment', () => flip(good, segStart(mid()) + 2000)],
    ['last segment', () => flip(good, good.length - 20)],
    ['the index', () => {
      expect(Math.floor((layout.indexOffset + 10) / SEG)).toBeLessThan(layout.segments - 1); // not simply "the last segment"
      return flip(good, fileOffset(layout.indexOffset + 10));
    }],
    ['truncated mid-segment', () => good.subarray(0, good.length - 100)],
    ['truncated at a segment boundary', () => good.subarray(0, segStart(layout.segments - 1))],
    ['truncated to the header', () => good.subarray(0, layout.headerLength)],
    ['truncated inside the header', () => good.subarray(0, layout.macStart + 5)],
    ['one byte of garbage appended', () => Buffer.concat([good, Buffer.of(0)])],
    ['a whole segment appended', () => Buffer.concat([good, good.subarray(segStart(3), segStart(4))])],
    ['segments 1 and 2 swapped', () => Buffer.concat([
      good.subarray(0, segStart(1)), good.subarray(segStart(2), segStart(3)), good.subarray(segStart(1), segStart(2)), good.subarray(segStart(3)),
    ])],
    ['a segment duplicated', () => Buffer.concat([good.subarray(0, segStart(5)), good.subarray(segStart(4))])],
    ['a segment dropped', () => Buffer.concat([good.subarray(0, segStart(4)), good.subarray(segStart(5))])],
  ];
}

function expectCorrupt(r: { exitCode: number; stdout: string; stderr: string }, what: string) {
  expect(r.exitCode, `${what}: ${r.stderr}`).toBe(5);
  expect(r.stderr, what).toMatch(/^backupctl: [^\n]+\n$/); // exactly one line
  expect(r.stderr, what).not.toMatch(STACK_TRACE);
  expect(r.stdout, what).toBe('');
}

describe('damage at many offsets: exit 5, one line, DIR unchanged', () => {
  it.each(damages())('%s', async (name, make) => {
    const slug = name.replace(/\W+/g, '-');
    const file = join(fx.home, `${slug}.bkp`);
    await writeFile(file, make());
    const code = ['--recovery-code-file', fx.rc.file];
    const absent = join(fx.home, `absent-${slug}`);
    // One DIR with content for the file and one for standard input: a restore holds its DIR, so
    // two into the same one at once would meet each other's lock (exit 9), not the damage.
    const full = join(fx.home, `full-${slug}`);
    const fullStdin = join(fx.home, `full-stdin-${slug}`);
    for (const dir of [full, fullStdin]) {
      await mkdir(join(dir, 'Media'), { recursive: true });
      await writeFile(join(dir, 'Media', 'mine.txt'), 'keep me\n');
    }
    const before = await snapshot(full);
    const beforeStdin = await snapshot(fullStdin);

    // Independent runs, started together (two cores): into a DIR that does not exist, into one
    // with content from the file and from standard input (the streaming path), and verify.
    const runs = await Promise.all([
      runCli(['restore', file, '-d', absent, ...code], { configDir: fx.configDir }),
      runCli(['restore', file, '-d', full, ...code], { configDir: fx.configDir }),
      runCli(['restore', '-', '-d', fullStdin, ...code], { configDir: fx.configDir, inputFile: file }),
      runCli(['verify', file, ...code], { configDir: fx.configDir }),
    ]);
    runs.forEach((r, i) => expectCorrupt(r, `${name} (${['new DIR', 'existing DIR', 'stdin', 'verify'][i]})`));
    expect(await exists(absent), name).toBe(false);
    expect(await snapshot(full), name).toEqual(before);
    expect(await snapshot(fullStdin), name).toEqual(beforeStdin);
  });
});

describe('verify names what is damaged', () => {
  it('a damaged segment inside one file: the message and --json affectedFiles name it', async () => {
    const video = layout.index.find((e) => e.path.endsWith('.mp4'))!;
    // A byte well inside the video's content, in a segment no other entry touches.
    const at = video.offset + Math.floor(video.length / 2);
    const file = join(fx.home, 'video-damaged.bkp');
    await writeFile(file, flip(good, fileOffset(at)));
    const code = ['--recovery-code-file', fx.rc.file];

    const r = await runCli(['verify', file, ...code], { configDir: fx.configDir });
    expectCorrupt(r, 'verify');
    expect(r.stderr).toContain(`affected: ${video.path}`);
    expect(r.stderr).toMatch(new RegExp(`segment ${Math.floor(at / SEG)}\\b`));

    const j = await runCli(['verify', '--json', file, ...code], { configDir: fx.configDir });
    expect(j.exitCode).toBe(5);
    const o = onlyJson<{ ok: boolean; error: { exitCode: number; kind: string; affectedFiles: string[]; damagedSegments: number[] } }>(j);
    expect(o.ok).toBe(false);
    expect(o.error).toMatchObject({ exitCode: 5, kind: 'corrupt', affectedFiles: [video.path], damagedSegments: [Math.floor(at / SEG)] });

    // Other files are still intact and restorable on their own.
    const dest = join(fx.home, 'partial-ok');
    const ok = await runCli(['restore', file, '-d', dest, '--only', '_chat.txt', ...code], { configDir: fx.configDir });
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(await readFile(join(dest, '_chat.txt'))).toEqual(await readFile(join(fx.src, '_chat.txt')));
    // ...but not the damaged one.
    expectCorrupt(await runCli(['restore', file, '-d', join(fx.home, 'partial-bad'), '--only', video.path, ...code], { configDir: fx.configDir }), 'restore damaged file');
    expect(await exists(join(fx.home, 'partial-bad'))).toBe(false);
  });

  it('damage spanning two files names both', async () => {
    // The segment that holds the end of one entry and the start of the next.
    const i = layout.index.findIndex((e, k) => k > 0 && Math.floor(e.offset / SEG) === Math.floor((e.offset - 1) / SEG) && layout.index[k - 1]!.length > 64);
    const [a, b] = [layout.index[i - 1]!, layout.index[i]!];
    const seg = Math.floor(b.offset / SEG);
    const file = join(fx.home, 'two-damaged.bkp');
    await writeFile(file, flip(good, segStart(seg) + 5));
    const j = await runCli(['verify', '--json', file, '--recovery-code-file', fx.rc.file], { configDir: fx.configDir });
    const o = onlyJson<{ error: { affectedFiles: string[] } }>(j);
    expect(o.error.affectedFiles).toEqual(expect.arrayContaining([a.path, b.path]));
  });
});
