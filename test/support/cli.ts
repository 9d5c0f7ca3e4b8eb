// Shared helpers for end-to-end tests of the BUILT CLI (`npx tsc -p .` first; `npm test` does):
// run `node bin/backupctl.js` with a private config dir, a stdin that is never a terminal and no
// controlling terminal, make recovery codes the way a user does, build a realistic export tree,
// and snapshot trees so tests can assert "byte-identical" and "unchanged".
import { execa } from 'execa';
import { afterEach } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { chmod, lstat, lutimes, mkdir, mkdtemp, readFile, readdir, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = join(REPO, 'bin', 'backupctl.js');

/** A Node stack frame in output: user-facing failures must never show one. */
export const STACK_TRACE = /\n\s+at /;

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  /** BACKUPCTL_CONFIG_DIR for this run. */
  configDir: string;
  /** Extra environment (the parent's environment is NOT inherited, so nothing leaks in). */
  env?: Record<string, string>;
  /**
   * stdin contents; default '' (a pipe that ends at once: stdin is never a terminal).
   * null leaves stdin an open pipe, for the far end of `a.pipe(b)`.
   */
  input?: string | Uint8Array | null;
  /** Read stdin from this file instead. */
  inputFile?: string;
  cwd?: string;
  timeoutMs?: number;
}

/**
 * Node's own cache of compiled modules, shared by every CLI run of the suite: a run starts with a
 * sixth less CPU (thousands of runs), and nothing the CLI does depends on it.
 */
const COMPILE_CACHE = join(tmpdir(), 'backupctl-test-compile-cache');

function cliEnv(o: CliOptions): Record<string, string> {
  // PATH only so child tools resolve; HOME so nothing falls back to the real user's config.
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: o.configDir, BACKUPCTL_CONFIG_DIR: o.configDir, NODE_COMPILE_CACHE: COMPILE_CACHE, ...(o.env ?? {}) };
}

/**
 * How every run is started: no inherited environment, stdin never a terminal, a time limit, and
 * output kept verbatim (execa strips a final newline by default, even from a Buffer: an archive
 * that happens to end in 0x0a would come back one byte short).
 */
function runOptions(o: CliOptions) {
  return {
    reject: false,
    extendEnv: false,
    stripFinalNewline: false,
    env: cliEnv(o),
    cwd: o.cwd,
    timeout: o.timeoutMs ?? 30_000,
    // A session of its own: no controlling terminal, as under cron, so a test run from a terminal
    // sees the CLI refuse to prompt instead of prompting on /dev/tty (test/e2e/prompts.test.ts).
    detached: true,
    ...(o.inputFile ? { inputFile: o.inputFile } : o.input === null ? {} : { input: o.input ?? '' }),
  } as const;
}

function checkTimeout(r: { timedOut: boolean }, args: string[]): void {
  if (r.timedOut) throw new Error(`backupctl ${args.join(' ')} timed out (did it wait for stdin?)`);
}

/** Start the CLI without waiting (for signals, locks, pipes). Never rejects on a non-zero exit. */
export function startCli(args: string[], o: CliOptions) {
  return execa(process.execPath, [BIN, ...args], runOptions(o));
}

/**
 * The consent URL a `drive login` started with no browser prints on stderr, and what it had
 * printed up to there; rejects if it exits first.
 */
export function consentUrl(child: ReturnType<typeof startCli>): Promise<{ url: string; printed: string }> {
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /^(http:\/\/127\.0\.0\.1:\d+\/auth\?\S+)$/m.exec(err);
      if (m) resolve({ url: m[1]!, printed: err });
    });
    void child.then(() => reject(new Error(`login exited before printing the URL: ${err}`)));
  });
}

/** Run the CLI to completion: {exitCode, stdout, stderr} as text. */
export async function runCli(args: string[], o: CliOptions): Promise<CliResult> {
  const r = await startCli(args, o);
  checkTimeout(r, args);
  return { exitCode: r.exitCode ?? -1, stdout: String(r.stdout), stderr: String(r.stderr) };
}

/** Run the CLI with stdout captured as raw bytes (e.g. `create -o -`). */
export async function runCliBytes(args: string[], o: CliOptions): Promise<{ exitCode: number; stdout: Buffer; stderr: string }> {
  const r = await execa(process.execPath, [BIN, ...args], { ...runOptions(o), encoding: 'buffer' });
  checkTimeout(r, args);
  return { exitCode: r.exitCode ?? -1, stdout: Buffer.from(r.stdout), stderr: Buffer.from(r.stderr).toString('utf8') };
}

/** Parse the one JSON object a `--json` run must print on stdout (fails on anything else). */
export function onlyJson<T = Record<string, unknown>>(r: { stdout: string }): T {
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  if (lines.length !== 1) throw new Error(`expected exactly one JSON line on stdout, got ${lines.length}:\n${r.stdout}`);
  return JSON.parse(lines[0]!) as T;
}

/** A temp dir for one test, and its config dir (not created: the CLI creates it 0700). */
export async function makeHome(prefix = 'backupctl-e2e-'): Promise<{ home: string; configDir: string; cleanup: () => Promise<void> }> {
  const home = await mkdtemp(join(tmpdir(), prefix));
  return { home, configDir: join(home, 'config'), cleanup: () => rm(home, { recursive: true, force: true }) };
}

export interface RecoveryCode {
  code: string;
  /** A 0600 file holding the code, for --recovery-code-file. */
  file: string;
  label: string;
  fingerprint: string;
}

/** `backupctl recovery-code new --output FILE`: the code is recorded as a recipient in the config. */
export async function newRecoveryCode(configDir: string, file: string, label?: string): Promise<RecoveryCode> {
  const r = await runCli(['recovery-code', 'new', '--json', '--output', file, ...(label ? ['--label', label] : [])], { configDir });
  if (r.exitCode !== 0) throw new Error(`recovery-code new failed (${r.exitCode}): ${r.stderr}`);
  const j = onlyJson<{ label: string; fingerprint: string }>(r);
  return { code: (await readFile(file, 'utf8')).trim(), file, label: j.label, fingerprint: j.fingerprint };
}

// ---------------------------------------------------------------------------------------------
// A realistic small WhatsApp-style export.

/** Fixed times with millisecond parts, so a restore that rounds to seconds is caught. */
const T0 = Date.UTC(2024, 2, 12, 14, 2, 11, 123) / 1000;

/** Names with non-ASCII characters, in both Unicode normal forms (in different directories). */
export const NFC_NAME = 'Café Ünïcödé 😀.txt'.normalize('NFC');
export const NFD_NAME = 'Résumé naïve.txt'.normalize('NFD');

function chatLog(lines: number): string {
  const who = ['Alice', 'Bob', 'Zoë', 'Małgorzata', '李雷'];
  const words = 'ok yes no see you tomorrow at the station 🙂 thanks haha photo sent lunch? running late call me'.split(' ');
  const out: string[] = [];
  for (let i = 0; i < lines; i++) {
    const d = new Date((T0 + i * 97) * 1000);
    const stamp = `[${String(d.getUTCDate()).padStart(2, '0')}/${String(d.getUTCMonth() + 1).padStart(2, '0')}/${d.getUTCFullYear()}, ${d.toISOString().slice(11, 19)}]`;
    const text = Array.from({ length: 3 + (i % 9) }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(' ');
    out.push(`${stamp} ${who[i % who.length]}: ${i % 40 === 5 ? `IMG-20240312-WA${String(i).padStart(4, '0')}.jpg (file attached)` : text}`);
  }
  return out.join('\n') + '\n';
}

const jpeg = (n: number) => Buffer.concat([Buffer.from('ffd8ffe000104a46494600010100000100010000', 'hex'), randomBytes(n), Buffer.from('ffd9', 'hex')]);
const opus = (n: number) => Buffer.concat([Buffer.from('OggS\0\x02', 'latin1'), randomBytes(22), Buffer.from('OpusHead', 'latin1'), randomBytes(n)]);
const mp4 = (n: number) => Buffer.concat([Buffer.from('0000001c6674797069736f6d0000020069736f6d69736f32', 'hex'), randomBytes(n)]);

export interface TreeSpec {
  /** Relative path → what it is. Directories are listed too (with their mode). */
  [path: string]: { type: 'file'; mode: number; data: Buffer } | { type: 'dir'; mode: number } | { type: 'symlink'; target: string };
}

/** The tree makeExportTree writes (contents are random per call). */
export function exportTreeSpec(): TreeSpec {
  const s: TreeSpec = {
    '_chat.txt': { type: 'file', mode: 0o640, data: Buffer.from(chatLog(1500)) },
    'Media': { type: 'dir', mode: 0o755 },
    'Media/WhatsApp Images': { type: 'dir', mode: 0o755 },
    'Media/WhatsApp Images/Sent': { type: 'dir', mode: 0o700 },
    'Media/WhatsApp Voice Notes': { type: 'dir', mode: 0o755 },
    'Media/WhatsApp Voice Notes/202411': { type: 'dir', mode: 0o755 },
    'Media/WhatsApp Video': { type: 'dir', mode: 0o750 },
    'Media/WhatsApp Documents': { type: 'dir', mode: 0o755 },
    'Media/WhatsApp Documents/Private': { type: 'dir', mode: 0o755 },
    'Media/WhatsApp Stickers': { type: 'dir', mode: 0o755 }, // empty
    'Media/WhatsApp Documents/contacts.json': { type: 'file', mode: 0o600, data: Buffer.from(JSON.stringify({ contacts: Array.from({ length: 200 }, (_, i) => ({ name: `Contact ${i}`, phone: `+4420${7000000 + i}` })) }, null, 2)) },
    [`Media/WhatsApp Documents/${NFC_NAME}`]: { type: 'file', mode: 0o644, data: Buffer.from('NFC name\n') },
    [`Media/WhatsApp Documents/Private/${NFD_NAME}`]: { type: 'file', mode: 0o644, data: Buffer.from('NFD name\n') },
    'Media/WhatsApp Documents/run-me.sh': { type: 'file', mode: 0o755, data: Buffer.from('#!/bin/sh\necho hello\n') },
    'Media/WhatsApp Documents/empty.txt': { type: 'file', mode: 0o644, data: Buffer.alloc(0) },
    'Media/WhatsApp Video/VID-20240312-WA0003.mp4': { type: 'file', mode: 0o644, data: mp4(700_000) },
    'latest-photo.jpg': { type: 'symlink', target: 'Media/WhatsApp Images/IMG-20240312-WA0001.jpg' },
    'Media/WhatsApp Documents/dangling-link': { type: 'symlink', target: '../nowhere/at all' },
  };
  for (let i = 1; i <= 6; i++) {
    s[`Media/WhatsApp Images/IMG-20240312-WA000${i}.jpg`] = { type: 'file', mode: 0o644, data: jpeg(20_000 + i * 13_000) };
  }
  s['Media/WhatsApp Images/Sent/IMG-20240313-WA0010.jpg'] = { type: 'file', mode: 0o640, data: jpeg(45_000) };
  for (let i = 1; i <= 4; i++) {
    s[`Media/WhatsApp Voice Notes/202411/PTT-20241105-WA000${i}.opus`] = { type: 'file', mode: 0o644, data: opus(5_000 * i) };
  }
  return s;
}

/** Write `spec` under `root` (created): modes set explicitly (no umask), fixed ms-precision mtimes. */
export async function writeTree(root: string, spec: TreeSpec): Promise<void> {
  await mkdir(root, { recursive: true });
  const paths = Object.keys(spec).sort();
  for (const p of paths) {
    const e = spec[p]!;
    const abs = join(root, p);
    if (e.type === 'dir') await mkdir(abs, { recursive: true });
    else {
      await mkdir(join(abs, '..'), { recursive: true });
      if (e.type === 'file') await writeFile(abs, e.data);
      else await symlink(e.target, abs);
    }
  }
  // Modes and times last, deepest first, since creating entries changes a directory's mtime.
  for (const [i, p] of paths.reverse().entries()) {
    const e = spec[p]!;
    const abs = join(root, p);
    const t = T0 + i * 3600.25;
    if (e.type === 'symlink') {
      await lutimes(abs, t, t); // a link's own mode means nothing on Linux; its time is restored
      continue;
    }
    await chmod(abs, e.mode);
    await utimes(abs, t, t);
  }
}

/** A realistic small export under `root`: chat log, photos, voice notes, a video, nested and empty dirs, unicode names, symlinks. */
export async function makeExportTree(root: string): Promise<TreeSpec> {
  const spec = exportTreeSpec();
  await writeTree(root, spec);
  return spec;
}

// ---------------------------------------------------------------------------------------------
// Tree snapshots.

export interface SnapEntry {
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  /** Milliseconds (0 when the snapshot was taken without times). */
  mtimeMs: number;
  size: number;
  sha256?: string;
  target?: string;
}

/** Every entry under `root` (not root itself), keyed by relative path; never follows links. */
export async function snapshot(root: string, opts: { times?: boolean } = {}): Promise<Record<string, SnapEntry>> {
  const out: Record<string, SnapEntry> = {};
  async function walk(abs: string, rel: string): Promise<void> {
    for (const name of (await readdir(abs)).sort()) {
      const a = join(abs, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = await lstat(a);
      const type = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
      const e: SnapEntry = { type, mode: st.mode & 0o7777, mtimeMs: opts.times === false ? 0 : Math.round(st.mtimeMs), size: type === 'dir' ? 0 : st.size };
      if (type === 'file') e.sha256 = createHash('sha256').update(await readFile(a)).digest('hex');
      if (type === 'symlink') {
        e.target = await readlink(a);
        e.mode = 0;
      }
      out[r] = e;
      if (type === 'dir') await walk(a, r);
    }
  }
  await walk(root, '');
  return out;
}

/** Does `path` exist (without following a final link)? */
export const exists = (path: string) => lstat(path).then(() => true, () => false);

const isStopped = async (pid: number) => /\) T /.test(await readFile(`/proc/${pid}/stat`, 'latin1').catch(() => ''));

/** Processes a test waited to see stopped: any still stopped after the test (it failed before its SIGCONT) is killed, not left holding its locks. */
const stoppedChildren = new Set<number>();
afterEach(async () => {
  for (const pid of stoppedChildren) if (await isStopped(pid)) process.kill(pid, 'SIGKILL');
  stoppedChildren.clear();
});

/** Until the process `pid` is stopped (state T in /proc/PID/stat: it sent itself SIGSTOP at a test kill point). */
export async function stopped(pid: number): Promise<void> {
  stoppedChildren.add(pid);
  for (const end = Date.now() + 60_000; Date.now() < end; await new Promise((r) => setTimeout(r, 5))) {
    if (await isStopped(pid)) return;
  }
  throw new Error(`pid ${pid} never stopped`);
}
