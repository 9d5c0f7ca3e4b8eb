#!/usr/bin/env node
// `npm run bench:nightly` (issue 13): the snapshot repository's nightly scenario on the bench's
// generated export, beside restic and borg when they are installed (Debian: restic, borgbackup):
// a first backup, a night with nothing changed, a night of changes (3 photos, 2 voice notes, the
// chat log +1%, a video renamed), then a restore of the latest snapshot, checked identical.
// Reports seconds, peak RSS and the bytes each tool's repository grew by.
//
//   node test/bench/nightly.mjs [--size 1G] [--data DIR] [--keep] [--json FILE]
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { appendFile, cp, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generateExport } from '../../fixtures/generate-export.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.join(ROOT, 'bin/backupctl.js');
const { values: opt } = parseArgs({
  options: {
    size: { type: 'string', default: '1G' },
    data: { type: 'string', default: path.join(ROOT, 'bench-data', 'nightly') },
    keep: { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
const DATA = path.resolve(opt.data);
const at = (...p) => path.join(DATA, ...p);
const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const hasTime = existsSync('/usr/bin/time');

/** Run a command; its wall seconds, peak RSS (bytes, with GNU time) and stdout. */
function run(cmd, args, env = {}) {
  spawnSync('sync');
  const rssFile = at('rss');
  const argv = hasTime ? ['/usr/bin/time', '-f', '%M', '-o', rssFile, cmd, ...args] : [cmd, ...args];
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0], argv.slice(1), { env: { ...process.env, ...env }, encoding: 'utf8', maxBuffer: 1 << 26 });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const rss = hasTime ? Number(spawnSync('tail', ['-1', rssFile], { encoding: 'utf8' }).stdout.trim()) * 1024 : null;
  return { secs, rss, stdout: r.stdout };
}

async function du(dir) {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += (await stat(path.join(e.parentPath, e.name))).size;
  return n;
}

/** One night of changes; returns the new bytes. */
async function night(src) {
  let added = 0;
  for (let i = 1; i <= 3; i++) await writeFile(path.join(src, 'Media/WhatsApp Images', `IMG-night-${i}.jpg`), randomBytes(1_500_000));
  for (let i = 1; i <= 2; i++) await writeFile(path.join(src, 'Media/WhatsApp Voice Notes', `PTT-night-${i}.opus`), randomBytes(200_000));
  added += 3 * 1_500_000 + 2 * 200_000;
  const chat = path.join(src, '_chat.txt');
  const log = await readFile(chat);
  const more = log.subarray(0, Math.round(log.length / 100));
  await appendFile(chat, more);
  added += more.length;
  const videos = path.join(src, 'Media/WhatsApp Video');
  const v = (await readdir(videos)).sort()[0];
  await rename(path.join(videos, v), path.join(videos, `renamed-${v}`));
  return added;
}

const tools = {
  backupctl: {
    env: { BACKUPCTL_CONFIG_DIR: at('config') },
    init(repo) {
      run(process.execPath, [BIN, 'recovery-code', 'new', '--output', at('code')], this.env);
      this.env.BACKUPCTL_RECOVERY_CODE = spawnSync('cat', [at('code')], { encoding: 'utf8' }).stdout.trim();
      run(process.execPath, [BIN, 'repo', 'init', repo], this.env);
    },
    backup: (t, repo, src) => run(process.execPath, [BIN, 'backup', src, '--repo', repo], t.env),
    restore: (t, repo, out) => run(process.execPath, [BIN, 'restore', '--repo', repo, 'latest', '-d', out], t.env),
  },
  restic: {
    env: { RESTIC_PASSWORD: 'bench' },
    init(repo) { run('restic', ['init', '-q', '-r', repo], this.env); },
    backup: (t, repo, src) => run('restic', ['-q', '-r', repo, 'backup', src], t.env),
    restore: (t, repo, out) => run('restic', ['-q', '-r', repo, 'restore', 'latest', '--target', out], t.env),
  },
  borg: {
    env: { BORG_PASSPHRASE: 'bench', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' },
    n: 0,
    init(repo) { run('borg', ['init', '-e', 'repokey', repo], this.env); },
    backup: (t, repo, src) => run('borg', ['create', `${repo}::n${t.n++}`, src], t.env),
    restore: null, // borg extract restores into the working directory: left out
  },
};

async function main() {
  await rm(DATA, { recursive: true, force: true });
  process.stderr.write(`nightly: generating a ${opt.size} export ...\n`);
  await generateExport({ profile: 'bench', size: opt.size, out: at('export') });
  const results = {};
  for (const [name, t] of Object.entries(tools)) {
    if (name !== 'backupctl' && !have(name)) {
      process.stderr.write(`nightly: ${name} not installed: skipped\n`);
      continue;
    }
    const src = at(`src-${name}`);
    const repo = at(`repo-${name}`);
    await cp(at('export'), src, { recursive: true });
    t.init(repo);
    const r = (results[name] = {});
    const step = async (label, f, before) => {
      const m = f();
      r[label] = { secs: m.secs, peakRss: m.rss, stored: before === undefined ? undefined : (await du(repo)) - before };
      process.stderr.write(`nightly: ${name} ${label} ${m.secs.toFixed(2)} s\n`);
    };
    await step('first', () => t.backup(t, repo, src), await du(repo));
    await step('unchanged', () => t.backup(t, repo, src), await du(repo));
    r.newBytes = await night(src);
    await step('night', () => t.backup(t, repo, src), await du(repo));
    if (t.restore) {
      const out = at(`out-${name}`);
      await step('restore', () => t.restore(t, repo, out));
      // restic restores under the full source path; backupctl into DIR itself.
      const got = name === 'restic' ? path.join(out, src) : out;
      r.identical = spawnSync('diff', ['-rq', src, got]).status === 0;
    }
    await rm(src, { recursive: true, force: true });
  }
  const mb = (n) => (n === undefined ? '' : n < 1e6 ? `${n} bytes` : `${(n / 1e6).toFixed(2)} MB`);
  for (const [name, r] of Object.entries(results)) {
    process.stdout.write(`${name}:\n`);
    for (const k of ['first', 'unchanged', 'night', 'restore']) {
      if (r[k]) process.stdout.write(`  ${k.padEnd(10)} ${r[k].secs.toFixed(2).padStart(7)} s  peak ${mb(r[k].peakRss).padStart(10)}  stored ${mb(r[k].stored)}\n`);
    }
    process.stdout.write(`  night's new bytes ${mb(r.newBytes)}${r.identical === undefined ? '' : `, restore identical: ${r.identical}`}\n`);
  }
  if (opt.json) await writeFile(opt.json, JSON.stringify(results, null, 2) + '\n');
  if (!opt.keep) await rm(DATA, { recursive: true, force: true });
  return Object.values(results).every((r) => r.identical !== false) ? 0 : 1;
}

main().then((code) => process.exit(code), (err) => {
  process.stderr.write(`nightly: ${err.message}\n`);
  process.exit(1);
});
