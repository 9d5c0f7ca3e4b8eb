// The published read key (backupctl-repository(5) "THE PUBLISHED READ KEY"): a small plain file,
// `read-key`, naming the generation and public half of the read key that new packs are sealed to,
// MAC'd with a key derived from the dedup key. `repo rotate --new-read-key` writes it; every
// backup machine reads it under its lock and switches to a newer generation by itself (no secret,
// no touch), and refuses a file that fails its MAC, goes back to an older generation or is gone
// once a machine has seen one: it never seals new data to a retired key without saying so.
import { timingSafeEqual } from 'node:crypto';
import { BackupctlError, corruptError } from '../errors.js';
import { b64decode, b64encode } from '../util/base64.js';
import type { Store } from '../store/store.js';
import { publicKeyOf } from '../keys/x25519.js';
import { readKeyMac, type MachineKeys, type RepoKeys } from './keys.js';

export const READ_KEY_FILE = 'read-key';
const FORMAT = 'backupctl-repository-read-key';

export interface PublishedKey {
  generation: number;
  readPublic: Uint8Array;
  /** When the rotation that made it ran (ISO 8601). */
  time: string;
}

interface ReadKeyJson {
  format: typeof FORMAT;
  version: 1;
  repository: string;
  generation: number;
  readPublic: string;
  time: string;
  mac: string;
}

/** What the MAC covers: every field but the MAC, one per line. */
const macText = (id: string, k: PublishedKey) => `${FORMAT} 1\n${id}\n${k.generation}\n${b64encode(k.readPublic)}\n${k.time}\n`;

/** The file's bytes: built before anything is written, so that a rotate fails before it changes the repository. */
export function encodeReadKey(id: string, dedupKey: Uint8Array, k: PublishedKey): Buffer {
  const j: ReadKeyJson = { format: FORMAT, version: 1, repository: id, generation: k.generation, readPublic: b64encode(k.readPublic), time: k.time, mac: b64encode(readKeyMac(dedupKey, macText(id, k))) };
  return Buffer.from(JSON.stringify(j, null, 2) + '\n');
}

/** The published read key, authenticated with the dedup key; null when none was ever published (generation 0). */
export async function readPublishedKey(store: Store, id: string, dedupKey: Uint8Array): Promise<PublishedKey | null> {
  let bytes: Buffer;
  try {
    bytes = await store.read(READ_KEY_FILE);
  } catch (err) {
    if ((err as { detail?: { missing?: string } }).detail?.missing === READ_KEY_FILE) return null;
    throw err;
  }
  const where = `${store.name}/${READ_KEY_FILE}`;
  let k: PublishedKey;
  let mac: Uint8Array;
  try {
    const j = JSON.parse(bytes.toString('utf8')) as ReadKeyJson;
    if (j?.format !== FORMAT || j.version !== 1 || typeof j.time !== 'string' || !Number.isSafeInteger(j.generation) || j.generation < 1) throw new Error('bad');
    if (j.repository !== id) throw corruptError(`${where} belongs to another repository than its marker says`);
    k = { generation: j.generation, readPublic: b64decode(j.readPublic), time: j.time };
    mac = b64decode(j.mac);
    if (k.readPublic.length !== 32) throw new Error('bad');
  } catch (err) {
    if (err instanceof BackupctlError) throw err;
    throw corruptError(`${where} is not a valid read-key file`, { file: READ_KEY_FILE });
  }
  const want = readKeyMac(dedupKey, macText(id, k));
  if (mac.length !== want.length || !timingSafeEqual(mac, want)) {
    throw corruptError(`${where} failed authentication with the dedup key (modified, or not made by backupctl repo rotate): refusing to use the read key it names`, { file: READ_KEY_FILE });
  }
  return k;
}

/**
 * The read key a machine holding `held` seals new packs to: the published one when it is newer
 * (`switched` set: the caller records it and says so), the held one when it is the same. A
 * published generation older than the held one, or none once the machine holds generation 1 or
 * later, is refused: an old copy put back, or a rotate killed between its two writes.
 */
export async function sealingKey(store: Store, held: MachineKeys): Promise<PublishedKey & { switched: boolean }> {
  const published = await readPublishedKey(store, held.id, held.dedupKey);
  const gen = published?.generation ?? 0;
  const where = `${store.name}/${READ_KEY_FILE}`;
  if (gen < held.generation) {
    const what = published ? `publishes read key generation ${gen}` : 'is missing';
    throw corruptError(
      `${where} ${what}, but this machine already seals to generation ${held.generation} (an old copy put back, or a \`backupctl repo rotate\` killed before it finished: run it again): refusing to seal new data to a retired read key`,
      { file: READ_KEY_FILE },
    );
  }
  if (gen > held.generation) return { ...published!, switched: true };
  if (published && !timingSafeEqual(published.readPublic, held.readPublic)) {
    throw corruptError(`${where} names another read key for generation ${gen} than this machine holds: run \`backupctl repo unlock ${store.name}\` to take the repository's keys again; refusing to back up`, { file: READ_KEY_FILE });
  }
  return { generation: gen, readPublic: held.readPublic, time: published?.time ?? '', switched: false };
}

/**
 * The published read key checked against the secrets an unlock gave (`repo unlock`, rotate,
 * prune): a machine must never seal to a key whose secret the keys file does not keep.
 */
export async function publishedReadKey(store: Store, keys: RepoKeys): Promise<PublishedKey> {
  const published = await readPublishedKey(store, keys.id, keys.dedupKey);
  const generation = published?.generation ?? 0;
  const where = `${store.name}/${READ_KEY_FILE}`;
  const secret = generation === keys.generation ? keys.readSecret : keys.retiredReadSecrets[generation];
  if (!secret) {
    throw corruptError(
      `${where} publishes read key generation ${generation}, but the keys file holds generations 0 to ${keys.generation} only (it changed since it was unlocked: run this again; or an older copy of it was put back)`,
      { file: READ_KEY_FILE },
    );
  }
  const readPublic = publicKeyOf(secret);
  if (published && !timingSafeEqual(published.readPublic, readPublic)) {
    throw corruptError(`${where} names a read key for generation ${generation} whose secret is not in the keys file: refusing to seal to it`, { file: READ_KEY_FILE });
  }
  return { generation, readPublic, time: published?.time ?? '' };
}
