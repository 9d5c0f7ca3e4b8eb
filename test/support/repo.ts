// Helpers for the repository tests (test/e2e/repo*.test.ts): run repository commands with
// --json, and measure what a repository stores from its files on disk.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { onlyJson, runCli, type CliOptions } from './cli.js';

export interface BackupJson {
  ok: true;
  snapshot: string;
  entries: number;
  files: number;
  bytes: number;
  bytesRead: number;
  newChunks: number;
  storedBytes: number;
  packs: number;
}

/** Run a command that must succeed; its --json object. */
export async function ok<T = Record<string, unknown>>(args: string[], o: CliOptions): Promise<T> {
  const r = await runCli(['--json', ...args], o);
  if (r.exitCode !== 0) throw new Error(`backupctl ${args.join(' ')} exited ${r.exitCode}: ${r.stderr}`);
  return onlyJson<T>(r);
}

export const backupJson = (dir: string, repo: string, o: CliOptions) => ok<BackupJson>(['backup', dir, '--repo', repo], o);

/** Every file of the repository (temporary leftovers included) with its size. */
export async function repoFiles(repo: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const walk = async (rel: string) => {
    for (const e of await readdir(join(repo, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(p);
      else out.set(p, (await stat(join(repo, p))).size);
    }
  };
  await walk('');
  return out;
}

/** Bytes of the repository's files, leaving out locks (which come and go). */
export async function repoBytes(repo: string): Promise<number> {
  let n = 0;
  for (const [p, size] of await repoFiles(repo)) if (!p.startsWith('locks/')) n += size;
  return n;
}
