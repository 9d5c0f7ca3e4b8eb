#!/usr/bin/env node
// `npm run bench` (issues 3 and 13): times backupctl create / restore / verify against what people
// would otherwise run (`tar | age`, `age -d | tar -x`), side by side and alternating, on a
// generated export; reports median speed ratios with min and max (machines are noisy: only ratios
// taken in one run mean something), MB/s, peak RSS, startup time, and index memory per entry; then
// the nightly repository scenario beside restic and borg (test/bench/nightly.mjs).
//
//   node test/bench/run.mjs [--size 1G[,4G]] [--runs 5] [--json FILE] [--entries 100000]
//                           [--startup-runs 10] [--nightly 1G] [--nights 30] [--tools LIST]
//                           [--drive-nights 3] [--data DIR] [--keep] [--no-install]
//
// Everything it writes goes under --data (default bench-data/, git-ignored) and is removed at the
// end unless --keep (then a generated export is also reused by the next run).
import { spawnSync } from 'node:child_process';
import { mkdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseSize } from '../../fixtures/generate-export.mjs';
import { ROOT, MB, backupctl, compareTrees, createBench, digestTree, fmtMB, fmtS, have, median, node, parseCommandLine, q, table } from './lib.mjs';
import { benchNightly, nightlyOptions, nightlyParams, nightlyUsage, printNightly } from './nightly.mjs';

const usage =
  'usage: node test/bench/run.mjs [--size 1G[,4G]] [--runs N] [--json FILE] [--entries N]\n' +
  '                               [--startup-runs N] [--nightly SIZE] [--nights N] [--tools LIST]\n' +
  '                               [--drive-nights N] [--data DIR] [--keep] [--no-install]\n' +
  '  --size          export size(s) to measure, K/M/G = powers of 1000 (default 1G)\n' +
  '  --runs          timed runs of each operation, alternating with the baselines (default 5)\n' +
  '  --json FILE     also write the results as JSON\n' +
  '  --entries       tiny files for the memory-per-index-entry measurement and the nightly\n' +
  '                  scenario\'s peak RSS (0 = skip both; default 100000)\n' +
  '  --startup-runs  runs of each startup measurement (default 10)\n' +
  '  --nightly       export size for the nightly repository scenario (0 = skip; default 1G)\n' +
  nightlyUsage +
  '  --data          working directory (default bench-data/); removed at the end unless --keep\n' +
  '  --no-install    do not apt-get install age / time / restic / borgbackup when they are missing\n';
const opt = parseCommandLine('run.mjs', {
  size: { type: 'string', default: '1G' },
  runs: { type: 'string', default: '5' },
  json: { type: 'string' },
  entries: { type: 'string', default: '100000' },
  'startup-runs': { type: 'string', default: '10' },
  ...nightlyOptions,
  data: { type: 'string', default: path.join(ROOT, 'bench-data') },
  keep: { type: 'boolean', default: false },
  'no-install': { type: 'boolean', default: false },
}, usage);

const RUNS = Math.max(1, Number(opt.runs));
const bench = createBench({ data: opt.data, keep: opt.keep, noInstall: opt['no-install'] });
const { scratch, skipped, notes, sh } = bench;

// age (the baseline) is a Debian package.
const hasAge = bench.ensurePackage('age', () => have('age') && have('age-keygen'));
if (!hasAge) {
  skipped.push('age');
  process.stderr.write('\n*** bench: `age` is not installed: THE tar|age AND age -d|tar COMPARISONS ARE SKIPPED ***\n\n');
}

// ---------------------------------------------------------------------------------------------
// Statistics.

function summary(samples, bytes) {
  const secs = samples.map((s) => s.secs);
  const rss = samples.map((s) => s.rss).filter((r) => r !== null);
  return {
    secs,
    median: median(secs),
    min: Math.min(...secs),
    max: Math.max(...secs),
    mbps: bytes ? bytes / median(secs) / MB : null,
    peakRss: rss.length ? Math.max(...rss) : null,
  };
}
/** Speed of `op` relative to `base` in each run (base time / op time): > 1 means op is faster. */
function ratio(ops, op, base, target) {
  const r = ops[op].secs.map((s, i) => ops[base].secs[i] / s);
  const m = median(r);
  return { op, vs: base, median: m, min: Math.min(...r), max: Math.max(...r), target, met: target === null ? null : m >= target };
}

// ---------------------------------------------------------------------------------------------
// Setup: a config with one recovery code, an age key.

async function setup() {
  const cfg = await bench.setupConfig();
  let ageKey = null;
  let ageRecipient = null;
  if (hasAge) {
    ageKey = path.join(cfg.config, 'age-key.txt');
    spawnSync('age-keygen', ['-o', ageKey], { stdio: 'ignore' });
    ageRecipient = spawnSync('age-keygen', ['-y', ageKey], { encoding: 'utf8' }).stdout.trim();
  }
  return { ...cfg, ageKey, ageRecipient };
}

// ---------------------------------------------------------------------------------------------
// One size: alternate baseline and backupctl in every run (odd runs flip the order, so neither
// side always gets the warmer cache or the quieter moment).

async function benchSize(ctx, sizeText) {
  const ex = await bench.ensureExport(`export-${sizeText}`, { profile: 'bench', size: sizeText });
  const work = scratch(`work-${sizeText}`);
  await rm(work, { recursive: true, force: true });
  await mkdir(work);
  const archive = path.join(work, 'export.bkp');
  const plainTar = path.join(work, 'export.tar');
  const ageOut = path.join(work, 'export.tar.age');
  const restoreDir = path.join(work, 'restored');
  const untarDir = path.join(work, 'untarred');
  const plainDir = path.join(work, 'plain');
  const { env, unlock } = ctx;
  // Extracted trees go to a fresh directory per run and are removed at the very end: on ext4
  // without a journal (this VM's disk), creating files within a minute or so of deleting others
  // makes the kernel skip the freed inodes one by one (recently_deleted() in perf: a third of a
  // restore's CPU), which no user restoring a backup meets. Without the disk space for that, they
  // are removed before each run, as before, and the table says so.
  const free = await statfs(work).then((f) => f.bavail * f.bsize).catch(() => 0);
  const keepTrees = free > ex.bytes * (3 * RUNS + 6);
  if (!keepTrees) notes.add(`restored trees removed between runs (${fmtMB(free)} free): ext4 may slow file creation after deletions`);
  const fresh = (name, run) => (keepTrees ? `${name}-${run + 1}` : name);
  // Each step's output (removed before the step, untimed) is its own; `restored-1` (or
  // `restored`) holds what backupctl restored.
  const tarAge = (T, out) => `${T()}tar -cf - -C ${q(ex.dir)} . | ${T()}age -r ${q(ctx.ageRecipient)} > ${q(out)}`;
  const thenSync = (T, out) => ` && ${T()}sync ${q(out)}`;
  const steps = {
    'tar | cat': { out: plainTar, run: (T, out) => `${T()}tar -cf - -C ${q(ex.dir)} . | ${T()}cat > ${q(out)}` },
    'tar | age': { out: ageOut, run: tarAge },
    // What create does on top: the archive is on the disk (fsync) before it takes its name.
    'tar | age; sync': { out: ageOut, run: (T, out) => tarAge(T, out) + thenSync(T, out) },
    create: { out: archive, run: (T, out) => backupctl(T, `create ${q(ex.dir)} -o ${q(out)}`) },
    // The disk's own limit for that: the archive's bytes (from the page cache) written and synced.
    'cat archive; sync': { out: path.join(work, 'copy.bkp'), run: (T, out) => `${T()}cat ${q(archive)} > ${q(out)}` + thenSync(T, out) },
    'age -d | tar -x': { out: (run) => fresh(untarDir, run), run: (T, out) => `mkdir ${q(out)}; ${T()}age -d -i ${q(ctx.ageKey)} ${q(ageOut)} | ${T()}tar -xf - -C ${q(out)}` },
    // The file system's own part of a restore: the same files from a plain tar, nothing to decrypt.
    'tar -x': { out: (run) => fresh(plainDir, run), run: (T, out) => `mkdir ${q(out)}; ${T()}tar -xf ${q(plainTar)} -C ${q(out)}` },
    restore: { out: (run) => fresh(restoreDir, run), run: (T, out) => backupctl(T, `restore ${q(archive)} -d ${q(out)} ${unlock}`) },
    verify: { run: (T) => backupctl(T, `verify ${q(archive)} ${unlock}`) },
  };
  const pairs = [
    ['tar | cat', 'tar | age', 'tar | age; sync', 'create', 'cat archive; sync'], // create first makes the archive
    ['age -d | tar -x', 'tar -x', 'restore'], // after the first group, which writes export.tar
    ['verify'],
  ].map((p) => p.filter((name) => hasAge || !name.includes('age')));
  const samples = Object.fromEntries(Object.keys(steps).map((k) => [k, []]));

  await sh(() => `tar -cf - -C ${q(ex.dir)} . | cat > /dev/null`); // warm the page cache
  let roundTrip = null;
  for (let run = 0; run < RUNS; run++) {
    for (const group of pairs) {
      for (const name of run % 2 ? [...group].reverse() : group) {
        const step = steps[name];
        const out = typeof step.out === 'function' ? step.out(run) : step.out;
        if (out) await rm(out, { recursive: true, force: true });
        // Nothing left for the disk to write from the step before (this disk writes 275-540 MB/s):
        // each step's time is its own writes' only.
        spawnSync('sync');
        samples[name].push(await sh((T) => step.run(T, out), env));
        process.stderr.write(`bench: ${sizeText} run ${run + 1}/${RUNS} ${name} ${samples[name].at(-1).secs.toFixed(2)} s\n`);
        if (name === 'restore' && roundTrip === null) {
          const diff = compareTrees(await digestTree(ex.dir), await digestTree(out));
          roundTrip = { identical: diff.length === 0, differences: diff.slice(0, 20) };
        }
      }
    }
  }
  for (const name of ['tar | cat', 'cat archive; sync']) await rm(steps[name].out, { force: true });
  if (!keepTrees) for (const d of [untarDir, plainDir]) await rm(d, { recursive: true, force: true });
  const ops = Object.fromEntries(
    Object.entries(samples).filter(([, s]) => s.length).map(([k, s]) => [k, summary(s, ex.bytes)]),
  );
  const ratios = [
    ...(hasAge ? [ratio(ops, 'create', 'tar | age', 1.0), ratio(ops, 'create', 'tar | age; sync', null)] : []),
    ratio(ops, 'create', 'cat archive; sync', null),
    ...(hasAge ? [ratio(ops, 'restore', 'age -d | tar -x', 1.5)] : []),
    ratio(ops, 'restore', 'tar -x', null),
    ratio(ops, 'verify', 'create', 1.0),
  ];
  const archiveBytes = (await stat(archive)).size;
  if (!opt.keep && !keepTrees) await rm(work, { recursive: true, force: true });
  return { size: sizeText, bytes: ex.bytes, files: ex.files, archiveBytes, ops, ratios, roundTrip };
}

// ---------------------------------------------------------------------------------------------
// Startup: `--version` and `inspect` of a small archive, against bare `node -e 0`.

async function benchStartup(ctx) {
  const n = Math.max(1, Number(opt['startup-runs']));
  const small = scratch('small.bkp');
  await rm(small, { force: true });
  await sh((T) => backupctl(T, `create ${q(path.join(ROOT, 'fixtures/sample-export'))} -o ${q(small)}`), ctx.env);
  const cmds = {
    'node -e 0': (T) => `${T()}${node} -e 0`,
    'backupctl --version': (T) => backupctl(T, '--version'),
    'backupctl inspect (small archive)': (T) => backupctl(T, `inspect ${q(small)}`),
  };
  const out = {};
  for (const [name, build] of Object.entries(cmds)) {
    const s = [];
    for (let i = 0; i < n; i++) s.push(await sh(build, ctx.env));
    out[name] = summary(s, 0);
  }
  await rm(small, { force: true });
  return out;
}

// ---------------------------------------------------------------------------------------------
// Memory per index entry: peak RSS of create and restore on N tiny files, minus the same on the
// sample export (27 files), divided by the difference in entries.

async function benchEntries(ctx, count) {
  const many = await bench.ensureExport(`entries-${count}`, { profile: 'entries', count });
  const few = { dir: path.join(ROOT, 'fixtures/sample-export'), files: 27 };
  const work = scratch('work-entries');
  const result = { entries: many.files };
  for (const [label, ex] of [['few', few], ['many', many]]) {
    await rm(work, { recursive: true, force: true });
    await mkdir(work);
    const archive = path.join(work, 'a.bkp');
    const c = await sh((T) => backupctl(T, `create ${q(ex.dir)} -o ${q(archive)}`), ctx.env);
    const r = await sh((T) => backupctl(T, `restore ${q(archive)} -d ${q(path.join(work, 'r'))} ${ctx.unlock}`), ctx.env);
    result[label] = { files: ex.files, create: { secs: c.secs, peakRss: c.rss }, restore: { secs: r.secs, peakRss: r.rss } };
  }
  await rm(work, { recursive: true, force: true });
  if (bench.hasTime) {
    const d = many.files - few.files;
    result.bytesPerEntry = {
      create: Math.round((result.many.create.peakRss - result.few.create.peakRss) / d),
      restore: Math.round((result.many.restore.peakRss - result.few.restore.peakRss) / d),
    };
  }
  return result;
}

// ---------------------------------------------------------------------------------------------
// Output.

function printSize(r) {
  process.stdout.write(
    `\nexport ${fmtMB(r.bytes)} (${r.files} files), archive ${fmtMB(r.archiveBytes)}, ${RUNS} runs; round trip: ` +
      `${r.roundTrip?.identical ? 'byte-identical' : `DIFFERS (${r.roundTrip?.differences.join('; ')})`}\n`,
  );
  const rows = [['operation', 'median', 'min', 'max', 'MB/s', 'peak RSS']];
  for (const [k, o] of Object.entries(r.ops)) {
    rows.push([k, fmtS(o.median), fmtS(o.min), fmtS(o.max), o.mbps.toFixed(0), fmtMB(o.peakRss)]);
  }
  process.stdout.write(table(rows));
  const rr = [['speed ratio (per run, side by side)', 'median', 'min', 'max', 'target', '']];
  for (const x of r.ratios) {
    const target = x.target === null ? ['(reference)', ''] : [`>= ${x.target}x`, x.met ? 'met' : 'NOT MET'];
    rr.push([`${x.op} vs ${x.vs}`, `${x.median.toFixed(2)}x`, `${x.min.toFixed(2)}x`, `${x.max.toFixed(2)}x`, ...target]);
  }
  process.stdout.write('\n' + table(rr));
}

async function main() {
  const sizes = opt.size.split(',').map((s) => s.trim()).filter(Boolean);
  sizes.forEach(parseSize); // reject a bad size before generating anything
  const nightlyRun = opt.nightly === '0' ? null : nightlyParams({ size: opt.nightly, nights: opt.nights, entries: opt.entries, tools: opt.tools, driveNights: opt['drive-nights'] });
  const cpu = os.cpus();
  process.stdout.write(
    `backupctl bench: node ${process.version}, ${cpu.length} x ${cpu[0]?.model ?? 'cpu'}, ${RUNS} runs` +
      `${skipped.length ? `, SKIPPED: ${skipped.join(', ')}` : ''}\n`,
  );
  const ctx = await setup();
  const results = [];
  for (const s of sizes) {
    const r = await benchSize(ctx, s);
    printSize(r);
    results.push(r);
  }
  if (results.length > 1) {
    const rows = [['peak RSS by export size', ...results.map((r) => fmtMB(r.bytes))]];
    for (const op of ['create', 'restore', 'verify']) rows.push([op, ...results.map((r) => fmtMB(r.ops[op].peakRss))]);
    process.stdout.write('\n' + table(rows));
  }
  const startup = await benchStartup(ctx);
  process.stdout.write('\n' + table([['startup', 'median', 'min', 'max'], ...Object.entries(startup).map(([k, o]) => [k, fmtS(o.median), fmtS(o.min), fmtS(o.max)])]));
  let entries = null;
  if (Number(opt.entries) > 0) {
    entries = await benchEntries(ctx, Number(opt.entries));
    const e = entries;
    process.stdout.write(
      `\nindex memory: create ${fmtMB(e.few.create.peakRss)} on ${e.few.files} files, ${fmtMB(e.many.create.peakRss)} on ${e.many.files}` +
        ` (${fmtS(e.many.create.secs)}); restore ${fmtMB(e.few.restore.peakRss)} / ${fmtMB(e.many.restore.peakRss)} (${fmtS(e.many.restore.secs)})` +
        `${e.bytesPerEntry ? `: ~${e.bytesPerEntry.create} bytes per entry (create), ~${e.bytesPerEntry.restore} (restore)` : ''}\n`,
    );
  }
  const report = {
    node: process.version,
    cpus: cpu.length,
    cpuModel: cpu[0]?.model ?? null,
    date: new Date().toISOString(),
    runs: RUNS,
    skipped,
    notes: [...notes],
    sizes: results,
    startup,
    entries,
  };
  let nightly = null;
  if (nightlyRun) {
    nightly = await benchNightly(bench, ctx, nightlyRun);
    printNightly(nightly);
  }
  report.nightly = nightly;
  for (const n of notes) process.stdout.write(`note: ${n}\n`);
  if (opt.json) await writeFile(opt.json, JSON.stringify(report, null, 2) + '\n');
  return results.every((r) => r.roundTrip?.identical) && (nightly?.identical ?? true) ? 0 : 1;
}

bench.run(main, 'bench');
