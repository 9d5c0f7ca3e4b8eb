// The staging thread's own check (defence in depth behind the entry checks of restore.ts): it
// creates nothing whose path does not resolve inside its staging directory, whatever it is sent.
// The built module is used: the thread runs dist/archive/staging-worker.js.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StagingWriter } from '../../dist/archive/staging.js';

let base: string;
beforeAll(async () => {
  base = await mkdtemp(join(tmpdir(), 'backupctl-staging-outside-'));
});
afterAll(() => rm(base, { recursive: true, force: true }));

async function stagingIn(name: string): Promise<string> {
  const dir = join(base, name, 'dest', '.backupctl-restore-x');
  await mkdir(dir, { recursive: true });
  return dir;
}

describe('the staging thread refuses paths outside its directory', () => {
  for (const [what, path] of [
    ['../../y (a file)', '../../y'],
    ['x/../../y', 'x/../../y'],
    ['an absolute path', '/tmp/backupctl-staging-outside-abs'],
    ['.. alone', '..'],
    ['a/.. (back to the directory itself)', 'a/..'],
    ['the directory itself', ''],
  ] as const) {
    for (const op of ['open', 'mkdir'] as const) {
      it(`${op} ${what}`, async () => {
        const name = `${op}-${what.replace(/\W+/g, '-')}`;
        const staging = await stagingIn(name);
        const w = new StagingWriter(staging);
        await w.mkdir('inside');
        if (op === 'open') {
          await w.open(path, false);
          await w.write(Buffer.from('escaped\n'));
          await w.close(0o644, '0', null, path);
        } else {
          await w.mkdir(path);
        }
        await expect(w.finish()).rejects.toThrow(/^refusing to stage ".*": it resolves outside the staging directory$/);
        // Only what was legitimately made: the staging directory and its `inside`.
        expect(await readdir(join(base, name))).toEqual(['dest']);
        expect(await readdir(join(base, name, 'dest'))).toEqual(['.backupctl-restore-x']);
        expect(await readdir(staging)).toEqual(['inside']);
        expect(await readdir(base)).not.toContain('y');
        await expect(readFile('/tmp/backupctl-staging-outside-abs')).rejects.toThrow(/ENOENT/);
      });
    }
  }

  it('control: a path inside is written', async () => {
    const staging = await stagingIn('control');
    const w = new StagingWriter(staging);
    await w.mkdir('a/b');
    await w.open('a/b/f.txt', true);
    await w.write(Buffer.from('hello\n'));
    const { createHash } = await import('node:crypto');
    await w.close(0o640, '-14182939.87654321', createHash('sha256').update('hello\n').digest(), 'a/b/f.txt');
    await w.finish();
    expect(await readFile(join(staging, 'a/b/f.txt'), 'utf8')).toBe('hello\n');
    const st = await lstat(join(staging, 'a/b/f.txt'), { bigint: true });
    expect(st.mode & 0o7777n).toBe(0o640n);
    expect(st.mtimeNs).toBe(-14182939876543210n); // 1969: given as a numeric string, not turned into now
  });
});
