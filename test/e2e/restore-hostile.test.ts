// Authentic but hostile archives whose entry records disagree with their index entries: the
// index names something harmless, the record itself (head) names a path out of DIR, out of the
// staging directory, or another type. Anyone holding a recipient's public key can seal such an
// archive; it is built here with the library's writer (a sound archive for the recovery code),
// then the record's head edited in the plaintext and the payload sealed again with its own key.
// The big file's content (17 MiB) is far more than the staging thread takes in before the record
// is complete, so a check made only after the content was streamed would come too late.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lstat, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { decodeFooter, decodeIndex } from '../../src/archive/entries.js';
import { EntryType, FOOTER_LEN } from '../../src/archive/format.js';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import { STACK_TRACE, exists, makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { openPayload, sealPayload } from '../support/forge.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;

const FORGE = { fileKey: new Uint8Array(32).fill(3), nonce: new Uint8Array(16).fill(5), segmentSize: 1 << 20 };
const BIG = 17 << 20;

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-restore-hostile-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
});
afterAll(() => cleanup());

/** A benign name of `n` bytes, the length the record's own name must keep. */
const benign = (n: number) => 'k'.repeat(n - 4) + '.bin';

/**
 * An archive holding ok.txt, then `indexPath` (a BIG file, or an entry of `indexType`), then
 * z.txt, sealed for the recovery code; then, in the plaintext, the middle record's head is given
 * `recordPath` (same byte length) and, if `recordType` is given, its index entry that type.
 */
async function craft(name: string, o: { indexPath: string; recordPath?: string; indexType?: EntryType }): Promise<string> {
  const file = join(home, `${name}.bkp`);
  const small = (path: string): SourceEntry => ({
    path, type: EntryType.File, mode: 0o644, mtimeNs: 1_700_000_000_000_000_000n,
    open: async () => chunkedContent((async function* () { yield Buffer.from(`content of ${path}\n`); })(), false),
  });
  async function* entries(): AsyncGenerator<SourceEntry> {
    yield small('ok.txt');
    yield {
      path: o.indexPath, type: EntryType.File, mode: 0o600, mtimeNs: 1_700_000_000_000_000_000n,
      open: async () => chunkedContent((async function* () {
        for (let i = 0; i < BIG / (1 << 20); i++) yield Buffer.alloc(1 << 20, 0x41 + (i % 26));
      })(), false),
    };
    yield small('z.txt');
  }
  const sink = new MemorySink();
  await writeArchive({
    recipients: [recipientFromEntry(recoveryRecipientEntry(rc.code, 'hostile'))], entries: entries(), sink, segmentSize: FORGE.segmentSize,
    fixed: { fileKey: FORGE.fileKey, nonce: FORGE.nonce, created: '2026-12-01T12:00:00Z' },
  });
  const { header, plain } = await openPayload(sink.bytes, FORGE);
  const footer = decodeFooter(plain.subarray(plain.length - FOOTER_LEN), plain.length);
  const index = await decodeIndex(plain.subarray(footer.indexOffset + 1, footer.indexOffset + footer.indexLength), footer.entryCount);
  const big = index[1]!;
  expect(big.path).toBe(o.indexPath);
  // Record: 'E' type(1) pathLen(2) path ...
  const pathAt = big.offset + 1 + 3;
  expect(plain.subarray(pathAt, pathAt + Buffer.byteLength(o.indexPath)).toString()).toBe(o.indexPath);
  if (o.recordPath !== undefined) {
    const rec = Buffer.from(o.recordPath);
    expect(rec.length).toBe(Buffer.byteLength(o.indexPath));
    rec.copy(plain, pathAt);
  }
  if (o.indexType !== undefined) {
    // Index record: offset(8) length(8) type(1) ...: the second one starts after the first's bytes.
    const first = index[0]!;
    const firstLen = 16 + 1 + 2 + Buffer.byteLength(first.path) + 4 + 8 + 1 + 2 + 41;
    plain[footer.indexOffset + 1 + firstLen + 16] = o.indexType;
  }
  await writeFile(file, await sealPayload(header, plain, FORGE));
  return file;
}

/**
 * Restore `file` (with `extra` options) from the file and from standard input, into a new DEST
 * and into one with content, each DEST alone in a parent directory of its own: every run must
 * exit 5 with one line, and leave its parent directory exactly as it was (so nothing appeared
 * next to DEST, nor in it; DEST's own mtime aside). `alsoAbsent`: paths outside the parents that must not exist.
 */
async function expectRefused(file: string, why: { file: RegExp; stdin: RegExp }, extra: string[] = [], alsoAbsent: string[] = []) {
  const code = ['--recovery-code-file', rc.file];
  const runs = (['file', 'stdin'] as const).flatMap((how) => (['fresh', 'used'] as const).map((dest) => ({ how, dest })));
  await Promise.all(runs.map(async ({ how, dest }) => {
    const parent = join(home, `parent-${how}-${dest}-${Math.random().toString(36).slice(2)}`);
    const target = join(parent, 'dest');
    await mkdir(parent);
    if (dest === 'used') {
      await mkdir(join(target, 'a'), { recursive: true });
      await writeFile(join(target, 'a', 'mine.txt'), 'mine\n');
    }
    // DEST's own mtime aside: the staging directory was made and removed in it.
    const tree = async () => {
      const t = await snapshot(parent);
      if (t['dest']) t['dest'].mtimeMs = 0;
      return t;
    };
    const before = await tree();
    const r = await runCli(['restore', how === 'file' ? file : '-', '-d', target, ...extra, ...code], { configDir, ...(how === 'stdin' ? { inputFile: file } : {}) });
    const what = `${how} into a ${dest} DEST: ${r.stderr}`;
    expect(r.exitCode, what).toBe(5);
    expect(r.stderr, what).toMatch(why[how]);
    expect(r.stderr, what).toMatch(/^backupctl: [^\n]+\n$/);
    expect(r.stderr, what).not.toMatch(STACK_TRACE);
    expect(await tree(), what).toEqual(before);
    expect(await exists(target), what).toBe(dest === 'used');
  }));
  for (const p of alsoAbsent) expect(await exists(p), p).toBe(false);
  // Nothing anywhere else in the test's home either (only the archives, the code, the config
  // and the parent directories checked above).
  expect((await readdir(home)).filter((n) => !/^(config|code\.txt|parent-.*|.*\.bkp)$/.test(n))).toEqual([]);
}

const INDEX_MISMATCH = /^backupctl: the index does not match the payload at "k+\.bin"\n$/;

describe('a record whose head differs from its index entry is refused before anything is created', () => {
  for (const [recordPath, where] of [
    ['../../.ssh/authorized_keys', 'next to DEST'],
    ['x/../../y', 'out of the staging directory, into DEST itself'],
  ] as const) {
    it(`record path ${recordPath} (${where}; 17 MiB of content), from a file, with --only and from stdin`, async () => {
      const file = await craft(recordPath.replace(/\W+/g, '-'), { indexPath: benign(recordPath.length), recordPath });
      const why = { file: INDEX_MISMATCH, stdin: /climbs out of the target directory/ };
      await expectRefused(file, why);
      await expectRefused(file, why, ['--only', benign(recordPath.length)]);
    });
  }

  it('an absolute record path', async () => {
    const recordPath = join(home, 'absolute-target.txt');
    const file = await craft('absolute', { indexPath: benign(Buffer.byteLength(recordPath)), recordPath });
    const why = { file: INDEX_MISMATCH, stdin: /absolute path/ };
    await expectRefused(file, why, [], [recordPath]);
    await expectRefused(file, why, ['--only', benign(Buffer.byteLength(recordPath))], [recordPath]);
  });

  it('a record of another type than its index entry (a 17 MiB file recorded as a directory in the index)', async () => {
    const file = await craft('type', { indexPath: benign(12), indexType: EntryType.Dir });
    // From a pipe, the index is only met at the end: the stream's own entries are checked then.
    const why = { file: INDEX_MISMATCH, stdin: /the index does not match the entries in the payload/ };
    await expectRefused(file, why);
  });

  it('from a file, an unsafe name in the index itself is refused before DEST or a staging directory is made', async () => {
    const file = await craft('index-dotdot', { indexPath: '../../.ssh/authorized_keys' });
    const parent = join(home, 'parent-index-dotdot');
    const used = join(parent, 'used');
    await mkdir(used, { recursive: true });
    const before = await lstat(used, { bigint: true });
    for (const dest of [join(parent, 'fresh', 'dest'), used]) {
      const r = await runCli(['restore', file, '-d', dest, '--recovery-code-file', rc.file], { configDir });
      expect(r.exitCode, r.stderr).toBe(5);
      expect(r.stderr).toMatch(/^backupctl: refusing to restore entry "\.\.\/\.\.\/\.ssh\/authorized_keys": it climbs out of the target directory\n$/);
    }
    expect(await readdir(parent)).toEqual(['used']);
    expect(await readdir(used)).toEqual([]);
    expect((await lstat(used, { bigint: true })).mtimeNs).toBe(before.mtimeNs); // not even a staging directory came and went
  });

  it('verify refuses each as well', async () => {
    for (const [name, recordPath] of [['v-dotdot', '../../.ssh/authorized_keys'], ['v-inner', 'x/../../y']] as const) {
      const file = await craft(name, { indexPath: benign(recordPath.length), recordPath });
      const r = await runCli(['verify', file, '--recovery-code-file', rc.file], { configDir });
      expect(r.exitCode, r.stderr).toBe(5);
      expect(r.stderr).toMatch(/^backupctl: [^\n]*climbs out of the target directory[^\n]*\n$/);
    }
  });

  it('control: the same archive with its record left alone restores (only the edit is refused)', async () => {
    const file = await craft('control', { indexPath: benign(26) });
    const dest = join(home, 'parent-control', 'dest');
    const r = await runCli(['restore', file, '-d', dest, '--recovery-code-file', rc.file], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    const got = await snapshot(dest, { times: false });
    expect(Object.keys(got)).toEqual([benign(26), 'ok.txt', 'z.txt']);
    expect(got[benign(26)]!.size).toBe(BIG);
  });
});
