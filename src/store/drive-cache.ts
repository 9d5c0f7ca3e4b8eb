// What this machine remembers of a repository on Drive (backupctl-repository(5) "ON GOOGLE
// DRIVE"), in the config directory: the ids of its folders, its marker, and copies of its
// small files (index, snapshot, keys files) by Drive id and MD5, so that a run does not
// download again what it read before (a file replaced on Drive has another MD5). Disposable: deleted, it costs calls, never data; the
// repository on Drive stays the only authority (every run lists it once after taking its lock).
import { createHash } from 'node:crypto';
import { readFile, rename, rm, unlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { configDir, ensureConfigDir } from '../config.js';
import { writeFileAtomic } from '../util/fsutil.js';

export interface CachedState {
  version: 1;
  /** The repository folder's Drive id. */
  root: string;
  /** Folder path ("index/", "data/3/") -> Drive id. */
  folders: Record<string, string>;
  /** The marker's text, once read (it never changes). */
  marker?: string;
  /** This machine's released lock file, taken again by its next lock. */
  freeLock?: string;
}

export class DriveCache {
  readonly dir: string;
  constructor(space: string, name: string) {
    const key = createHash('sha256').update(`${space}\0${name}`).digest('hex').slice(0, 24);
    this.dir = join(configDir(), 'drive-repositories', key);
  }

  private get statePath() {
    return join(this.dir, 'state.json');
  }

  private async ensure(sub: string): Promise<string> {
    return ensureConfigDir(relative(configDir(), join(this.dir, sub)));
  }

  async load(): Promise<CachedState | null> {
    try {
      const j = JSON.parse(await readFile(this.statePath, 'utf8')) as CachedState;
      if (j?.version === 1 && typeof j.root === 'string' && j.folders && typeof j.folders === 'object') return j;
    } catch {
      /* none, or damaged: found again on Drive */
    }
    return null;
  }

  /** Best effort: a cache that cannot be written only costs calls next time. */
  async save(s: CachedState): Promise<void> {
    await this.ensure('').then(() => writeFileAtomic(this.statePath, JSON.stringify(s) + '\n', 0o600)).catch(() => {});
  }

  /** Forget everything (the repository folder is not what the cache says). */
  async reset(): Promise<void> {
    await unlink(this.statePath).catch(() => {});
    await rm(join(this.dir, 'files'), { recursive: true, force: true }).catch(() => {});
  }

  private filePath(id: string, md5: string) {
    return join(this.dir, 'files', `${id}-${md5}`);
  }

  /** The copy of Drive file `id` whose content has `md5`, if held and intact. */
  async content(id: string, md5: string): Promise<Buffer | null> {
    const b = await readFile(this.filePath(id, md5)).catch(() => null);
    return b && createHash('md5').update(b).digest('hex') === md5 ? b : null;
  }

  async keep(id: string, md5: string, data: Buffer): Promise<void> {
    await this.ensure('files').then(() => writeFileAtomic(this.filePath(id, md5), data, 0o600)).catch(() => {});
  }

  /** Keep a spooled file (already synced) as the copy of `id`, or delete it. */
  async adopt(id: string, md5: string, spooled: string): Promise<void> {
    await this.ensure('files').then(() => rename(spooled, this.filePath(id, md5))).catch(() => unlink(spooled).catch(() => {}));
  }

  async drop(id: string, md5: string): Promise<void> {
    await unlink(this.filePath(id, md5)).catch(() => {});
  }
}
