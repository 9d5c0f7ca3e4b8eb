// Interruption and locking through the built CLI, on a 200 MB export (big enough that a run is
// still going when the test signals it): an interrupted create leaves no file under the final name
// and no temp file, a killed one leaves a temp file the next run removes, an interrupted restore
// leaves DIR as it was, and two creates of one archive at once are refused with exit 9.
import { beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO, STACK_TRACE, exists, onlyJson, runCli, snapshot, startCli } from '../support/cli.js';
import { archiveHome } from '../support/home.js';

const fx = archiveHome('backupctl-core-int-', { archive: false });
let big: string;
/** An archive of `big`, for restore interruption. */
let bigArchive: string;

const cli = (args: string[]) => runCli(args, { configDir: fx.configDir });
const code = () => ['--recovery-code-file', fx.rc.file];

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

/** The restore staging directory inside `dest`, once it holds `minEntries` entries. */
const stagingOf = (dest: string, minEntries: number) => async () => {
  const name = (await readdir(dest).catch(() => [] as string[])).find((n) => n.startsWith('.backupctl-restore-'));
  if (!name) return null;
  const n = await readdir(join(dest, name), { recursive: true }).then((l) => l.length, () => 0);
  return n >= minEntries ? name : null;
};

beforeAll(async () => {
  big = join(fx.home, 'big');
  await execa(process.execPath, [join(REPO, 'fixtures/generate-export.mjs'), '--profile', 'bench', '--size', '200M', '--out', big]);
  bigArchive = join(fx.home, 'big.bkp');
  const r = await runCli(['create', big, '-o', bigArchive], { configDir: fx.configDir, timeoutMs: 60_000 });
  expect(r.exitCode, r.stderr).toBe(0);
});

describe('interrupted create leaves nothing behind', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} mid-way: exit 130, no file under the final name, no temp file, no lock`, async () => {
      const dir = join(fx.home, `int-${signal}`);
      await mkdir(dir);
      const out = join(dir, 'big.bkp');
      const p = startCli(['create', big, '-o', out], { configDir: fx.configDir });
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
    const dir = join(fx.home, 'killed');
    await mkdir(dir);
    const out = join(dir, 'big.bkp');
    const p = startCli(['create', big, '-o', out], { configDir: fx.configDir });
    const tmp = await waitFor(tempOf(out, MID_WAY), 'the temporary file to grow');
    p.kill('SIGKILL');
    await p;
    // What a killed run leaves: its temp file and lock, never a file under the final name.
    expect((await readdir(dir)).sort()).toEqual([tmp, 'big.bkp.lock'].sort());

    const r = await cli(['create', fx.src, '-o', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await readdir(dir)).toEqual(['big.bkp']);
    expect((await cli(['verify', out, ...code()])).exitCode).toBe(0);
  });
});

describe('two creates to the same output at once', () => {
  it('the second gets exit 9 (locked) and the first completes', async () => {
    const dir = join(fx.home, 'twice');
    await mkdir(dir);
    const out = join(dir, 'big.bkp');
    const first = startCli(['create', big, '-o', out], { configDir: fx.configDir });
    await waitFor(tempOf(out), 'the first run to start writing');
    const second = await cli(['create', fx.src, '-o', out]);
    expect(second.exitCode).toBe(9);
    expect(second.stderr).toMatch(/^backupctl: .*in use by another backupctl run \(pid \d+\); try again/);
    const r = await first;
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await readdir(dir)).toEqual(['big.bkp']);
    const v = await runCli(['verify', '--json', out, ...code()], { configDir: fx.configDir, timeoutMs: 60_000 });
    expect(onlyJson(v)).toMatchObject({ ok: true, files: expect.any(Number) });
    await rm(out);
  });
});

describe('interrupted restore leaves DIR as it was', () => {
  // --salvage stages content under other names and moves it at the end: the same promise.
  for (const [signal, how, salvage] of [['SIGINT', 'file', []], ['SIGTERM', 'stdin', []], ['SIGINT', 'file', ['--salvage']], ['SIGTERM', 'stdin', ['--salvage']]] as const) {
    it(`${signal} mid-way (${how}${salvage.length ? ', --salvage' : ''}): exit 130; a DIR with content is unchanged, a new DIR is gone`, async () => {
      const used = join(fx.home, `rint-used-${signal}${salvage.length ? '-salvage' : ''}`);
      await mkdir(join(used, 'Media'), { recursive: true });
      await writeFile(join(used, 'Media', 'mine.txt'), 'mine\n');
      const before = await snapshot(used);
      const fresh = join(fx.home, `rint-new-${signal}${salvage.length ? '-salvage' : ''}`);
      for (const dest of [used, fresh]) {
        const p = how === 'file'
          ? startCli(['restore', ...salvage, bigArchive, '-d', dest, ...code()], { configDir: fx.configDir })
          : startCli(['restore', ...salvage, '-', '-d', dest, ...code()], { configDir: fx.configDir, inputFile: bigArchive });
        await waitFor(stagingOf(dest, 50), 'the restore to be well under way');
        p.kill(signal);
        const r = await p;
        expect(r.exitCode, String(r.stderr)).toBe(130);
        expect(String(r.stderr)).toMatch(/^backupctl: interrupted/m);
        expect(String(r.stderr)).not.toMatch(STACK_TRACE);
      }
      expect(await snapshot(used)).toEqual(before);
      expect(await exists(fresh)).toBe(false);
    });
  }
});
