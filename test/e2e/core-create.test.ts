// `backupctl create` refusals and partial success through the built CLI: existing output, missing
// input, no recipients, special files. Interruption and locking are in core-interrupt.test.ts.
import { describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { appendFileSync } from 'node:fs';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STACK_TRACE, exists, makeExportTree, makeHome, onlyJson, runCli, snapshot, startCli } from '../support/cli.js';
import { archiveHome } from '../support/home.js';

const fx = archiveHome('backupctl-core-create-', { archive: false });

const cli = (args: string[]) => runCli(args, { configDir: fx.configDir });
const code = () => ['--recovery-code-file', fx.rc.file];

describe('create: refusals and partial success', () => {
  it('an existing output: exit 6 without --force (file untouched); --force replaces it', async () => {
    const out = join(fx.home, 'exists.bkp');
    await writeFile(out, 'precious');
    const r = await cli(['create', fx.src, '-o', out]);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/^backupctl: .*already exists; use --force/);
    expect(await readFile(out, 'utf8')).toBe('precious');

    const f = await cli(['create', fx.src, '-o', out, '--force']);
    expect(f.exitCode, f.stderr).toBe(0);
    expect((await cli(['verify', out, ...code()])).exitCode).toBe(0);
    expect((await readdir(fx.home)).filter((n) => n.includes('backupctl-tmp') || n.endsWith('.lock'))).toEqual([]);
  });

  it('a missing DIR: exit 6, no output', async () => {
    const out = join(fx.home, 'missing.bkp');
    const r = await cli(['create', join(fx.home, 'no-such-export'), '-o', out]);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/^backupctl: cannot read .*no-such-export: no such file or directory\n$/);
    expect(await exists(out)).toBe(false);
  });

  it('no recipients: exit 2 saying how to add one, no output', async () => {
    const bare = await makeHome('backupctl-core-create-bare-');
    try {
      const out = join(fx.home, 'norecip.bkp');
      const r = await runCli(['create', fx.src, '-o', out], { configDir: bare.configDir });
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toMatch(/^backupctl: no recipients to encrypt to: run `backupctl recovery-code new`/);
      expect(await exists(out)).toBe(false);
    } finally {
      await bare.cleanup();
    }
  });

  it('an archive written inside DIR leaves out its own temp file, lock and previous version', async () => {
    const tree = join(fx.home, 'self');
    await makeExportTree(tree);
    const want = Object.keys(await snapshot(tree)).sort();
    const list = async () => onlyJson<{ entries: Array<{ path: string }> }>(await cli(['inspect', '--json', '--list', join(tree, 'Media', 'me.bkp'), ...code()])).entries.map((e) => e.path).sort();
    // From inside DIR, with relative paths, the way a user in the export directory types it.
    const first = await runCli(['create', '..', '-o', 'me.bkp'], { configDir: fx.configDir, cwd: join(tree, 'Media') });
    expect(first.exitCode, first.stderr).toBe(0);
    expect(await list()).toEqual(want);
    const again = await runCli(['create', tree, '-o', join(tree, 'Media', 'me.bkp'), '--force'], { configDir: fx.configDir });
    expect(again.exitCode, again.stderr).toBe(0);
    expect(await list()).toEqual(want);
  });

  it('a file that grows while it is read is stored as read, flagged, and the run exits 3', async () => {
    const tree = join(fx.home, 'growing');
    await mkdir(tree);
    const log = join(tree, 'live.log');
    await writeFile(log, Buffer.alloc(48 << 20, 'x')); // reading it takes long enough to see appends
    const out = join(fx.home, 'growing.bkp');
    const run = startCli(['create', '--json', tree, '-o', out], { configDir: fx.configDir });
    const appender = setInterval(() => appendFileSync(log, 'more\n'), 1);
    const r = await run.finally(() => clearInterval(appender));
    expect(r.exitCode, String(r.stderr)).toBe(3);
    expect(onlyJson({ stdout: String(r.stdout) })).toMatchObject({ ok: true, changedWhileRead: 1, warnings: [expect.stringMatching(/live\.log changed while it was being read/)] });
    const list = onlyJson<{ entries: Array<{ path: string; changedWhileRead?: boolean }> }>(await cli(['inspect', '--json', '--list', out, ...code()]));
    expect(list.entries).toEqual([expect.objectContaining({ path: 'live.log', changedWhileRead: true })]);
    const v = await cli(['verify', out, ...code()]);
    expect(v.exitCode, v.stderr).toBe(0); // what was read is intact; the flag is a note, not damage
    expect(v.stderr).toMatch(/note: live\.log changed while it was being backed up/);
  });

  it('a special file (FIFO) is skipped with a warning: exit 3, and the archive is valid', async () => {
    const tree = join(fx.home, 'with-fifo');
    await makeExportTree(tree);
    await execa('mkfifo', [join(tree, 'Media', 'a-fifo')]);
    const out = join(fx.home, 'fifo.bkp');
    const r = await cli(['create', tree, '-o', out]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/^backupctl: warning: skipped .*a-fifo: not a regular file, directory or symbolic link$/m);
    expect(r.stderr).toMatch(/Done, but 1 skipped/);
    expect(r.stderr).not.toMatch(STACK_TRACE);

    const j = onlyJson<{ ok: boolean; skipped: number; warnings: string[] }>(await cli(['create', '--json', tree, '-o', join(fx.home, 'fifo2.bkp')]));
    expect(j).toMatchObject({ ok: true, skipped: 1, warnings: [expect.stringContaining('a-fifo')] });

    expect((await cli(['verify', out, ...code()])).exitCode).toBe(0);
    const dest = join(fx.home, 'fifo-out');
    expect((await cli(['restore', out, '-d', dest, ...code()])).exitCode).toBe(0);
    const want = await snapshot(tree);
    delete want['Media/a-fifo'];
    const got = await snapshot(dest);
    delete want['Media'];
    delete got['Media']; // its mtime changed when the FIFO was made
    expect(got).toEqual(want);
  });
});


describe('create: file names, and restore into a path that does not exist yet', () => {
  it('a name that is not UTF-8 is skipped (exit 3); a name really containing U+FFFD is kept', async () => {
    const dir = join(fx.home, 'names');
    await mkdir(dir);
    const { writeFileSync } = await import('node:fs');
    writeFileSync(Buffer.concat([Buffer.from(dir + '/bad-'), Buffer.from([0xff, 0xfe]), Buffer.from('.txt')]), 'latin-1 name');
    await writeFile(join(dir, 'replacement-\uFFFD.txt'), 'a real U+FFFD');
    const out = join(fx.home, 'names.bkp');
    const r = await cli(['create', dir, '-o', out]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/skipped .*bad-.*: its name is not valid UTF-8/);
    const target = join(fx.home, 'not', 'yet', 'there');
    const x = await cli(['restore', out, '-d', target, ...code()]);
    expect(x.exitCode, x.stderr).toBe(0);
    expect(await readdir(target)).toEqual(['replacement-\uFFFD.txt']);
  });

  it('a failed restore into a missing a/b/c removes all it created', async () => {
    const target = join(fx.home, 'gone', 'deeper', 'dir');
    const r = await cli(['restore', join(fx.home, 'no-such.bkp'), '-d', target, ...code()]);
    expect(r.exitCode).toBe(6);
    const bad = join(fx.home, 'bad.bkp');
    await writeFile(bad, Buffer.concat([await readFile(join(fx.home, 'names.bkp')), Buffer.from('garbage')]));
    const t = await cli(['restore', bad, '-d', target, ...code()]);
    expect(t.exitCode).toBe(5);
    expect(await exists(join(fx.home, 'gone'))).toBe(false);
  });
});
