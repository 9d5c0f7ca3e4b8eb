// Writes that fail half-way (here: the file-size limit, as a full disk would) on the threads that
// seal an archive (create) and write a restore's staged files: one clear line, exit 6, and
// nothing left behind: no archive or temporary file, DEST as it was.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { BIN, STACK_TRACE, makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;

/** The CLI with RLIMIT_FSIZE at `kib` KiB and SIGXFSZ ignored, so an oversized write fails with EFBIG. */
function limited(kib: number, args: string[]) {
  return execa('bash', ['-c', `trap '' XFSZ; ulimit -f ${kib}; exec "$0" "$@"`, process.execPath, BIN, ...args], {
    reject: false,
    extendEnv: false,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: configDir, BACKUPCTL_CONFIG_DIR: configDir },
    input: '',
    timeout: 30_000,
  });
}

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-write-errors-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  src = join(home, 'src');
  await mkdir(join(src, 'Media'), { recursive: true });
  for (let i = 0; i < 6; i++) await writeFile(join(src, 'Media', `IMG-${i}.jpg`), randomBytes(700_000));
  await writeFile(join(src, '_chat.txt'), 'hello\n'.repeat(1000));
});
afterAll(() => cleanup());

describe('a write that fails half-way', () => {
  it('create: exit 6, one line naming the archive, no archive and no temporary file left', async () => {
    const out = join(home, 'out');
    await mkdir(out);
    const r = await limited(2048, ['create', src, '-o', join(out, 'a.bkp')]);
    expect(r.exitCode).toBe(6);
    const err = String(r.stderr).trim();
    expect(err.split('\n')).toHaveLength(1);
    expect(err).toMatch(/^backupctl: cannot write .*a\.bkp: .*(too large|EFBIG)/i);
    expect(err).not.toMatch(STACK_TRACE);
    expect(await readdir(out)).toEqual([]);
  });

  it('restore: exit 6, one line, DEST exactly as it was', async () => {
    const archive = join(home, 'ok.bkp');
    expect((await runCli(['create', src, '-o', archive], { configDir })).exitCode).toBe(0);
    const dest = join(home, 'dest');
    await mkdir(dest);
    await writeFile(join(dest, 'keep.txt'), 'mine');
    const before = await snapshot(dest);
    const r = await limited(512, ['restore', archive, '-d', dest, '--recovery-code-file', rc.file]);
    expect(r.exitCode).toBe(6);
    const err = String(r.stderr).trim();
    expect(err.split('\n')).toHaveLength(1);
    expect(err).toMatch(/^backupctl: cannot write .*IMG-0\.jpg: .*(too large|EFBIG)/i);
    expect(await snapshot(dest)).toEqual(before);
    expect(await readdir(dest)).toEqual(['keep.txt']);
  });
});
