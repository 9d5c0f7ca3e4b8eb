#!/usr/bin/env node
// The nightly repository scenario of `npm run bench` (issue 13), beside restic and borg (Debian:
// restic, borgbackup), on one copy of the bench's generated export that every tool backs up in
// turn: a first backup, a night with nothing changed, then N nights of changes (each: 3 photos and
// 2 voice notes attached in new chat lines, the chat log +1%, a video renamed; deterministic, from
// generateNight in fixtures/generate-export.mjs), a restore of the latest snapshot checked
// byte-identical, and the repository's size after the N nights. Then the peak RSS of a first and
// a nothing-changed backup of N tiny files (the `entries` profile) and of its restore (checked
// byte-identical too). Then the first nights again
// into a repository on Google Drive, the fake on loopback (drive.mjs, issue 14). Targets are the
// issues'.
//
// run.mjs runs it after its own scenarios; run alone:
//   node test/bench/nightly.mjs [--size 1G] [--nights 30] [--entries 100000] [--drive-nights 3]
//                               [--tools backupctl,restic,borg] [--json FILE] [--data DIR] [--keep] [--no-install]
import { spawnSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateNight, parseSize } from '../../fixtures/generate-export.mjs';
import { benchDrive, printDrive } from './drive.mjs';
import { MB, ROOT, backupctl, compareTrees, createBench, digestTree, du, fmtBytes, fmtMB, fmtS, have, median, parseCommandLine, q, readInto, table } from './lib.mjs';

/** The scenario's options, shared with run.mjs's. */
export const nightlyOptions = {
  nightly: { type: 'string', default: '1G' },
  nights: { type: 'string', default: '30' },
  tools: { type: 'string', default: 'backupctl,restic,borg' },
  'drive-nights': { type: 'string', default: '3' },
};

/** The --help lines of nightlyOptions, shared with run.mjs's. */
export const nightlyUsage =
  '  --nights        nights of changes after the first backup (default 30)\n' +
  '  --tools         tools in the nightly scenario (default backupctl,restic,borg)\n' +
  '  --drive-nights  nights of the nightly scenario also backed up to the Drive fake, after a\n' +
  '                  first backup and a night with nothing changed (0 = skip; default 3)\n';

/**
 * How each tool initialises a repository, backs up (snapshot number `n`) and restores the latest
 * snapshot; `restored` is where the source tree lands (restic and borg keep its absolute path).
 */
function toolsFor(bench, ctx) {
  return {
    backupctl: {
      env: ctx.env,
      init: (T, repo) => backupctl(T, `repo init ${q(repo)}`),
      backup: (T, repo, src) => backupctl(T, `backup ${q(src)} --repo ${q(repo)}`),
      restore: (T, repo, out) => backupctl(T, `restore --repo ${q(repo)} latest -d ${q(out)} ${ctx.unlock}`),
      restored: (out) => out,
    },
    restic: {
      package: 'restic',
      env: { RESTIC_PASSWORD: 'bench', XDG_CACHE_HOME: bench.scratch('restic-cache') },
      init: (T, repo) => `${T()}restic init -q -r ${q(repo)}`,
      backup: (T, repo, src) => `${T()}restic -q -r ${q(repo)} backup ${q(src)}`,
      restore: (T, repo, out) => `${T()}restic -q -r ${q(repo)} restore latest --target ${q(out)}`,
      restored: (out, src) => path.join(out, src),
    },
    borg: {
      package: 'borgbackup',
      env: { BORG_PASSPHRASE: 'bench', BORG_BASE_DIR: bench.scratch('borg-base'), BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' },
      init: (T, repo) => `${T()}borg init -e repokey ${q(repo)} 2>/dev/null`,
      backup: (T, repo, src, n) => `${T()}borg create ${q(`${repo}::n${n}`)} ${q(src)}`,
      // borg extracts into the working directory.
      restore: (T, repo, out, n) => `mkdir ${q(out)} && cd ${q(out)} && ${T()}borg extract ${q(`${repo}::n${n}`)}`,
      restored: (out, src) => path.join(out, src),
    },
  };
}

/** The tools asked for that are installed (or could be installed); the others are skipped loudly. */
function pickTools(bench, ctx, names) {
  const all = toolsFor(bench, ctx);
  const picked = {};
  for (const name of names.split(',').map((s) => s.trim()).filter(Boolean)) {
    const t = all[name];
    if (!t) throw new Error(`unknown tool "${name}" (backupctl, restic, borg)`);
    if (t.package && !bench.ensurePackage(t.package, () => have(name))) {
      bench.skipped.push(name);
      process.stderr.write(`\n*** bench: ${name} is not installed: THE NIGHTLY SCENARIO RUNS WITHOUT IT ***\n\n`);
      continue;
    }
    picked[name] = t;
  }
  if (!picked.backupctl) throw new Error('--tools must include backupctl');
  return picked;
}

/** The tools in turn, the first one moving each step, so that none always runs first or last. */
const inTurn = (names, step) => names.map((_, i) => names[(i + step) % names.length]);

/** The scenario's parameters from the command line's, checked before anything is measured. */
export function nightlyParams({ size, nights, entries, tools, driveNights }) {
  parseSize(size);
  if (!/^[1-9]\d*$/.test(nights)) throw new Error(`bad --nights "${nights}" (expected 1 or more)`);
  if (!/^\d+$/.test(driveNights)) throw new Error(`bad --drive-nights "${driveNights}" (expected 0 or more)`);
  return { size, nights: Number(nights), entries: Number(entries), tools, driveNights: Number(driveNights) };
}

/** Runs the scenario with the parameters from nightlyParams; the figures, for printNightly. */
export async function benchNightly(bench, ctx, { size, nights, entries, tools: toolNames, driveNights }) {
  const tools = pickTools(bench, ctx, toolNames);
  const names = Object.keys(tools);
  const { sh } = bench;
  const ex = await bench.ensureExport(`export-${size}`, { profile: 'bench', size });
  const work = bench.scratch('nightly');
  await rm(work, { recursive: true, force: true });
  await mkdir(work);
  const src = path.join(work, 'export');
  await sh(() => `cp -a ${q(ex.dir)} ${q(src)}`);
  let step = 0;
  /** One timed command (after a `sync`, untimed, so that it pays only for its own writes). */
  const timed = async (t, build) => {
    spawnSync('sync');
    const m = await sh(build, t.env);
    return { secs: m.secs, peakRss: m.rss };
  };
  /** Every tool backs up `src` into its repository; the bytes each repository grew by. */
  const backupAll = async (label, repos, src, n) => {
    const out = {};
    for (const name of inTurn(names, step++)) {
      const t = tools[name];
      const before = await du(repos[name]);
      out[name] = { ...(await timed(t, (T) => t.backup(T, repos[name], src, n))), stored: (await du(repos[name])) - before };
      process.stderr.write(`bench: nightly ${label} ${name} ${fmtS(out[name].secs)}, ${fmtBytes(out[name].stored)} stored\n`);
    }
    return out;
  };
  const initAll = async (prefix) => {
    const repos = {};
    for (const name of names) {
      repos[name] = path.join(work, `${prefix}-${name}`);
      await sh((T) => tools[name].init(T, repos[name]), tools[name].env);
    }
    return repos;
  };

  // A night's media: phone-sized at 1 GB and above, proportionately smaller in a smaller export.
  const scale = Math.min(1, ex.bytes / 1e9);
  const night = { photos: 3, voices: 2, photoBytes: Math.round(1.5 * MB * scale), voiceBytes: Math.round(0.2 * MB * scale) };

  // What the first backup is measured against: an archive of the same export.
  const archive = path.join(work, 'create.bkp');
  const create = await timed(tools.backupctl, (T) => backupctl(T, `create ${q(src)} -o ${q(archive)}`));
  await rm(archive);

  const repos = await initAll('repo');
  const perTool = Object.fromEntries(names.map((n) => [n, { nights: [] }]));
  const record = (key, r) => {
    for (const [name, m] of Object.entries(r)) {
      if (key === 'nights') perTool[name].nights.push(m);
      else perTool[name][key] = m;
    }
  };
  let snapshot = 0;
  record('first', await backupAll('first backup', repos, src, snapshot++));
  record('unchanged', await backupAll('nothing changed', repos, src, snapshot++));
  const newBytes = [];
  for (let n = 1; n <= nights; n++) {
    newBytes.push((await generateNight({ out: src, night: n, ...night })).newBytes);
    record('nights', await backupAll(`night ${n}/${nights}`, repos, src, snapshot++));
  }
  const want = await digestTree(src);
  // The restored trees (and the export's copy) are removed only after the last restore, the many
  // files' too: on ext4 without a journal, files created within minutes of others being deleted
  // cost up to 1 ms each (recently_deleted() in perf; see benchSize in run.mjs), which would be
  // charged to whichever restore came next, not to the tool that restores.
  const restored = [src];
  for (const name of inTurn(names, step++)) {
    const t = tools[name];
    const out = path.join(work, `restored-${name}`);
    restored.push(out);
    await readInto(repos[name]); // untimed: every tool starts with its repository in the page cache (lib.mjs)
    const m = await timed(t, (T) => t.restore(T, repos[name], out, snapshot - 1));
    const diff = compareTrees(want, await digestTree(t.restored(out, src)));
    perTool[name].restore = { ...m, identical: diff.length === 0, differences: diff.slice(0, 20) };
    perTool[name].repoBytes = await du(repos[name]);
    process.stderr.write(`bench: nightly restore ${name} ${fmtS(m.secs)}${diff.length ? ' DIFFERS' : ''}\n`);
  }

  let manyFiles = null;
  if (entries > 0) {
    const many = await bench.ensureExport(`entries-${entries}`, { profile: 'entries', count: entries });
    const manyRepos = await initAll('many');
    manyFiles = { files: many.files, bytes: many.bytes, tools: Object.fromEntries(names.map((n) => [n, {}])) };
    for (const [key, label] of [['first', 'first backup'], ['unchanged', 'nothing changed']]) {
      for (const [name, m] of Object.entries(await backupAll(`${many.files} files, ${label}`, manyRepos, many.dir, snapshot++))) manyFiles.tools[name][key] = m;
    }
    // And restored: a restore holds the whole tree, so its memory grows with the files.
    const wantMany = await digestTree(many.dir);
    for (const name of inTurn(names, step++)) {
      const t = tools[name];
      const out = path.join(work, `many-restored-${name}`);
      restored.push(out);
      await readInto(manyRepos[name]);
      const m = await timed(t, (T) => t.restore(T, manyRepos[name], out, snapshot - 1));
      const diff = compareTrees(wantMany, await digestTree(t.restored(out, many.dir)));
      manyFiles.tools[name].restore = { ...m, identical: diff.length === 0, differences: diff.slice(0, 20) };
      process.stderr.write(`bench: nightly ${many.files} files, restore ${name} ${fmtS(m.secs)}${diff.length ? ' DIFFERS' : ''}\n`);
    }
  }
  for (const d of restored) await rm(d, { recursive: true, force: true });
  if (!bench.keep) await rm(work, { recursive: true, force: true });
  // The first nights again, into a repository on Drive (the fake): what each costs in API calls.
  const drive = driveNights > 0 ? await benchDrive(bench, ctx, { ex, night, nights: driveNights }) : null;
  const r = { size, bytes: ex.bytes, files: ex.files, nights, night, newBytes, create, tools: perTool, manyFiles, drive };
  r.targets = targets(r);
  r.identical = names.every((n) => perTool[n].restore.identical && (manyFiles?.tools[n].restore.identical ?? true)) && (drive?.restoreOne.identical ?? true);
  return r;
}

/**
 * The issue's targets, judged on backupctl's figures (`value` against `limit`: seconds or bytes);
 * `met` is null when what a target compares with was not measured (a tool skipped, no GNU time).
 */
function targets(r) {
  const b = r.tools.backupctl;
  const night1 = b.nights[0];
  const other = (name, f) => (r.tools[name] ? f(r.tools[name]) : null);
  const judge = (value, limit, ok) => ({ value, limit, met: value === null || value === undefined || limit === null || limit === undefined ? null : ok(value, limit) });
  const le = (v, l) => v <= l;
  const lt = (v, l) => v < l;
  const storedLimit = Math.round(1.1 * r.newBytes[0] + MB);
  const lastRss = b.nights.at(-1).peakRss;
  const out = [
    { id: 'first', target: `<= create (${fmtS(r.create.secs)})`, ...judge(b.first.secs, r.create.secs, le) },
    { id: 'unchanged', target: '< borg', ...judge(b.unchanged.secs, other('borg', (t) => t.unchanged.secs), lt) },
    { id: 'unchanged-stored', target: '< 100 KB', ...judge(b.unchanged.stored, 100_000, lt) },
    { id: 'night', target: '< restic', ...judge(night1.secs, other('restic', (t) => t.nights[0].secs), lt) },
    { id: 'night-stored', target: `<= 1.1 x new + 1 MB (${fmtBytes(storedLimit)})`, ...judge(night1.stored, storedLimit, le) },
    { id: 'restore', target: '<= 1/2 restic', ...judge(b.restore.secs, other('restic', (t) => t.restore.secs / 2), le) },
    { id: 'repository', target: '<= restic', ...judge(b.repoBytes, other('restic', (t) => t.repoBytes), le) },
  ];
  if (r.nights > 1) {
    out.push({ id: 'history-rss', target: '<= 1.1 x the 1% night', ...judge(lastRss, night1.peakRss === null ? null : 1.1 * night1.peakRss, le) });
  }
  if (r.manyFiles) {
    const m = r.manyFiles.tools.backupctl;
    out.push({ id: 'many-rss', target: '< 200 MB', ...judge(m.first.peakRss === null ? null : Math.max(m.first.peakRss, m.unchanged.peakRss), 200 * MB, lt) });
  }
  return out;
}

export function printNightly(r) {
  const names = Object.keys(r.tools);
  const verdict = (id) => {
    const t = r.targets.find((x) => x.id === id);
    return t ? `${t.target}: ${t.met === null ? 'not measured' : t.met ? 'met' : 'MISSED'}` : '';
  };
  const rows = [['nightly scenario', ...names, 'target (backupctl)']];
  const row = (label, f, id) => rows.push([label, ...names.map((n) => f(r.tools[n])), verdict(id)]);
  const rest = (t) => t.nights.slice(1);
  row('first backup', (t) => fmtS(t.first.secs), 'first');
  row('  stored', (t) => fmtBytes(t.first.stored));
  row('  peak RSS', (t) => fmtMB(t.first.peakRss));
  row('nothing changed', (t) => fmtS(t.unchanged.secs), 'unchanged');
  row('  stored', (t) => fmtBytes(t.unchanged.stored), 'unchanged-stored');
  row('1% night', (t) => fmtS(t.nights[0].secs), 'night');
  row('  stored', (t) => `${fmtBytes(t.nights[0].stored)} (${(t.nights[0].stored / r.newBytes[0]).toFixed(2)}x new)`, 'night-stored');
  row('  peak RSS', (t) => fmtMB(t.nights[0].peakRss));
  if (r.nights > 1) {
    row(r.nights > 2 ? `nights 2-${r.nights}: median` : 'night 2', (t) => fmtS(median(rest(t).map((m) => m.secs))));
    if (r.nights > 2) row('  max', (t) => fmtS(Math.max(...rest(t).map((m) => m.secs))));
    row('  stored, median', (t) => fmtBytes(median(rest(t).map((m) => m.stored))));
    row(`night ${r.nights}: peak RSS`, (t) => fmtMB(t.nights.at(-1).peakRss), 'history-rss');
  }
  row(`repository after ${r.nights} nights`, (t) => fmtBytes(t.repoBytes), 'repository');
  row('restore latest', (t) => fmtS(t.restore.secs), 'restore');
  row('  peak RSS', (t) => fmtMB(t.restore.peakRss));
  row('  byte-identical', (t) => (t.restore.identical ? 'yes' : `NO (${t.restore.differences.length})`));
  const nightText = `${r.night.photos} photos of ~${fmtBytes(r.night.photoBytes)}, ${r.night.voices} voice notes of ~${fmtBytes(r.night.voiceBytes)}, the chat log +1%, a video renamed`;
  process.stdout.write(
    `\nnightly: ${fmtBytes(r.bytes)} export (${r.files} files), \`create\` of it ${fmtS(r.create.secs)}; then ${r.nights} nights ` +
      `(${nightText}: ${fmtBytes(r.newBytes[0])} new the first night, ${fmtBytes(r.newBytes.reduce((x, y) => x + y, 0))} in all)\n` + table(rows, { left: [names.length + 1] }),
  );
  for (const [name, t] of Object.entries(r.tools)) {
    if (!t.restore.identical) process.stdout.write(`nightly: ${name} restore DIFFERS: ${t.restore.differences.join('; ')}\n`);
  }
  if (r.manyFiles) {
    const m = r.manyFiles;
    const mrows = [[`${m.files} files (${fmtBytes(m.bytes)})`, ...names, 'target (backupctl)']];
    const mrow = (label, f, id) => mrows.push([label, ...names.map((n) => f(m.tools[n])), id ? verdict(id) : '']);
    mrow('first backup', (t) => fmtS(t.first.secs));
    mrow('  peak RSS', (t) => fmtMB(t.first.peakRss), 'many-rss');
    mrow('nothing changed', (t) => fmtS(t.unchanged.secs));
    mrow('  peak RSS', (t) => fmtMB(t.unchanged.peakRss), 'many-rss');
    mrow('restore', (t) => fmtS(t.restore.secs));
    mrow('  peak RSS', (t) => fmtMB(t.restore.peakRss));
    process.stdout.write('\n' + table(mrows, { left: [names.length + 1] }));
    for (const [name, t] of Object.entries(m.tools)) {
      if (!t.restore.identical) process.stdout.write(`nightly: ${name} restore of ${m.files} files DIFFERS: ${t.restore.differences.join('; ')}\n`);
    }
  }
  if (r.drive) printDrive(r.drive);
}

async function main() {
  const usage =
    'usage: node test/bench/nightly.mjs [--size 1G] [--nights N] [--entries N] [--drive-nights N]\n' +
    '                                   [--tools LIST] [--json FILE] [--data DIR] [--keep] [--no-install]\n' +
    '  --size          export size, K/M/G = powers of 1000 (default 1G; --nightly is the same)\n' +
    nightlyUsage +
    '  --entries       tiny files for the peak-RSS profile (0 = skip; default 100000)\n' +
    '  --json FILE     also write the results as JSON\n' +
    '  --data          working directory (default bench-data/); removed at the end unless --keep\n' +
    '  --no-install    do not apt-get install time / restic / borgbackup when they are missing\n';
  const opt = parseCommandLine('nightly.mjs', {
    ...nightlyOptions,
    size: { type: 'string' }, // the same as --nightly, as run alone
    entries: { type: 'string', default: '100000' },
    json: { type: 'string' },
    data: { type: 'string', default: path.join(ROOT, 'bench-data') },
    keep: { type: 'boolean', default: false },
    'no-install': { type: 'boolean', default: false },
  }, usage);
  const bench = createBench({ data: opt.data, keep: opt.keep, noInstall: opt['no-install'] });
  bench.run(async () => {
    const params = nightlyParams({ size: opt.size ?? opt.nightly, nights: opt.nights, entries: opt.entries, tools: opt.tools, driveNights: opt['drive-nights'] });
    const r = await benchNightly(bench, await bench.setupConfig(), params);
    printNightly(r);
    if (opt.json) await writeFile(opt.json, JSON.stringify({ skipped: bench.skipped, nightly: r }, null, 2) + '\n');
    return r.identical ? 0 : 1;
  }, 'bench');
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();
