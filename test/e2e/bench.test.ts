// The benchmark path, small and fast (issues 3, 13 and 14): the harness runs every operation on a
// tiny generated export, and the nightly repository scenario (backupctl only: restic and borg take
// 0.5 s a command for their key derivation), locally and, for one night, on the Drive fake, and
// reports what `npm run bench` reports; the round trips through the built CLI must give the
// export back byte for byte. Times are never asserted: only structure, byte and call counts.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateExport, generateNight } from '../../fixtures/generate-export.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** Relative path → sha256 of every file, and '/'-suffixed entries for every folder. */
async function tree(dir: string, rel = '', out = new Map<string, string>()): Promise<Map<string, string>> {
  for (const d of await readdir(path.join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) {
      out.set(`${r}/`, 'dir');
      await tree(dir, r, out);
    } else {
      out.set(r, createHash('sha256').update(await readFile(path.join(dir, r))).digest('hex'));
    }
  }
  return out;
}

async function du(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += (await stat(path.join(e.parentPath, e.name))).size;
  return n;
}

const hasAge = (await execa('sh', ['-c', 'command -v age && command -v age-keygen'], { reject: false })).exitCode === 0;

describe('npm run bench (tiny run)', () => {
  let tmp: string;
  let data: string;
  let stdout: string;
  let report: any;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(tmpdir(), 'backupctl-bench-'));
    data = path.join(tmp, 'data');
    const r = await execa(
      process.execPath,
      ['test/bench/run.mjs', '--size', '3M', '--runs', '1', '--entries', '300', '--startup-runs', '1',
        '--nightly', '3M', '--nights', '2', '--drive-nights', '1', '--tools', 'backupctl', '--data', data, '--json', path.join(tmp, 'bench.json'), '--keep', '--no-install'],
      { cwd: root, reject: false },
    );
    if (r.exitCode !== 0) throw new Error(`bench harness failed (exit ${r.exitCode}):\n${r.stderr}\n${r.stdout}`);
    stdout = r.stdout;
    report = JSON.parse(await readFile(path.join(tmp, 'bench.json'), 'utf8'));
  }, 60_000);
  afterAll(async () => {
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('times every operation in every run and derives MB/s from the export size', () => {
    expect(report.runs).toBe(1);
    const [size] = report.sizes;
    expect(size.size).toBe('3M');
    expect(size.bytes).toBeGreaterThan(2_900_000);
    const expected = ['create', 'restore', 'verify', 'tar | cat', 'cat archive; sync', 'tar -x', ...(hasAge ? ['tar | age', 'tar | age; sync', 'age -d | tar -x'] : [])];
    expect(Object.keys(size.ops).sort()).toEqual(expected.sort());
    for (const op of Object.values<any>(size.ops)) {
      expect(op.secs).toHaveLength(1);
      expect(op.median).toBeGreaterThan(0);
      expect(op.min).toBeLessThanOrEqual(op.median);
      expect(op.max).toBeGreaterThanOrEqual(op.median);
      expect(op.mbps).toBeCloseTo(size.bytes / op.median / 1e6, 6);
    }
    if (!report.skipped.includes('rss')) expect(size.ops.create.peakRss).toBeGreaterThan(10_000_000);
  });

  it('reports the ratios the issue sets targets for, per run side by side', () => {
    const ratios = report.sizes[0].ratios.map((r: any) => `${r.op} vs ${r.vs} >= ${r.target}`);
    expect(ratios).toEqual([
      ...(hasAge ? ['create vs tar | age >= 1', 'create vs tar | age; sync >= null'] : []),
      'create vs cat archive; sync >= null',
      ...(hasAge ? ['restore vs age -d | tar -x >= 1.5'] : []),
      'restore vs tar -x >= null',
      'verify vs create >= 1',
    ]);
    const verify = report.sizes[0].ratios.at(-1);
    const ops = report.sizes[0].ops;
    const perRun = ops.create.secs.map((c: number, i: number) => c / ops.verify.secs[i]);
    expect(verify.min).toBeCloseTo(Math.min(...perRun), 9);
    expect(verify.max).toBeCloseTo(Math.max(...perRun), 9);
    expect(report.skipped.includes('age')).toBe(!hasAge);
  });

  it('prints the table, the ratios, startup and index memory', () => {
    for (const row of ['create', 'restore', 'verify', 'tar | cat', 'verify vs create', 'backupctl --version', 'backupctl inspect (small archive)', 'index memory']) {
      expect(stdout).toContain(row);
    }
    expect(stdout).toMatch(/round trip: byte-identical/);
    expect(Object.keys(report.startup)).toEqual(['node -e 0', 'backupctl --version', 'backupctl inspect (small archive)']);
    expect(report.entries.many.files).toBe(301); // 300 stickers and the chat log
  });

  it('runs the nightly scenario: the bytes each night adds and stores, the repository on disk, an identical restore', async () => {
    const n = report.nightly;
    expect([n.size, n.nights, Object.keys(n.tools)]).toEqual(['3M', 2, ['backupctl']]);
    // The nights replayed here from the same export give the same new bytes (the generator is
    // deterministic), and those are what the tree grew by.
    const replay = path.join(tmp, 'replay');
    await cp(path.join(data, 'export-3M'), replay, { recursive: true });
    const media: number[] = [];
    for (const night of [1, 2]) {
      const before = await du(replay);
      const r = await generateNight({ out: replay, night, ...n.night });
      expect(r.newBytes).toBe(n.newBytes[night - 1]);
      expect((await du(replay)) - before).toBe(r.newBytes);
      media.push((await Promise.all(r.files.map((f: string) => stat(path.join(replay, f))))).reduce((s, x) => s + x.size, 0));
    }
    const b = n.tools.backupctl;
    expect(b.first.stored).toBeGreaterThan(0.5 * n.bytes);
    expect(b.unchanged.stored).toBeLessThan(b.first.stored / 100);
    expect(b.nights).toHaveLength(2);
    // New media are random bytes: a night stores at least them (and its log growth).
    b.nights.forEach((m: any, i: number) => expect(m.stored).toBeGreaterThanOrEqual(media[i]));
    expect(b.repoBytes).toBe(await du(path.join(data, 'nightly/repo-backupctl')));
    expect(b.restore).toMatchObject({ identical: true, differences: [] });
    expect(n.identical).toBe(true);
    for (const s of [b.first, b.unchanged, ...b.nights, b.restore, n.create]) expect(s.secs).toBeGreaterThan(0);
    expect(n.manyFiles.files).toBe(301);
    expect(Object.keys(n.manyFiles.tools)).toEqual(['backupctl']);
    if (!report.skipped.includes('rss')) expect(n.manyFiles.tools.backupctl.first.peakRss).toBeGreaterThan(10_000_000);
    // Targets: what compares with restic or borg is not measured without them.
    expect(n.targets.map((t: any) => [t.id, t.met === null])).toEqual([
      ['first', false], ['unchanged', true], ['unchanged-stored', false], ['night', true], ['night-stored', false],
      ['restore', true], ['repository', true], ['history-rss', report.skipped.includes('rss')], ['many-rss', report.skipped.includes('rss')],
    ]);
    expect(n.targets.find((t: any) => t.id === 'night-stored').limit).toBe(Math.round(1.1 * n.newBytes[0] + 1e6));
  });

  it('prints the nightly tables with every row and a verdict for every target', () => {
    const section = stdout.slice(stdout.indexOf('nightly scenario'), stdout.indexOf('nightly on Drive'));
    for (const row of ['first backup', 'nothing changed', '1% night', 'night 2', 'repository after 2 nights', 'restore latest', 'byte-identical', '301 files']) {
      expect(section).toContain(row);
    }
    expect(section.match(/: (met|MISSED|not measured)$/gm)).toHaveLength(report.nightly.targets.length + 1); // many-rss on two rows
    expect(section).toMatch(/< borg: not measured/);
  });

  it('runs the nightly scenario on the Drive fake: calls, files created and bytes moved per run, within the issue\'s bounds', async () => {
    const n = report.nightly;
    const d = n.drive;
    expect(d.nights).toHaveLength(1);
    expect(d.nights[0].newBytes).toBe(n.newBytes[0]); // the same night as the local repository's
    // The export is mostly random media: the first backup sends about all of it, and no backup downloads.
    expect(d.first.up).toBeGreaterThan(0.5 * n.bytes);
    for (const m of [d.first, d.unchanged, ...d.nights]) expect(m.down).toBe(0);
    expect(d.unchanged.calls).toBeLessThanOrEqual(5);
    expect(d.unchanged.created).toBeLessThanOrEqual(1);
    expect(d.nights[0].calls).toBeLessThanOrEqual(15);
    expect(d.nights[0].created).toBeLessThanOrEqual(5);
    expect(d.nights[0].up).toBeLessThanOrEqual(1.1 * d.nights[0].newBytes + 1e6);
    // The one file restored is the export's largest (the nights add only smaller ones), read whole and little else.
    const sizes = await Promise.all((await readdir(path.join(data, 'export-3M'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map(async (e) => (await stat(path.join(e.parentPath, e.name))).size));
    const o = d.restoreOne;
    expect(o.fileBytes).toBe(Math.max(...sizes));
    expect(o).toMatchObject({ identical: true, created: 0, up: 0 });
    expect(o.down).toBeGreaterThanOrEqual(o.fileBytes);
    expect(o.down).toBeLessThanOrEqual(o.fileBytes + 2e6);
    expect(d.targets.map((t: any) => [t.id, t.run, t.met])).toEqual([
      ['unchanged-calls', 'unchanged', true], ['night-calls', 'night-1', true], ['night-files', 'night-1', true], ['night-up', 'night-1', true], ['restore-one', 'restore-one', true],
    ]);
    const section = stdout.slice(stdout.indexOf('nightly on Drive'));
    for (const row of ['repo init', 'first backup', 'nothing changed', 'night 1 (', 'restore of one file', 'byte-identical']) expect(section).toContain(row);
    expect(section.match(/: met$/gm)).toHaveLength(3); // nothing changed, night 1, the restore
  });

  it('restores the export byte for byte, with every folder (checked here, not trusted from the report)', async () => {
    expect(report.sizes[0].roundTrip).toEqual({ identical: true, differences: [] });
    const source = await tree(path.join(data, 'export-3M'));
    // Every run restores into a tree of its own when the disk has room for them all.
    const work = path.join(data, 'work-3M');
    const restored = await tree(path.join(work, existsSync(path.join(work, 'restored-1')) ? 'restored-1' : 'restored'));
    expect(source.size).toBeGreaterThan(10);
    expect([...source.keys()].some((k) => k.endsWith('/') && ![...source.keys()].some((o) => o !== k && o.startsWith(k)))).toBe(true); // an empty folder
    expect(restored).toEqual(source);
  });
});

describe('the bench scripts\' command lines', () => {
  const scripts = {
    'run.mjs': ['--size', '--runs', '--json', '--entries', '--startup-runs', '--nightly', '--nights', '--tools', '--drive-nights', '--data', '--keep', '--no-install'],
    'nightly.mjs': ['--size', '--nights', '--entries', '--drive-nights', '--tools', '--json', '--data', '--keep', '--no-install'],
  };
  const bench = (script: string, ...args: string[]) => execa(process.execPath, [`test/bench/${script}`, ...args], { cwd: root, reject: false });

  for (const [script, options] of Object.entries(scripts)) {
    it(`${script} --help prints its usage with every option and exits 0`, async () => {
      for (const help of ['--help', '-h']) {
        const r = await bench(script, help);
        expect([r.exitCode, r.stderr]).toEqual([0, '']);
        expect(r.stdout.split('\n')[0]).toMatch(new RegExp(`^usage: node test/bench/${script.replace('.', '\\.')} `));
        for (const o of options) expect(r.stdout).toContain(o);
      }
    });

    it(`${script} says in one line what is wrong with its command line and exits 2, without a stack trace`, async () => {
      for (const [args, line] of [
        [['--bogus'], "Unknown option '--bogus'"],
        [['--nights'], "Option '--nights <value>' argument missing"],
        [['stray'], "Unexpected argument 'stray'"],
      ] as const) {
        const r = await bench(script, ...args);
        expect([r.exitCode, r.stdout, r.stderr]).toEqual([2, '', `${script}: ${line} (see --help)`]);
      }
    });
  }
});

describe('fixtures/generate-export.mjs', () => {
  it('regenerates the committed sample export byte for byte (git keeps no empty folders)', async () => {
    const out = await mkdtemp(path.join(tmpdir(), 'backupctl-sample-'));
    try {
      await generateExport({ profile: 'sample', out });
      const generated = await tree(out);
      const committed = await tree(path.join(root, 'fixtures/sample-export'));
      expect(generated.get('Media/WhatsApp Stickers/')).toBe('dir'); // the empty folder
      for (const t of [generated, committed]) t.delete('Media/WhatsApp Stickers/');
      expect(committed).toEqual(generated);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
