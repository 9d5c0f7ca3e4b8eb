// The start of a restore, before any archive content: a destination where nothing can be created
// ends quickly in one line with exit 6 (it used to spin at 100% CPU on /proc, deaf to Ctrl-C,
// and to call a read-only file system "no such file or directory").
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STACK_TRACE, exists, makeHome, newRecoveryCode, runCli, type RecoveryCode } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let archive: string;
/** A read-only tmpfs (tests run as root here and in CI, so a 0555 directory would not stop a write). */
let ro: string | null = null;

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-restore-start-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  const src = join(home, 'src');
  await mkdir(join(src, 'sub'), { recursive: true });
  await writeFile(join(src, 'sub', 'a.txt'), 'a\n');
  archive = join(home, 'a.bkp');
  const r = await runCli(['create', src, '-o', archive], { configDir });
  expect(r.exitCode, r.stderr).toBe(0);
  const mnt = join(home, 'ro');
  await mkdir(join(mnt));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', mnt], { stdio: 'ignore' });
    ro = mnt;
  } catch {
    /* no mount here: the read-only tests are skipped */
  }
});
afterAll(async () => {
  if (ro) execFileSync('umount', [ro]);
  await cleanup();
});

async function restoreInto(dir: string) {
  const t0 = Date.now();
  const r = await runCli(['restore', archive, '-d', dir, '--recovery-code-file', rc.file], { configDir, timeoutMs: 15_000 });
  return { ...r, ms: Date.now() - t0 };
}

function expectOneLine(r: { exitCode: number; stderr: string }, message: RegExp) {
  expect(r.exitCode, r.stderr).toBe(6);
  expect(r.stderr).toMatch(/^backupctl: [^\n]+\n$/);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(STACK_TRACE);
  expect(r.stderr).not.toMatch(/internal error/);
}

describe('a destination where nothing can be created', () => {
  for (const dir of ['/proc/backupctl-test', '/proc/self/backupctl-test/deeper']) {
    it(`-d ${dir}: exit 6 at once, no spinning`, async () => {
      const r = await restoreInto(dir);
      expectOneLine(r, /^backupctl: cannot create anything in \/proc(\/self)?: its file system does not allow new entries\n$/);
      expect(r.ms).toBeLessThan(10_000); // it used to run until killed (the time limit is 15 s)
    });
  }

  it('-d /proc (exists, takes no new entries)', async () => {
    expectOneLine(await restoreInto('/proc'), /^backupctl: cannot create anything in \/proc: its file system does not allow new entries\n$/);
  });

  it('-d /sys/backupctl-test', async () => {
    expectOneLine(await restoreInto('/sys/backupctl-test'), /^backupctl: cannot create directory \/sys\/backupctl-test: (operation not permitted|permission denied|read-only file system)\n$/);
  });

  it("-d '' is a usage error (it would resolve to the current directory)", async () => {
    const r = await runCli(['restore', archive, '-d', '', '--recovery-code-file', rc.file], { configDir, cwd: home });
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toBe('backupctl: --dir needs a directory\n');
    expect(await exists(join(home, 'sub'))).toBe(false);
  });

  it('-d a path under a regular file', async () => {
    expectOneLine(await restoreInto(join(archive, 'x')), /^backupctl: .*a\.bkp is not a directory\n$/);
  });

  it('a read-only file system: a new DEST on it, and an existing one', async (ctx) => {
    if (!ro) return ctx.skip(); // mount refused (no CAP_SYS_ADMIN)
    const fresh = await restoreInto(join(ro, 'new', 'dest'));
    expectOneLine(fresh, new RegExp(`^backupctl: cannot create directory ${ro}/new: read-only file system\\n$`));
    const existing = await restoreInto(ro);
    expectOneLine(existing, new RegExp(`^backupctl: cannot write into ${ro}: read-only file system\\n$`));
    expect(await exists(join(ro, 'new'))).toBe(false);
  });
});
