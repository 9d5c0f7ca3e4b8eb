// The nightly scenario against Google Drive (issue 14): the same export and nights as
// nightly.mjs, backed up with `--repo drive:NAME` into the Drive fake on 127.0.0.1
// (test/support/drive-fake), whose counters give each run's cost: API calls, files created, bytes
// uploaded and downloaded. A first backup, a night with nothing changed, N nights of changes, then
// a restore of one file (the export's largest) from the latest snapshot, which must read only the
// ranges of the packs holding it. Wall times are the loopback's, not a network's.
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { stripTypeScriptTypes } from 'node:module';
import path from 'node:path';
import { generateNight } from '../../fixtures/generate-export.mjs';
import { MB, ROOT, backupctl, fmtBytes, fmtS, q, table } from './lib.mjs';

const FAKE = path.join(ROOT, 'test/support/drive-fake');
const REPO = 'drive:bench-nightly';

/**
 * The fake is TypeScript that vitest runs as it is; plain node cannot (parameter properties,
 * `.js` imports of `.ts` files), so its modules are transpiled by node itself into the bench's scratch.
 */
async function loadDriveFake(bench) {
  const dir = bench.scratch('drive-fake-js');
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir);
  await writeFile(path.join(dir, 'package.json'), '{"type":"module"}\n');
  for (const f of (await readdir(FAKE)).filter((n) => n.endsWith('.ts'))) {
    const ts = await readFile(path.join(FAKE, f), 'utf8');
    // Node warns that this is experimental, on the bench's stderr, every run: said here instead.
    const emit = process.emitWarning;
    process.emitWarning = () => {};
    let js;
    try {
      js = stripTypeScriptTypes(ts, { mode: 'transform' });
    } finally {
      process.emitWarning = emit;
    }
    await writeFile(path.join(dir, f.replace(/\.ts$/, '.js')), js);
  }
  return import(path.join(dir, 'server.js'));
}

/** The export's largest file (relative path, bytes): the one restored alone. */
async function largestFile(root) {
  let best = { rel: null, bytes: -1 };
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const p = path.join(e.parentPath, e.name);
    const { size } = await stat(p);
    if (size > best.bytes) best = { rel: path.relative(root, p), bytes: size };
  }
  return best;
}

/**
 * Backs up `ex` (from ensureExport) into a Drive repository on a fresh fake: first, nothing
 * changed, `nights` nights of `night` (generateNight's parameters); then one file restored.
 */
export async function benchDrive(bench, ctx, { ex, night, nights }) {
  const { DriveFake } = await loadDriveFake(bench);
  // Pages of up to 1000 items, the most Drive gives; its empty first pages would only add calls.
  const fake = await new DriveFake({ maxPageItems: 1000, emptyFirstPage: false }).start();
  const work = bench.scratch('nightly-drive');
  try {
    await rm(work, { recursive: true, force: true });
    await mkdir(work);
    // A bare access token (BACKUPCTL_DRIVE_ACCESS_TOKEN) rather than `drive login`: the same calls
    // afterwards, without the login's spawn and browser round trip.
    const env = { ...ctx.env, BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl, BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl, BACKUPCTL_DRIVE_ACCESS_TOKEN: fake.issueAccessToken() };

    /** One command, with what it cost on Drive. */
    const counted = async (label, build) => {
      spawnSync('sync');
      fake.resetCounters();
      const m = await bench.sh(build, env);
      const cost = { secs: m.secs, peakRss: m.rss, calls: fake.apiCalls, created: fake.filesCreated, up: fake.uploadBytesReceived, down: fake.downloadBytesSent };
      process.stderr.write(`bench: drive ${label} ${fmtS(cost.secs)}, ${cost.calls} calls, ${cost.created} files, ${fmtBytes(cost.up)} up, ${fmtBytes(cost.down)} down\n`);
      return cost;
    };
    const src = path.join(work, 'export');
    await bench.sh(() => `cp -a ${q(ex.dir)} ${q(src)}`);
    const backup = (label) => counted(label, (T) => backupctl(T, `backup ${q(src)} --repo ${REPO}`));

    const init = await counted('repo init', (T) => backupctl(T, `repo init ${REPO}`));
    const first = await backup('first backup');
    const unchanged = await backup('nothing changed');
    const perNight = [];
    for (let n = 1; n <= nights; n++) {
      const { newBytes } = await generateNight({ out: src, night: n, ...night });
      perNight.push({ ...(await backup(`night ${n}/${nights}`)), newBytes });
    }
    const one = await largestFile(src);
    const out = path.join(work, 'restored-one');
    const restoreOne = await counted(`restore of ${one.rel}`, (T) => backupctl(T, `restore --repo ${REPO} latest -d ${q(out)} --only ${q(one.rel)} ${ctx.unlock}`));
    restoreOne.file = one.rel;
    restoreOne.fileBytes = one.bytes;
    // Range requests, and the packs (and tree packs) they went to.
    const media = fake.requests.filter((q) => q.on === 'media');
    restoreOne.ranges = media.length;
    restoreOne.rangeFiles = new Set(media.map((q) => q.path.split('?')[0].split('/')[4])).size;
    restoreOne.identical = spawnSync('cmp', ['-s', path.join(src, one.rel), path.join(out, one.rel)]).status === 0;
    // What the repository holds on Drive: every file's current revision.
    const repoBytes = [...fake.files.values()].reduce((s, f) => s + (f.revisions.at(-1)?.content.length ?? 0), 0);
    const r = { init, first, unchanged, nights: perNight, restoreOne, repoBytes, repoFiles: fake.files.size };
    r.targets = driveTargets(r);
    return r;
  } finally {
    await fake.stop();
    if (!bench.keep) await rm(work, { recursive: true, force: true });
  }
}

/** The issue's Drive targets, every night judged; `value` against `limit` (calls, files, bytes). */
function driveTargets(r) {
  const le = (id, run, target, value, limit) => ({ id, run, target, value, limit, met: value <= limit });
  const out = [le('unchanged-calls', 'unchanged', '<= 5 calls', r.unchanged.calls, 5)];
  r.nights.forEach((m, i) => {
    const run = `night-${i + 1}`;
    const upLimit = Math.round(1.1 * m.newBytes + MB);
    out.push(
      le('night-calls', run, '<= 15 calls', m.calls, 15),
      le('night-files', run, '<= 5 files', m.created, 5),
      le('night-up', run, `up <= 1.1 x new + 1 MB (${fmtBytes(upLimit)})`, m.up, upLimit),
    );
  });
  const o = r.restoreOne;
  out.push(le('restore-one', 'restore-one', `down <= size + 2 MB (${fmtBytes(o.fileBytes + 2 * MB)})`, o.down, o.fileBytes + 2 * MB));
  return out;
}

export function printDrive(r) {
  const verdict = (run) =>
    r.targets
      .filter((t) => t.run === run)
      .map((t) => `${t.target}: ${t.met ? 'met' : 'MISSED'}`)
      .join('; ');
  const rows = [['nightly on Drive (fake, loopback)', 'API calls', 'files created', 'uploaded', 'downloaded', 'wall', 'target']];
  const row = (label, m, run) => rows.push([label, m.calls, m.created, fmtBytes(m.up), fmtBytes(m.down), fmtS(m.secs), run ? verdict(run) : '']);
  row('repo init', r.init);
  row('first backup', r.first);
  row('nothing changed', r.unchanged, 'unchanged');
  r.nights.forEach((m, i) => row(`night ${i + 1} (${fmtBytes(m.newBytes)} new)`, m, `night-${i + 1}`));
  const o = r.restoreOne;
  row(`restore of one file (${fmtBytes(o.fileBytes)})`, o, 'restore-one');
  process.stdout.write(
    `\nnightly on Drive: the same export and nights, --repo ${REPO}; repository ${fmtBytes(r.repoBytes)} in ${r.repoFiles} files and folders; ` +
      `one file restored: ${o.file}, ${o.identical ? 'byte-identical' : 'DIFFERS'}, ${o.ranges} downloads (by range) from ${o.rangeFiles} files\n` +
      table(rows, { left: [6] }),
  );
}
