// `backupctl create` failure modes through the built CLI: existing output, special files, missing
// input, no recipients, interruption (SIGINT/SIGTERM/SIGKILL) on a 200 MB export, and two runs
// writing the same archive at once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO, STACK_TRACE, exists, makeExportTree, makeHome, newRecoveryCode, onlyJson, runCli, snapshot, startCli, type RecoveryCode } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;
/** A 200 MB export: big enough that a create is still running when the test signals it. */
let big: string;

const cli = (args: string[]) => runCli(args, { configDir });
const code = () => ['--recovery-code-file', rc.file];

async function waitFor<T>(probe: () => Promise<T | null | undefined | false>, what: string, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** The temporary file a running create writes beside `out`, once it holds `minBytes`. */
const tempOf = (out: string, minBytes = 0) => async () => {
  const dir = join(out, '..');
  const base = out.slice(dir.length + 1);
  const name = (await readdir(dir)).find((n) => n.startsWith(`.${base}.backupctl-tmp-`));
  if (!name) return null;
  const size = await stat(join(dir, name)).then((s) => s.size, () => -1);
  return size >= minBytes ? name : null;
};
/** Well into the payload of the 200 MB export. */
const MID_WAY = 16 << 20;

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-core-create-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  src = join(home, 'export');
  await makeExportTree(src);
  big = join(home, 'big');
  await execa(process.execPath, [join(REPO, 'fixtures/generate-export.mjs'), '--profile', 'bench', '--size', '200M', '--out', big]);
});
afterAll(() => cleanup());

describe('create refuses clearly', () => {
  it('an existing output: exit 6 without --force (file untouched); --force replaces it', async () => {
    const out = join(home, 'exists.bkp');
    await writeFile(out, 'precious');
    const r = await cli(['create', src, '-o', out]);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/^backupctl: .*already exists; use --force/);
    expect(await readFile(out, 'utf8')).toBe('precious');

    const f = await cli(['create', src, '-o', out, '--force']);
    expect(f.exitCode, f.stderr).toBe(0);
    expect((await cli(['verify', out, ...code()])).exitCode).toBe(0);
    expect((await readdir(home)).filter((n) => n.includes('backupctl-tmp') || n.endsWith('.lock'))).toEqual([]);
  });

  it('a missing DIR: exit 6, no output', async () => {
    const out = join(home, 'missing.bkp');
    const r = await cli(['create', join(home, 'no-such-export'), '-o', out]);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/^backupctl: cannot read .*no-such-export: no such file or directory\n$/);
    expect(await exists(out)).toBe(false);
  });

  it('no recipients: exit 2 saying how to add one, no output', async () => {
    const bare = await makeHome('backupctl-core-create-bare-');
    try {
      const out = join(home, 'norecip.bkp');
      const r = await runCli(['create', src, '-o', out], { configDir: bare.configDir });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^backupctl: no recipients to encrypt to: run `backupctl recovery-code new`/);
      expect(await exists(out)).toBe(false);
    } finally {
      await bare.cleanup();
    }
  });

  it('a special file (FIFO) is skipped with a warning: exit 3, and the archive is valid', async () => {
    const tree = join(home, 'with-fifo');
    await makeExportTree(tree);
    await execa('mkfifo', [join(tree, 'Media', 'a-fifo')]);
    const out = join(home, 'fifo.bkp');
    const r = await cli(['create', tree, '-o', out]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/^backupctl: warning: skipped .*a-fifo: not a regular file, directory or symbolic link$/m);
    expect(r.stderr).toMatch(/Done, but 1 skipped/);
    expect(r.stderr).not.toMatch(STACK_TRACE);

    const j = onlyJson<{ ok: boolean; skipped: number; warnings: string[] }>(await cli(['create', '--json', tree, '-o', join(home, 'fifo2.bkp')]));
    expect(j).toMatchObject({ ok: true, skipped: 1, warnings: [expect.stringContaining('a-fifo')] });

    expect((await cli(['verify', out, ...code()])).exitCode).toBe(0);
    const dest = join(home, 'fifo-out');
    expect((await cli(['restore', out, '-d', dest, ...code()])).exitCode).toBe(0);
    const want = await snapshot(tree);
    delete want['Media/a-fifo'];
    const got = await snapshot(dest);
    delete want['Media'];
    delete got['Media']; // its mtime changed when the FIFO was made
    expect(got).toEqual(want);
  });
});

describe('interrupted create leaves nothing behind', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} mid-way: exit 130, no file under the final name, no temp file, no lock`, async () => {
      const dir = join(home, `int-${signal}`);
      await mkdir(dir);
      const out = join(dir, 'big.bkp');
      const p = startCli(['create', big, '-o', out], { configDir });
      await waitFor(tempOf(out, MID_WAY), 'the temporary file to grow');
      p.kill(signal);
      const r = await p;
      expect(r.exitCode, String(r.stderr)).toBe(130);
      expect(String(r.stderr)).toMatch(/^backupctl: interrupted/m);
      expect(String(r.stderr)).not.toMatch(STACK_TRACE);
      expect(await readdir(dir)).toEqual([]);
    });
  }

  it('a stale temp file (and lock) from a SIGKILLed run are cleaned up by the next create', async () => {
    const dir = join(home, 'killed');
    await mkdir(dir);
    const out = join(dir, 'big.bkp');
    const p = startCli(['create', big, '-o', out], { configDir });
    const tmp = await waitFor(tempOf(out, MID_WAY), 'the temporary file to grow');
    p.kill('SIGKILL');
    await p;
    // What a killed run leaves: its temp file and lock, never a file under the final name.
    expect((await readdir(dir)).sort()).toEqual([tmp, 'big.bkp.lock'].sort());

    const r = await cli(['create', src, '-o', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readdir(dir)).toEqual(['big.bkp']);
    expect((await cli(['verify', out, ...code()])).exitCode).toBe(0);
  });
});

describe('two creates to the same output at once', () => {
  it('the second gets exit 9 (locked) and the first completes', async () => {
    const dir = join(home, 'twice');
    await mkdir(dir);
    const out = join(dir, 'big.bkp');
    const first = startCli(['create', big, '-o', out], { configDir });
    await waitFor(tempOf(out), 'the first run to start writing');
    const second = await cli(['create', src, '-o', out]);
    expect(second.exitCode).toBe(9);
    expect(second.stderr).toMatch(/^backupctl: .*in use by another backupctl run \(pid \d+\); try again/);
    const r = await first;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await readdir(dir)).toEqual(['big.bkp']);
    const v = await runCli(['verify', '--json', out, ...code()], { configDir, timeoutMs: 60_000 });
    expect(onlyJson(v)).toMatchObject({ ok: true, files: expect.any(Number) });
    await rm(out);
  });
});
