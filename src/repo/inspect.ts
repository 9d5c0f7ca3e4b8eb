// What a repository file is, told without any key (`backupctl inspect FILE`): the marker and
// lock files by their names and JSON, sealed files by their slot types (the keys file, sealed to
// recipients like an archive, by its name beside the marker).
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Slot } from '../keys/types.js';
import { INDEX_SLOT, PACK_SLOT, SNAPSHOT_SLOT } from './keys.js';
import { KEYS_FILE, MARKER } from './repository.js';

const SEALED: Record<string, string> = {
  [PACK_SLOT]: 'pack (chunks of content or trees; opens with the repository read key)',
  [INDEX_SLOT]: 'index file (which pack holds each chunk; opens with the dedup key)',
  [SNAPSHOT_SLOT]: 'snapshot file (time, source, tree; opens with the dedup key)',
};

/** A plain repository file (marker, lock): what it is and its content, or null. */
export async function plainRepositoryFile(path: string): Promise<{ kind: string; content: unknown } | null> {
  const name = basename(path);
  const isLock = basename(dirname(path)) === 'locks' && /^[0-9a-f]{16}$/.test(name);
  if (name !== MARKER && !isLock) return null;
  try {
    const content = JSON.parse(await readFile(path, 'utf8')) as unknown;
    return { kind: name === MARKER ? 'marker (format, version, id; no secret)' : 'lock (who holds it, since when)', content };
  } catch {
    return null;
  }
}

/** The kind of a sealed repository file from its slots, or null when it is not one. */
export async function sealedRepositoryFile(path: string, slots: readonly Slot[]): Promise<string | null> {
  const kind = slots.length === 1 ? SEALED[slots[0]!.type] : undefined;
  if (kind) return kind;
  const marker = await readFile(join(dirname(path), MARKER), 'utf8').catch(() => null);
  return basename(path) === KEYS_FILE && marker !== null ? 'keys file (the read and dedup keys, sealed to the recipients below)' : null;
}
