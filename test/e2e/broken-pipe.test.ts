// Standard output into a real shell pipeline whose reader goes away (`| head -c`, `| head -n`),
// through the BUILT CLI (`npx tsc -p .` first): an archive streamed with `create -o -` or
// `pull -o -` that its reader stops taking is a failure (exit 6, one line with the byte count);
// a listing cut short ends quietly with the status the command reached (verify --against: 3).
// Also: inputs that cannot work fail before any output (`verify --against` a missing directory,
// `create` of a missing directory: not even a header on stdout).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { DriveFake } from '../support/drive-fake/server.js';
import { BIN, STACK_TRACE, makeHome, newRecoveryCode, runCli, runCliBytes, type RecoveryCode } from '../support/cli.js';

const MiB = 1024 * 1024;
let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;
let archive: string;
let fake: DriveFake;
let token: string;

const driveEnv = () => ({ BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl, BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl, BACKUPCTL_DRIVE_ACCESS_TOKEN: token, BACKUPCTL_RETRY_BASE_MS: '5' });

/**
 * `backupctl ARGS | READER` in bash; returns backupctl's own exit code (PIPESTATUS[0]), its
 * stderr, and what the reader wrote to `out`.
 */
async function piped(args: string, reader: string, out: string): Promise<{ exitCode: number; stderr: string; got: Buffer }> {
  const script = `"${process.execPath}" "${BIN}" ${args} 2>"${out}.err" | ${reader} >"${out}"; echo "\${PIPESTATUS[0]}"`;
  const r = await execa('bash', ['-c', script], {
    env: { PATH: process.env.PATH!, HOME: configDir, BACKUPCTL_CONFIG_DIR: configDir, ...(fake ? driveEnv() : {}) },
    extendEnv: false,
    reject: false,
    cwd: home,
    timeout: 120_000,
  });
  expect(r.exitCode, r.stderr).toBe(0);
  return { exitCode: Number(String(r.stdout).trim()), stderr: await readFile(`${out}.err`, 'utf8'), got: await readFile(out) };
}

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-pipe-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  src = join(home, 'export');
  await mkdir(join(src, 'Media'), { recursive: true });
  // 8 MiB of incompressible media plus 3,000 small files: a listing of tens of KB.
  for (let i = 0; i < 4; i++) await writeFile(join(src, 'Media', `VID-${i}.mp4`), randomBytes(2 * MiB));
  for (let i = 0; i < 3000; i++) await writeFile(join(src, 'Media', `IMG-20240312-WA${String(i).padStart(5, '0')}.jpg`), `photo ${i}\n`);
  archive = join(home, 'a.bctl');
  const c = await runCli(['create', src, '-o', archive], { configDir, timeoutMs: 120_000 });
  expect(c.exitCode, c.stderr).toBe(0);
  fake = await new DriveFake().start();
  token = fake.issueAccessToken();
}, 180_000);
afterAll(async () => {
  await fake?.stop();
  await cleanup?.();
});

describe('an archive on standard output whose reader goes away is a failure', () => {
  it('create -o - | head -c 1M: exit 6, one line naming the bytes the pipe took, the reader got exactly 1 MiB', async () => {
    const r = await piped(`create "${src}" -o -`, 'head -c 1048576', join(home, 'create-head'));
    expect(r.exitCode).toBe(6);
    expect(r.got.length).toBe(MiB);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    const m = /^backupctl: the reader of standard output went away after (\d+) bytes: the archive is incomplete$/.exec(lines[0]!);
    expect(m, r.stderr).not.toBeNull();
    // The pipe took at least what head read, and less than the whole archive.
    expect(Number(m![1])).toBeGreaterThanOrEqual(MiB);
    expect(Number(m![1])).toBeLessThan((await readFile(archive)).length);
    expect(r.stderr).not.toMatch(/Wrote standard output/);
  });

  it('create -o - into a reader that exits at once (| true): exit 6, never 0', async () => {
    const r = await piped(`create "${src}" -o -`, 'true', join(home, 'create-true'));
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/^backupctl: the reader of standard output went away after \d+ bytes: the archive is incomplete\n$/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });

  it('create -o - | cat still exits 0 with the whole archive (the check does not misfire)', async () => {
    const r = await piped(`create "${src}" -o -`, 'cat', join(home, 'create-cat'));
    expect(r.exitCode, r.stderr).toBe(0);
    const v = await runCli(['verify', join(home, 'create-cat'), '--recovery-code-file', rc.file], { configDir, timeoutMs: 60_000 });
    expect(v.exitCode, v.stderr).toBe(0);
  });

  it('pull -o - | head -c 1M: exit 6 with the byte count, not 0', async () => {
    const p = await runCli(['push', archive], { configDir, env: driveEnv(), timeoutMs: 60_000 });
    expect(p.exitCode, p.stderr).toBe(0);
    const r = await piped('pull a.bctl -o -', 'head -c 1048576', join(home, 'pull-head'));
    expect(r.exitCode).toBe(6);
    expect(r.got.length).toBe(MiB);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^backupctl: the reader of standard output went away after \d+ bytes: the archive is incomplete\n$/);
  });
});

describe('a listing cut short ends quietly, with the status the command reached', () => {
  it('inspect --list | head -n 3: exit 0, nothing on stderr', async () => {
    const r = await piped(`inspect "${archive}" --list --recovery-code-file "${rc.file}"`, 'head -n 3', join(home, 'inspect-head'));
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.got.toString().split('\n')).toHaveLength(4);
  });

  it('verify --against an empty directory | head -n 1: exit 3 (differences), not 0', async () => {
    const empty = join(home, 'empty');
    await mkdir(empty, { recursive: true });
    const r = await piped(`verify "${archive}" --recovery-code-file "${rc.file}" --against "${empty}"`, 'head -n 1', join(home, 'verify-head'));
    expect(r.exitCode).toBe(3);
    expect(r.got.toString()).toMatch(/^Media: missing from the directory\n$/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });

  it('verify --against the export itself | head -n 1: exit 0 (no differences)', async () => {
    const r = await piped(`verify "${archive}" --recovery-code-file "${rc.file}" --against "${src}"`, 'head -n 1', join(home, 'verify-same'));
    expect(r.exitCode, r.stderr).toBe(0);
  });
});

describe('standard output that cannot be written (a full disk) is exit 6, for an archive and for a listing', () => {
  const toFull = (args: string) =>
    execa('bash', ['-c', `"${process.execPath}" "${BIN}" ${args} >/dev/full`], { env: { PATH: process.env.PATH!, HOME: configDir, BACKUPCTL_CONFIG_DIR: configDir }, extendEnv: false, reject: false, stripFinalNewline: false, timeout: 60_000 });

  it.each([
    ['create -o -', () => `create "${src}" -o -`],
    ['inspect --list', () => `inspect "${archive}" --list --recovery-code-file "${rc.file}"`],
  ])('%s > /dev/full: one line, exit 6 (a listing used to end in 13, "unsettled top-level await")', async (_, args) => {
    const r = await toFull(args());
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toBe('backupctl: cannot write standard output: no space left on device\n');
  });
});

describe('verify --against checks the directory before any long work', () => {
  it('a missing directory: exit 6 at once, before the unlock (no recovery code needed)', async () => {
    const r = await runCli(['verify', archive, '--against', join(home, 'nonexistent')], { configDir });
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toBe(`backupctl: cannot compare with ${join(home, 'nonexistent')}: no such file or directory\n`);
  });

  it('a file instead of a directory: exit 6, "not a directory"', async () => {
    const r = await runCli(['verify', archive, '--against', archive, '--recovery-code-file', rc.file], { configDir });
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toBe(`backupctl: cannot compare with ${archive}: not a directory\n`);
    expect(r.stdout).toBe('');
  });
});

describe('create checks DIR before any output', () => {
  it('create of a missing directory or of a file with -o -: exit 6 and not one byte on stdout', async () => {
    for (const [dir, line] of [
      [join(home, 'missing'), `backupctl: cannot read ${join(home, 'missing')}: no such file or directory\n`],
      [archive, `backupctl: ${archive} is not a directory\n`],
    ] as const) {
      const r = await runCliBytes(['create', dir, '-o', '-'], { configDir });
      expect(r.exitCode).toBe(6);
      expect(r.stdout.length).toBe(0);
      expect(r.stderr).toBe(line);
    }
  });

  it('create of a missing directory with -o FILE: exit 6, no file and no temporary file left', async () => {
    const outDir = join(home, 'out');
    await mkdir(outDir, { recursive: true });
    const r = await runCli(['create', join(home, 'missing'), '-o', join(outDir, 'x.bctl')], { configDir });
    expect(r.exitCode).toBe(6);
    expect(await readdir(outDir)).toEqual([]);
  });
});
