// What a repository file is, told without any key (`backupctl inspect FILE`): the marker, the
// published read key and lock files by their names and JSON, sealed files by their slot types
// (the keys file, sealed to recipients like an archive, by its name beside the marker).
import { readFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Slot } from '../keys/types.js';
import { INDEX_SLOT, PACK_SLOT, SNAPSHOT_SLOT } from './keys.js';
import { KEYS_FILE, MARKER } from './repository.js';
import { READ_KEY_FILE } from './read-key.js';

// Looked up with Object.hasOwn: a slot type or file name such as "constructor" is no kind.
const SEALED: Record<string, string> = {
  [PACK_SLOT]: 'pack (chunks of content or trees; opens with the repository read key)',
  [INDEX_SLOT]: 'index file (which pack holds each chunk; opens with the dedup key)',
  [SNAPSHOT_SLOT]: 'snapshot file (time, source, tree; opens with the dedup key)',
};

const PLAIN: Record<string, string> = {
  [MARKER]: 'marker (format, version, id; no secret)',
  [READ_KEY_FILE]: 'published read key (each read key generation after the first: the public key packs are sealed to and a signing key, signed by the generation before; no secret)',
};

const plainJson = (path: string) => readFile(path, 'utf8').then((t) => JSON.parse(t) as unknown, () => null);

/** A plain repository file (marker, published read key, lock): what it is and its content, or null. */
export async function plainRepositoryFile(path: string): Promise<{ kind: string; content: unknown } | null> {
  const name = basename(path);
  const isLock = basename(dirname(path)) === 'locks' && /^[0-9a-f]{16}$/.test(name);
  const kind = isLock ? 'lock (who holds it, since when)' : Object.hasOwn(PLAIN, name) ? PLAIN[name] : undefined;
  if (!kind) return null;
  const content = await plainJson(path);
  return content === null ? null : { kind, content };
}

/** The kind of a sealed repository file from its slots, or null when it is not one. */
export async function sealedRepositoryFile(path: string, slots: readonly Slot[]): Promise<string | null> {
  const kind = slots.length === 1 && Object.hasOwn(SEALED, slots[0]!.type) ? SEALED[slots[0]!.type] : undefined;
  if (kind) return kind;
  const marker = await readFile(join(dirname(path), MARKER), 'utf8').catch(() => null);
  if (basename(path) !== KEYS_FILE || marker === null) return null;
  // How many read secrets it holds is public: one per generation the read-key file beside it names.
  const published = (await plainJson(join(dirname(path), READ_KEY_FILE))) as { generation?: unknown } | null;
  const gen = Number.isSafeInteger(published?.generation) ? (published!.generation as number) : 0;
  const secrets = gen === 0 ? 'the read secret' : `${gen + 1} read secrets: generation ${gen}, which new packs are sealed to, and ${gen} retired for older packs`;
  return `keys file (the dedup key and ${secrets}; sealed to the recipients below)`;
}
