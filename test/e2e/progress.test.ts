// Progress of create, restore, verify and migrate: with --json, JSON lines on stderr whose last point has
// done everything it counted towards (bytes = total) with the entry count of the result; on a
// terminal (a pty), the spinner line shows bytes done, total, rate and ETA.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, makeHome, newRecoveryCode, onlyJson, runCli, type RecoveryCode } from '../support/cli.js';
import { runInPty } from '../support/pty.js';
import { writeCrypt15 } from '../support/crypt15-writer.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;
let archive: string;
/** 256 incompressible files of 256 KiB: 67.1 MB, long enough for a spinner line to be seen. */
const FILES = 256;
const SIZE = 256 << 10;

interface ProgressLine { type: 'progress'; operation: string; bytes: number; total?: number; entries?: number; rate: number; eta?: number }
const progressLines = (stderr: string) =>
  stderr.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as { type: string }).filter((j): j is ProgressLine => j.type === 'progress');

function expectWellFormed(lines: ProgressLine[], operation: string) {
  expect(lines.length).toBeGreaterThan(0);
  for (const l of lines) {
    expect(l.operation).toBe(operation);
    expect(Number.isInteger(l.rate) && l.rate >= 0).toBe(true);
    expect(l.total).toBeGreaterThanOrEqual(l.bytes);
    // No ETA before the first byte (no rate yet), a whole number of seconds after.
    if (l.bytes === 0) expect(l.eta).toBeUndefined();
    else expect(Number.isInteger(l.eta) && l.eta! >= 0, JSON.stringify(l)).toBe(true);
  }
  for (let i = 1; i < lines.length; i++) expect(lines[i]!.bytes).toBeGreaterThanOrEqual(lines[i - 1]!.bytes);
  return lines[lines.length - 1]!;
}

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-progress-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  src = join(home, 'export');
  await mkdir(join(src, 'Media'), { recursive: true });
  await writeFile(join(src, '_chat.txt'), 'hello\n');
  for (let i = 0; i < FILES; i++) await writeFile(join(src, 'Media', `IMG-${String(i).padStart(4, '0')}.jpg`), randomBytes(SIZE));
  archive = join(home, 'export.bctl');
});
afterAll(() => cleanup());

describe('--json progress lines', () => {
  it('create: bytes count to the source size, entries to the result', async () => {
    const r = await runCli(['create', src, '-o', archive, '--json'], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    const res = onlyJson<{ bytesIn: number; entries: number }>(r);
    const last = expectWellFormed(progressLines(r.stderr), 'create');
    expect(res.bytesIn).toBe(FILES * SIZE + 6);
    expect(last).toMatchObject({ bytes: res.bytesIn, total: res.bytesIn, entries: res.entries, eta: 0 });
  });

  it('restore: bytes count to the selected files, whole or --only', async () => {
    let r = await runCli(['restore', archive, '-d', join(home, 'out-json'), '--json', '--recovery-code-file', rc.file], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    let res = onlyJson<{ bytes: number; entries: number }>(r);
    expect(expectWellFormed(progressLines(r.stderr), 'restore')).toMatchObject({ bytes: FILES * SIZE + 6, total: FILES * SIZE + 6, entries: res.entries, eta: 0 });
    r = await runCli(['restore', archive, '-d', join(home, 'out-only'), '--json', '--recovery-code-file', rc.file, '--only', 'Media/IMG-0007.jpg'], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    res = onlyJson<{ bytes: number; entries: number }>(r);
    expect(expectWellFormed(progressLines(r.stderr), 'restore')).toMatchObject({ bytes: SIZE, total: SIZE, entries: res.entries });
  });

  it('restore from a pipe: no total (the index comes last), bytes still counted', async () => {
    const r = await runCli(['restore', '-', '-d', join(home, 'out-pipe'), '--json', '--recovery-code-file', rc.file], { configDir, inputFile: archive });
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = progressLines(r.stderr);
    expect(lines.length).toBeGreaterThan(0);
    expect(lines.every((l) => l.total === undefined && l.eta === undefined)).toBe(true);
    expect(lines[lines.length - 1]!.bytes).toBe(FILES * SIZE + 6);
  });

  it('verify: payload bytes count to its plaintext size', async () => {
    const r = await runCli(['verify', archive, '--json', '--recovery-code-file', rc.file], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    const last = expectWellFormed(progressLines(r.stderr), 'verify');
    expect(last.bytes).toBe(last.total);
    expect(last.bytes).toBeGreaterThan(FILES * SIZE);
    expect(last.entries).toBe(onlyJson<{ entries: number }>(r).entries);
  });

  it('migrate: the total (the .crypt15 size) grows to the decrypted bytes, which it ends at', async () => {
    const rootKey = randomBytes(32);
    // Compressible: the database decompresses to far more than its .crypt15 holds.
    const db = Buffer.from('INSERT INTO messages VALUES(1,\'hello\');\n'.repeat(50_000));
    const legacy = join(home, 'msgstore.db.crypt15');
    await writeCrypt15(legacy, db, { rootKey });
    const keyFile = join(home, 'legacy.key');
    await writeFile(keyFile, rootKey.toString('hex'), { mode: 0o600 });
    const r = await runCli(['migrate-from-64-digit-key', legacy, '-o', join(home, 'migrated.bctl'), '--key-file', keyFile, '--json'], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(expectWellFormed(progressLines(r.stderr), 'migrate')).toMatchObject({ bytes: db.length, total: db.length, entries: 1, eta: 0 });
  });
});

describe('progress on a terminal', () => {
  const env = () => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, BACKUPCTL_CONFIG_DIR: configDir, BACKUPCTL_RECOVERY_CODE: rc.code });
  const LINE = (op: string) => `${op}: \\d+\\.\\d / 67\\.1 MB · \\d+\\.\\d MB/s · \\d+ entr(y|ies) · ETA \\d+`;

  it('create and restore show bytes done, total, rate and ETA; the line is gone when they finish', async () => {
    const out = join(home, 'out-pty');
    const c = await runInPty([process.execPath, BIN, 'create', src, '-o', join(home, 'pty.bctl')], { env: env(), cols: 160, steps: [{ expect: LINE('create'), send: '', settle: 0 }] });
    expect(c.screens.length, c.final).toBe(1);
    expect(c.exitCode, c.final).toBe(0);
    expect(c.final).not.toMatch(/create: /);
    expect(c.final).toMatch(/^Wrote .*pty\.bctl: 258 entries \(257 files\)/m);
    const r = await runInPty([process.execPath, BIN, 'restore', join(home, 'pty.bctl'), '-d', out], { env: env(), cols: 160, steps: [{ expect: LINE('restore'), send: '', settle: 0 }] });
    expect(r.screens.length, r.final).toBe(1);
    expect(r.exitCode, r.final).toBe(0);
    expect(r.final).toMatch(/^Restored 258 entries \(257 files, 67\.1 MB\)/m);
  });
});
