// The files cache (backupctl-repository(5) "FILES CACHE"): per backed-up directory, each file's
// size, mtime, ctime and inode at the last backup and its chunk ids, so that an unchanged file is
// not read again. Only a shortcut: an entry is used only if every chunk it names is in the
// repository's index, and a missing or damaged cache just means files are read (and, their
// chunks being in the index already, nothing is stored twice).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { configDir, ensureConfigDir } from '../config.js';
import { writeFileAtomic } from '../util/fsutil.js';

/**
 * One file as cached: "size mtimeNs ctimeNs ino " then its chunk ids in hex, concatenated. One
 * string per file, not an object of five: 100,000 files are one string each in memory.
 */
type Cached = string;

export interface FileState {
  size: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

const stateKey = (st: FileState) => `${st.size} ${st.mtimeNs} ${st.ctimeNs} ${st.ino} `;

export function filesCachePath(repoId: string, source: string): string {
  const key = createHash('sha256').update(source).digest('hex').slice(0, 16);
  return join(configDir(), 'repositories', `${repoId}.files`, `${key}.json`);
}

export class FilesCache {
  private readonly next: Record<string, Cached> = {};

  private constructor(
    private readonly path: string,
    private readonly prev: Record<string, Cached>,
  ) {}

  static async load(repoId: string, source: string): Promise<FilesCache> {
    const path = filesCachePath(repoId, source);
    let prev: Record<string, Cached> = {};
    try {
      const j = JSON.parse(await readFile(path, 'utf8')) as { version?: number; source?: string; files?: Record<string, Cached> };
      if (j?.version === 2 && j.source === source && j.files && typeof j.files === 'object') prev = j.files;
    } catch {
      /* none yet, or damaged: every file is read */
    }
    return new FilesCache(path, prev);
  }

  /** Is `path` as it was at the last backup? (whether its content will be read at all) */
  unchanged(path: string, st: FileState): boolean {
    return Object.hasOwn(this.prev, path) && typeof this.prev[path] === 'string' && this.prev[path]!.startsWith(stateKey(st));
  }

  /** The chunk ids recorded for `path` if it is exactly as it was then, else null. */
  lookup(path: string, st: FileState): Buffer[] | null {
    const c = Object.hasOwn(this.prev, path) ? this.prev[path]! : null;
    const head = stateKey(st);
    if (typeof c !== 'string' || !c.startsWith(head)) return null;
    const hex = c.slice(head.length);
    if (hex.length % 64 !== 0 || !/^[0-9a-f]*$/.test(hex)) return null;
    const ids: Buffer[] = [];
    for (let o = 0; o < hex.length; o += 64) ids.push(Buffer.from(hex.slice(o, o + 64), 'hex'));
    return ids;
  }

  record(path: string, st: FileState, chunks: readonly Buffer[]): void {
    this.next[path] = stateKey(st) + chunks.map((c) => c.toString('hex')).join('');
  }

  /** Replace the cache with what this backup saw (once its snapshot is written). */
  async save(source: string): Promise<void> {
    await ensureConfigDir(relative(configDir(), dirname(this.path)));
    await writeFileAtomic(this.path, JSON.stringify({ version: 2, source, files: this.next }), 0o600);
  }
}
