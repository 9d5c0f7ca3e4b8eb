// A file over 4 GiB through create, inspect --list, verify and restore (64-bit sizes end to end).
// Opt-in: BACKUPCTL_TEST_LARGE=1 (it writes about 9 GB and takes a minute); the byte-level 64-bit
// encoding is covered on every run by test/unit/archive-entries.test.ts.
import { describe, expect, it } from 'vitest';
import { open, stat, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { makeHome, newRecoveryCode, onlyJson, runCli } from '../support/cli.js';

const SIZE = 4 * 2 ** 30 + 12345;

describe.skipIf(!process.env.BACKUPCTL_TEST_LARGE)('a file over 4 GiB', () => {
  it('round-trips with its exact size', async () => {
    const { home, configDir, cleanup } = await makeHome('backupctl-large-');
    try {
      const rc = await newRecoveryCode(configDir, join(home, 'code'));
      const src = join(home, 'export');
      await mkdir(src);
      const fh = await open(join(src, 'huge.bin'), 'w');
      await fh.write(Buffer.from('start'), 0, 5, 0);
      await fh.write(Buffer.from('end'), 0, 3, SIZE - 3); // sparse in between
      await fh.close();
      const opts = { configDir, timeoutMs: 600_000 };
      const archive = join(home, 'a.bkp');
      expect((await runCli(['create', src, '-o', archive], opts)).exitCode).toBe(0);
      const list = onlyJson<{ entries: Array<{ path: string; size: number }> }>(await runCli(['inspect', archive, '--list', '--json', '--recovery-code-file', rc.file], opts));
      expect(list.entries).toEqual([expect.objectContaining({ path: 'huge.bin', size: SIZE })]);
      expect((await runCli(['verify', archive, '--recovery-code-file', rc.file], opts)).exitCode).toBe(0);
      const out = join(home, 'out');
      expect((await runCli(['restore', archive, '-d', out, '--recovery-code-file', rc.file], opts)).exitCode).toBe(0);
      expect((await stat(join(out, 'huge.bin'))).size).toBe(SIZE);
      const r = await open(join(out, 'huge.bin'), 'r');
      const tail = Buffer.alloc(3);
      await r.read(tail, 0, 3, SIZE - 3);
      await r.close();
      expect(tail.toString()).toBe('end');
    } finally {
      await cleanup();
    }
  }, 900_000);
});
