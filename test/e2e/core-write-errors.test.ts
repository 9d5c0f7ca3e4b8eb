// Writes that fail half-way (here: the file-size limit, as a full disk would) on the threads that
// seal an archive (create), write a restore's staged files and a backup's packs: one clear line,
// exit 6, and nothing left behind: no archive or temporary file, DEST as it was, no snapshot.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { BIN, STACK_TRACE, makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;

/** The CLI with RLIMIT_FSIZE at `kib` KiB and SIGXFSZ ignored, so an oversized write fails with EFBIG. */
function limited(kib: number, args: string[], env: Record<string, string> = {}) {
  return execa('bash', ['-c', `trap '' XFSZ; ulimit -f ${kib}; exec "$0" "$@"`, process.execPath, BIN, ...args], {
    reject: false,
    extendEnv: false,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: configDir, BACKUPCTL_CONFIG_DIR: configDir, ...env },
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

  // A pack of 4.2 MB is sealed and written by the pack thread; packs of one 700 KB photo each are
  // sealed on the main thread and written by the store: both were cut short and named by an index.
  it.each([
    ['written by the sealing thread', {}],
    ['sealed on the main thread', { BACKUPCTL_REPO_PACK_SIZE: '300000' }],
  ])('backup, a pack %s: exit 6, one line naming it, no snapshot, and the repository verifies', async (name, env) => {
    const repo = join(home, `repo-${name.split(' ').at(-2)}`);
    expect((await runCli(['repo', 'init', repo], { configDir })).exitCode).toBe(0);
    const r = await limited(512, ['backup', src, '--repo', repo], env);
    expect(r.exitCode).toBe(6);
    const err = String(r.stderr).trim();
    expect(err.split('\n')).toHaveLength(1);
    expect(err).toMatch(/^backupctl: cannot write .*\/data\/[0-9a-f]{2}\/[0-9a-f]{32}: .*(too large|EFBIG)/i);
    expect(err).not.toMatch(STACK_TRACE);
    expect((await readdir(join(repo, 'snapshots')).catch(() => [])).filter((n) => !n.startsWith('.'))).toEqual([]);
    // No temporary file is left, and the index names no pack cut short.
    const data = join(repo, 'data');
    expect(readdirSync(data, { recursive: true, encoding: 'utf8' }).filter((n) => n.split('/').at(-1)!.startsWith('.'))).toEqual([]);
    const v = await runCli(['verify', '--repo', repo, '--read-data'], { configDir, env: { BACKUPCTL_RECOVERY_CODE: rc.code } });
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
  });
});
