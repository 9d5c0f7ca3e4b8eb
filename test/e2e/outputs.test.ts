// Output files through the built CLI: a missing output directory is refused by every command that
// writes one (never created: the backup of an unmounted disk must not land on the local one), and
// the leftovers of killed creates are removed by the next create into the directory and reported
// by doctor, while files that may still be in use are never touched.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STACK_TRACE, exists, onlyJson, runCli, startCli } from '../support/cli.js';
import { archiveHome } from '../support/home.js';
import { HOST_TAG } from '../../src/util/owner.js';

const fx = archiveHome('backupctl-outputs-e2e-');
const cli = (args: string[]) => runCli(args, { configDir: fx.configDir, timeoutMs: 60_000 });

describe('a missing output directory is refused, never created', () => {
  it('create, migrate, rotate -o, pull -o, recovery-code new/rotate --output: exit 6 naming the directory', async () => {
    const missing = join(fx.home, 'usb-disk', 'backups');
    const config = await readFile(join(fx.configDir, 'config.json'));
    const cases: Array<[string[], string]> = [
      [['create', fx.src, '-o', join(missing, 'a.bkp')], 'a.bkp'],
      [['create', fx.src, '-o', join(missing, 'a.bkp'), '--force'], 'a.bkp'],
      [['migrate-from-64-digit-key', join(fx.home, 'nowhere.crypt15'), '-o', join(missing, 'm.bkp')], 'm.bkp'],
      [['rotate', fx.archive, '--rekey', '-o', join(missing, 'r.bkp'), '--recovery-code-file', fx.rc.file], 'r.bkp'],
      [['pull', 'a.bkp', '-o', join(missing, 'p.bkp')], 'p.bkp'],
      [['recovery-code', 'new', '--output', join(missing, 'code.txt')], 'code.txt'],
      [['recovery-code', 'rotate', '--output', join(missing, 'code.txt')], 'code.txt'],
    ];
    for (const [args, name] of cases) {
      const r = await cli(args);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(6);
      expect(r.stderr).toBe(`backupctl: cannot write ${join(missing, name)}: the directory ${missing} does not exist (is the disk mounted?)\n`);
      expect(r.stdout).toBe('');
      expect(await exists(join(fx.home, 'usb-disk')), args.join(' ')).toBe(false);
    }
    expect((await readFile(join(fx.configDir, 'config.json'))).equals(config)).toBe(true);
  });

  it('an output "directory" that is a file: exit 6', async () => {
    const r = await cli(['create', fx.src, '-o', join(fx.archive, 'x.bkp')]);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toBe(`backupctl: cannot write ${join(fx.archive, 'x.bkp')}: ${fx.archive} is not a directory\n`);
  });
});

/** The temporary file of a create writing into `dir`, once it holds more than `min` bytes. */
async function tempIn(dir: string, min: number): Promise<string | null> {
  for (const n of await readdir(dir)) {
    if (!n.includes('.backupctl-tmp-')) continue;
    if (((await stat(join(dir, n)).catch(() => null))?.size ?? 0) > min) return n;
  }
  return null;
}

describe('leftovers of killed creates', () => {
  it('a SIGKILLed create leaves its temporary file; doctor reports it with its size; the next create of another name removes it', async () => {
    const big = join(fx.home, 'big');
    await mkdir(big);
    await writeFile(join(big, 'video.mp4'), randomBytes(24 << 20));
    const dir = join(fx.home, 'killed');
    await mkdir(dir);
    const p = startCli(['create', big, '-o', join(dir, 'monday.bkp')], { configDir: fx.configDir });
    let tmp: string | null = null;
    while (!(tmp = await tempIn(dir, 2 << 20))) await new Promise((r) => setTimeout(r, 2));
    p.kill('SIGKILL');
    await p.catch(() => {});
    const size = (await stat(join(dir, tmp))).size;
    expect(size).toBeGreaterThan(2 << 20);

    // Files that must stay: another host's, a live process's (this test's pid, written after it
    // started), an older version's name without a host tag, and a file that only looks similar.
    const keep = [
      `.x.bkp.backupctl-tmp-${p.pid}-${HOST_TAG === '00000000' ? '11111111' : '00000000'}-0badf00d`,
      `.y.bkp.backupctl-tmp-${process.pid}-${HOST_TAG}-0badf00d`,
      `.z.bkp.backupctl-tmp-${p.pid}-0badf00d`,
      'notes.backupctl-tmp.txt',
    ];
    for (const n of keep) await writeFile(join(dir, n), 'x');
    // This test's own pid on a file last written before this process started: a reused pid.
    const reused = `.old.bkp.backupctl-tmp-${process.pid}-${HOST_TAG}-0badf00d`;
    await writeFile(join(dir, reused), 'y');
    const longAgo = new Date(Date.now() - 3 * 24 * 3600 * 1000); // before this test process started
    await utimes(join(dir, reused), longAgo, longAgo);

    const d = onlyJson<{ leftovers: Array<{ path: string; size: number }>; problems: Array<{ problem: string }> }>(await cli(['doctor', '--json', '--dir', dir]));
    expect(d.leftovers.sort((a, b) => a.path.localeCompare(b.path))).toEqual(
      [{ path: join(dir, tmp), size }, { path: join(dir, reused), size: 1 }].sort((a, b) => a.path.localeCompare(b.path)),
    );
    const human = await cli(['doctor', '--dir', dir]);
    expect(human.stdout).toContain(`left by a killed backupctl run: ${join(dir, tmp)} (${(size / 1e6).toFixed(1)} MB)`);

    const r = await cli(['create', fx.src, '-o', join(dir, 'tuesday.bkp')]);
    expect(r.exitCode, r.stderr).toBe(0);
    // The killed run's lock stays until a run for that name takes it over (it is a few bytes).
    expect((await readdir(dir)).sort()).toEqual([...keep, 'tuesday.bkp', 'monday.bkp.lock'].sort());
    expect(onlyJson<{ leftovers: unknown[] }>(await cli(['doctor', '--json', '--dir', dir])).leftovers).toEqual([]);
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });
});
