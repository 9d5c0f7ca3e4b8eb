// What the bench's scenarios share (test/bench/run.mjs, test/bench/nightly.mjs): the working
// directory and its cleanup, the tools it may install, running a command under GNU time, the
// generated exports, comparing trees, and the tables.
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, rmSync, rmdirSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { generateExport } from '../../fixtures/generate-export.mjs';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BIN = path.join(ROOT, 'bin/backupctl.js');
export const MB = 1e6;
const TIME = '/usr/bin/time';

/**
 * The command line of a bench script: --help (-h) prints `usage` and exits 0; an option parseArgs
 * refuses (unknown, missing its value, a stray argument) is one line on stderr and exit 2, not
 * parseArgs's stack trace.
 */
export function parseCommandLine(script, options, usage) {
  let values;
  try {
    ({ values } = parseArgs({ options: { ...options, help: { type: 'boolean', short: 'h', default: false } } }));
  } catch (e) {
    if (!String(e.code).startsWith('ERR_PARSE_ARGS_')) throw e;
    process.stderr.write(`${script}: ${e.message.split('. ')[0]} (see --help)\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(usage);
    process.exit(0);
  }
  return values;
}

export const q = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;
export const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;

/**
 * The bench's working state: everything it writes goes under `data` and is removed by cleanup()
 * unless `keep`; Debian packages it needs are installed with apt-get when run as root, unless
 * `noInstall`.
 */
export function createBench({ data, keep = false, noInstall = false }) {
  const DATA = path.resolve(data);
  /** What this run created under DATA, removed at the end (DATA may hold other things). */
  const created = new Set();
  const scratch = (name) => {
    const p = path.join(DATA, name);
    created.add(p);
    return p;
  };
  const skipped = [];
  /** How this run's measurement differs from the usual one (printed with the results). */
  const notes = new Set();

  function ensurePackage(pkg, check) {
    if (check()) return true;
    if (noInstall || process.getuid?.() !== 0 || !have('apt-get')) return false;
    process.stderr.write(`bench: installing ${pkg} with apt-get\n`);
    if (spawnSync('apt-get', ['install', '-y', '-q', pkg], { stdio: 'ignore' }).status !== 0) {
      spawnSync('apt-get', ['update', '-q'], { stdio: 'ignore' });
      spawnSync('apt-get', ['install', '-y', '-q', pkg], { stdio: 'ignore' });
    }
    return check();
  }
  const hasTime = ensurePackage('time', () => existsSync(TIME));
  if (!hasTime) {
    skipped.push('rss');
    process.stderr.write('*** bench: GNU time (/usr/bin/time) is missing: peak RSS is NOT measured ***\n');
  }
  if (!existsSync(path.join(ROOT, 'dist/cli/main.js'))) {
    process.stderr.write('bench: dist/ is missing: run `npm run build` first (npm run bench does)\n');
    process.exit(2);
  }

  // Each command runs under GNU time when present, which reports the peak RSS (getrusage
  // ru_maxrss) of exactly that process; pipelines time each stage.
  let rssSeq = 0;
  /** Runs a shell script; returns wall seconds and the peak RSS (bytes) of the stages marked with T(). */
  async function sh(build, env = {}) {
    const rssFiles = [];
    const T = () => {
      if (!hasTime) return '';
      const f = scratch(`rss-${++rssSeq}`);
      rssFiles.push(f);
      return `${TIME} -f %M -o ${q(f)} `;
    };
    const script = `set -eo pipefail; ${build(T)}`;
    const t0 = process.hrtime.bigint();
    const { code, stderr } = await new Promise((resolve, reject) => {
      const child = spawn('bash', ['-c', script], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
      let err = '';
      child.stderr.on('data', (d) => (err += d));
      child.on('error', reject);
      child.on('close', (c) => resolve({ code: c, stderr: err }));
    });
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    if (code !== 0) throw new Error(`command failed (exit ${code}): ${script}\n${stderr.trim()}`);
    let rss = null;
    for (const f of rssFiles) {
      const kb = Number((await readFile(f, 'utf8')).trim().split('\n').pop()) * 1024;
      await rm(f);
      rss = Math.max(rss ?? 0, kb);
    }
    return { secs, rss };
  }

  /** A config with one recovery code (the unlock every restore uses). */
  async function setupConfig() {
    await mkdir(DATA, { recursive: true });
    const config = scratch('config');
    await rm(config, { recursive: true, force: true });
    await mkdir(config, { recursive: true, mode: 0o700 });
    const env = { BACKUPCTL_CONFIG_DIR: config };
    const code = path.join(config, 'recovery-code');
    await sh((T) => backupctl(T, `recovery-code new --label bench --output ${q(code)}`), env);
    return { config, env, unlock: `--recovery-code-file ${q(code)}` };
  }

  /** Generates (or, after --keep, reuses) the export for one profile/size. */
  async function ensureExport(name, params) {
    const dir = scratch(name);
    const stampFile = scratch(`${name}.json`);
    const want = JSON.stringify(params);
    if (existsSync(stampFile)) {
      const s = JSON.parse(await readFile(stampFile, 'utf8'));
      if (JSON.stringify(s.params) === want) return { dir, ...s.result };
    }
    await rm(dir, { recursive: true, force: true });
    process.stderr.write(`bench: generating ${name} ...\n`);
    const result = await generateExport({ ...params, out: dir });
    await writeFile(stampFile, JSON.stringify({ params, result }));
    return { dir, ...result };
  }

  function cleanup() {
    if (keep) return;
    for (const p of created) rmSync(p, { recursive: true, force: true });
    try {
      rmdirSync(DATA); // only if now empty
    } catch {}
  }

  /** Runs the bench's main(): cleans up after it, and on Ctrl-C; exits with its code. */
  function run(main, name) {
    process.on('SIGINT', () => {
      cleanup();
      process.exit(130);
    });
    main().then(
      (code) => {
        cleanup();
        process.exit(code);
      },
      (err) => {
        cleanup();
        process.stderr.write(`${name}: ${err.message}\n`);
        process.exit(1);
      },
    );
  }

  return { data: DATA, keep, scratch, skipped, notes, hasTime, ensurePackage, sh, setupConfig, ensureExport, run };
}

export const node = q(process.execPath);
export const backupctl = (T, args) => `${T()}${node} ${q(BIN)} ${args}`;

// ---------------------------------------------------------------------------------------------
// Comparing trees: a round trip must give back every file byte for byte, and every folder.

export async function digestTree(root) {
  const out = new Map();
  async function walk(dir, rel) {
    for (const d of await readdir(dir, { withFileTypes: true })) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      const p = path.join(dir, d.name);
      if (d.isDirectory()) {
        out.set(r + '/', 'dir');
        await walk(p, r);
      } else {
        const h = createHash('sha256');
        for await (const chunk of createReadStream(p, { highWaterMark: 1 << 20 })) h.update(chunk);
        out.set(r, h.digest('hex'));
      }
    }
  }
  await walk(root, '');
  return out;
}
export function compareTrees(a, b) {
  const diff = [];
  for (const [k, v] of a) if (b.get(k) !== v) diff.push(b.has(k) ? `differs: ${k}` : `missing: ${k}`);
  for (const k of b.keys()) if (!a.has(k)) diff.push(`extra: ${k}`);
  return diff;
}

/** Bytes in the files under `dir` (what a repository occupies, give or take the blocks). */
export async function du(dir) {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += (await stat(path.join(e.parentPath, e.name))).size;
  return n;
}

/**
 * Every file under `dir` read once, into the page cache, so that a restore timed next starts with
 * its repository cached whichever way it was written: packs written with direct I/O (backupctl)
 * are not in the cache after their backup, those of tools writing through it are.
 */
export async function readInto(dir) {
  const buf = Buffer.allocUnsafe(1 << 20);
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const fh = await open(path.join(e.parentPath, e.name));
    try {
      while ((await fh.read(buf, 0, buf.length, null)).bytesRead > 0);
    } finally {
      await fh.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Statistics and output.

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
export const fmtS = (s) => (s === null || s === undefined ? '-' : s < 1 ? `${(s * 1000).toFixed(0)} ms` : `${s.toFixed(2)} s`);
export const fmtMB = (b) => (b === null || b === undefined ? '-' : `${(b / MB).toFixed(0)} MB`);
/** Sizes from bytes to gigabytes, with enough digits to compare two repositories. */
export const fmtBytes = (b) =>
  b === null || b === undefined ? '-' : b < 10_000 ? `${b} B` : b < MB ? `${(b / 1000).toFixed(1)} KB` : b < 1000 * MB ? `${(b / MB).toFixed(2)} MB` : `${(b / 1e9).toFixed(3)} GB`;
/** Columns padded to their widest cell: the first (and those in `left`) to the left, the rest right. */
export function table(rows, { left = [] } = {}) {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i] ?? '').length)));
  const cell = (c, i) => (i === 0 || left.includes(i) ? String(c ?? '').padEnd(w[i]) : String(c ?? '').padStart(w[i]));
  return rows.map((r) => r.map(cell).join('  ').trimEnd()).join('\n') + '\n';
}
