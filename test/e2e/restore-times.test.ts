// Modification times come back as exactly as Node's utimes family can set them (times.ts):
// before 1970 too (Node turns a negative number into "now"), to the nanosecond within 2^23 s of
// 1970, and elsewhere within half the spacing of doubles at that time. Files, directories and
// symbolic links; checked with lstat's mtimeNs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lstat, lutimes, mkdir, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { EntryType } from '../../src/archive/format.js';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import { makeHome, newRecoveryCode, runCli, type RecoveryCode } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-restore-times-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
});
afterAll(() => cleanup());

/** Nanoseconds since 1970 of an ISO time with up to nine fraction digits. */
function ns(iso: string): bigint {
  const m = /^(.*?)(?:\.(\d+))?Z$/.exec(iso)!;
  return BigInt(Date.parse(m[1] + 'Z')) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/** Half the spacing of doubles at `t` seconds, in ns, rounded up, plus 1 ns of truncation: 0 within 2^23 s of 1970. */
function precision(t: bigint): bigint {
  const s = Math.abs(Number(t) / 1e9);
  if (s < 2 ** 23) return 0n;
  return BigInt(Math.ceil(2 ** (Math.floor(Math.log2(s)) - 53) * 1e9)) + 1n;
}

const TIMES: Array<[string, bigint]> = [
  ['moon landing', ns('1969-07-20T20:17:40.123456789Z')],
  ['1901 (ext4 keeps from 1901-12-13T20:45:52Z)', ns('1901-12-14T12:00:00.987654321Z')],
  ['just before 1970', ns('1969-12-31T23:59:59.999999999Z')],
  ['just after 1970', ns('1970-01-01T00:00:00.000000001Z')],
  ['97 days in, to the ns', ns('1970-04-07T00:00:00.999999999Z')],
  ['2024, sub-second', ns('2024-03-12T14:02:11.123456789Z')],
  ['2038 overflow second', ns('2038-01-19T03:14:08.000000001Z')],
  ['2100', ns('2100-06-30T23:59:59.999999999Z')],
  ['2250', ns('2250-01-01T00:00:00.5Z')],
];

describe('modification times', () => {
  it('a crafted archive with exact nanosecond times: files, directories and symbolic links', async () => {
    async function* entries(): AsyncGenerator<SourceEntry> {
      for (const [i, [, t]] of TIMES.entries()) {
        yield { path: `d${i}`, type: EntryType.Dir, mode: 0o755, mtimeNs: t };
        yield {
          path: `d${i}/f`, type: EntryType.File, mode: 0o644, mtimeNs: t,
          open: async () => chunkedContent((async function* () { yield Buffer.from(`file ${i}\n`); })(), true),
        };
        yield { path: `d${i}/l`, type: EntryType.Symlink, mode: 0o777, mtimeNs: t, target: 'f' };
      }
    }
    const sink = new MemorySink();
    await writeArchive({ recipients: [recipientFromEntry(recoveryRecipientEntry(rc.code, 'times'))], entries: entries(), sink });
    const file = join(home, 'times.bkp');
    await writeFile(file, sink.bytes);
    for (const [how, args, opts] of [
      ['file', ['restore', file], {}],
      ['stdin', ['restore', '-'], { inputFile: file }],
    ] as const) {
      const dest = join(home, `dest-crafted-${how}`);
      const r = await runCli([...args, '-d', dest, '--recovery-code-file', rc.file], { configDir, ...opts });
      expect(r.exitCode, r.stderr).toBe(0);
      for (const [i, [name, t]] of TIMES.entries()) {
        for (const p of [`d${i}`, `d${i}/f`, `d${i}/l`]) {
          const got = (await lstat(join(dest, p), { bigint: true })).mtimeNs;
          const off = got > t ? got - t : t - got;
          expect(off, `${how}: ${name}, ${p}: ${got} for ${t}`).toBeLessThanOrEqual(precision(t));
        }
      }
    }
    // The bound itself: to the ns near 1970, and not loose elsewhere.
    expect(precision(ns('1969-12-31T23:59:59.999999999Z'))).toBe(0n);
    expect(precision(ns('2024-03-12T14:02:11Z'))).toBe(121n);
    expect(precision(ns('1901-12-14T12:00:00Z'))).toBe(121n);
  });

  it('create then restore of a tree with such times gives back the very same mtimeNs', async () => {
    const src = join(home, 'src');
    await mkdir(src);
    const paths: string[] = [];
    for (const [i] of TIMES.entries()) {
      await mkdir(join(src, `d${i}`));
      await writeFile(join(src, `d${i}`, 'f'), `file ${i}\n`);
      await symlink('f', join(src, `d${i}`, 'l'));
      paths.push(`d${i}/f`, `d${i}/l`, `d${i}`);
    }
    // Set as a user's tools would (numeric strings: Node turns negative numbers into now).
    for (const [i, [, t]] of TIMES.entries()) {
      const s = (Number(t) / 1e9).toString();
      await utimes(join(src, `d${i}`, 'f'), s, s);
      await lutimes(join(src, `d${i}`, 'l'), s, s);
      await utimes(join(src, `d${i}`), s, s);
    }
    const before = new Map<string, bigint>();
    for (const p of paths) before.set(p, (await lstat(join(src, p), { bigint: true })).mtimeNs);
    expect(before.get('d0/f')! < 0n).toBe(true); // really before 1970 at the source
    const file = join(home, 'tree.bkp');
    const c = await runCli(['create', src, '-o', file], { configDir });
    expect(c.exitCode, c.stderr).toBe(0);
    const dest = join(home, 'dest-tree');
    const r = await runCli(['restore', file, '-d', dest, '--recovery-code-file', rc.file], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    for (const p of paths) expect((await lstat(join(dest, p), { bigint: true })).mtimeNs, p).toBe(before.get(p));
  });

  it('a time beyond 2262 (what ext4 can hold, the format cannot): create stores the latest it can, with one warning, exit 0', async () => {
    const src = join(home, 'far');
    await mkdir(src);
    await writeFile(join(src, 'f'), 'far\n');
    await utimes(join(src, 'f'), '10413792000', '10413792000'); // 2300-01-01
    expect((await lstat(join(src, 'f'), { bigint: true })).mtimeNs).toBe(10_413_792_000_000_000_000n);
    const file = join(home, 'far.bkp');
    const c = await runCli(['create', src, '-o', file], { configDir });
    expect(c.exitCode, c.stderr).toBe(0); // it used to be exit 1, internal error (out of range)
    expect(c.stderr.split('\n').filter((l) => l.includes('warning'))).toEqual([
      'backupctl: warning: 1 entry has a modification time outside 1677-09-21..2262-04-11, what the format holds (first: "f"): stored as the nearest of those',
    ]);
    const dest = join(home, 'dest-far');
    const r = await runCli(['restore', file, '-d', dest, '--recovery-code-file', rc.file], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    const max = 2n ** 63n - 1n;
    const got = (await lstat(join(dest, 'f'), { bigint: true })).mtimeNs;
    expect(got > max ? got - max : max - got).toBeLessThanOrEqual(precision(max));
  });
});
