// Snapshot files (backupctl-repository(5) "SNAPSHOTS"): one small file per backup, written last,
// after every pack and index file it needs: its presence is the backup's commit. Sealed to the
// dedup key, so a backup machine can list snapshots (times, sizes), but the tree they point at
// lives in packs, under the read key.
import { randomBytes } from 'node:crypto';
import { corruptError, usageError } from '../errors.js';
import type { Store } from '../store/store.js';
import { readInTurn } from '../store/read-ahead.js';
import { SNAPSHOT_SLOT, type DedupKeys } from './keys.js';
import { seal, SealedFile } from './sealed.js';

export interface Snapshot {
  /** File name under snapshots/: 16 hex digits. */
  id: string;
  /** ISO 8601 UTC, millisecond precision. */
  time: string;
  host: string;
  /** The directory backed up (absolute path). */
  source: string;
  /** Tree blob ids (hex), in order: their plaintexts concatenated are the tree. */
  tree: string[];
  stats: { entries: number; files: number; bytes: number; newChunks: number; storedBytes: number };
}

const MAGIC = 'backupctl-snapshot 1\n';

/** Write a new snapshot file (never replacing one); the snapshot and the bytes it took. */
export async function writeSnapshot(store: Store, dedup: DedupKeys, s: Omit<Snapshot, 'id'>): Promise<[Snapshot, number]> {
  const id = randomBytes(8).toString('hex');
  const snap = { id, ...s };
  const sealed = seal(Buffer.from(MAGIC + JSON.stringify(snap), 'utf8'), [dedup.recipient(SNAPSHOT_SLOT)]);
  await store.write(`snapshots/${id}`, sealed, { exclusive: true });
  return [snap, sealed.reduce((a, b) => a + b.length, 0)];
}

function parse(plain: Buffer, name: string): Snapshot {
  const text = plain.toString('utf8');
  const bad = () => corruptError(`${name} is not a valid snapshot file`, { file: name });
  if (!text.startsWith(MAGIC)) throw bad();
  let j: Snapshot;
  try {
    j = JSON.parse(text.slice(MAGIC.length)) as Snapshot;
  } catch {
    throw bad();
  }
  const counts = ['entries', 'files', 'bytes', 'newChunks', 'storedBytes'] as const;
  if (
    typeof j?.time !== 'string' || Number.isNaN(Date.parse(j.time)) || typeof j.host !== 'string' || typeof j.source !== 'string' ||
    !Array.isArray(j.tree) || !j.tree.every((t) => typeof t === 'string' && /^[0-9a-f]{64}$/.test(t)) ||
    typeof j.stats !== 'object' || j.stats === null || !counts.every((k) => Number.isSafeInteger(j.stats[k]) && j.stats[k] >= 0)
  ) throw bad();
  // The name is what the storage shows; the file must agree (a renamed file is not trusted).
  if (`snapshots/${j.id}` !== name) throw bad();
  return j;
}

/** Every snapshot, oldest first. */
export async function listSnapshots(store: Store, dedup: DedupKeys): Promise<Snapshot[]> {
  const identity = dedup.identity(SNAPSHOT_SLOT);
  const out: Snapshot[] = [];
  await readInTurn(store, await store.list('snapshots'), async (f, bytes) => {
    if (!bytes) return; // forgotten meanwhile
    const file = await SealedFile.fromBytes(f.path, bytes);
    await file.unlock(identity);
    out.push(parse(await file.readAll(), f.path));
  });
  return out.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
}

/** SNAPSHOT (an id or a unique prefix of one) or "latest". */
export function pickSnapshot(all: Snapshot[], which: string): Snapshot {
  if (all.length === 0) throw usageError('the repository has no snapshot yet');
  if (which === 'latest') return all[all.length - 1]!;
  const hits = all.filter((s) => s.id.startsWith(which.toLowerCase()));
  if (hits.length === 1) return hits[0]!;
  throw usageError(hits.length ? `snapshot ${JSON.stringify(which)} is ambiguous (${hits.length} match)` : `no snapshot ${JSON.stringify(which)} in the repository (see: backupctl snapshots)`);
}
