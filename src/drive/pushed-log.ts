// What this machine pushed: the SHA-256 (and MD5, size, id) of each archive under each name. pull
// compares what Drive holds now with it, because a backup swapped on Drive is not detectable by
// decryption alone: anyone holding the public recipients can make an archive that decrypts.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { configDir, ensureConfigDir } from '../config.js';
import { ioError } from '../errors.js';
import { writeFileAtomic } from '../util/fsutil.js';
import { acquireLock } from '../util/lock.js';

export interface PushedEntry {
  name: string;
  id: string;
  space: string;
  size: number;
  md5: string;
  sha256: string;
  pushed: string;
}

/** Enough history for years of daily backups; the oldest entries go first. */
const MAX_ENTRIES = 5000;

export const pushedLogPath = () => join(configDir(), 'drive-pushed.json');

export async function readPushedLog(): Promise<PushedEntry[]> {
  try {
    const j = JSON.parse(await readFile(pushedLogPath(), 'utf8')) as { entries?: PushedEntry[] };
    return Array.isArray(j.entries) ? j.entries : [];
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || err instanceof SyntaxError) return [];
    throw ioError(err, pushedLogPath(), 'read');
  }
}

export async function recordPush(e: PushedEntry): Promise<void> {
  await ensureConfigDir();
  const lock = await acquireLock(pushedLogPath(), 'the pushed-archives log', { waitMs: 5000 });
  try {
    const entries = (await readPushedLog()).filter((x) => x.id !== e.id);
    entries.push(e);
    await writeFileAtomic(pushedLogPath(), JSON.stringify({ version: 1, entries: entries.slice(-MAX_ENTRIES) }, null, 1) + '\n', 0o600);
  } finally {
    lock.release();
  }
}

/** The most recent push of `name` (or of file `id`) from this machine, if any. */
export function lastPushOf(entries: PushedEntry[], name: string, id: string, space: string): PushedEntry | undefined {
  return entries.filter((e) => e.space === space && (e.id === id || e.name === name)).at(-1);
}
