// A repository on a store (backupctl-repository(5) "LAYOUT"): the plain marker file, the `keys`
// file sealed to the config's recipients, and the machine's own copy of the keys it needs to back
// up (the dedup key and the read key's public half) in the config directory.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupctlError, Exit, corruptError, ioError, noKeyError } from '../errors.js';
import { configDir, ensureConfigDir } from '../config.js';
import { writeFileAtomic } from '../util/fsutil.js';
import { b64decode, b64encode } from '../util/base64.js';
import type { ParsedHeader } from '../archive/header.js';
import type { Identity, Recipient } from '../keys/types.js';
import type { Store } from '../store/store.js';
import { publicKeyOf } from '../keys/x25519.js';
import type { MachineKeys, RepoKeys } from './keys.js';
import { seal, SealedFile } from './sealed.js';

export const MARKER = 'backupctl-repository';
export const KEYS_FILE = 'keys';
const KEYS_MAGIC = 'backupctl-repository-keys 1\n';

interface Marker {
  format: 'backupctl-repository';
  version: 1;
  id: string;
  created: string;
}

/** The repository id from the marker, which also says that `store` is a repository. */
export async function repositoryId(store: Store): Promise<string> {
  if (!(await store.exists(MARKER))) throw new BackupctlError(Exit.io, `${store.name} is not a backupctl repository (no ${MARKER} file); create one with: backupctl repo init ${store.name}`);
  let m: Marker;
  try {
    m = JSON.parse((await store.read(MARKER)).toString('utf8')) as Marker;
  } catch {
    throw corruptError(`${store.name}/${MARKER} is damaged`);
  }
  if (m?.format !== MARKER || m.version !== 1 || typeof m.id !== 'string' || !/^[0-9a-f]{32}$/.test(m.id)) {
    throw corruptError(`${store.name}/${MARKER}: not a version 1 repository marker`);
  }
  return m.id;
}

const machineKeyPath = (id: string) => join(configDir(), 'repositories', `${id}.json`);

/** Keep the keys a backup needs in the config directory (0600; nothing that reads a pack). */
export async function saveMachineKeys(k: MachineKeys): Promise<void> {
  const sign = k.signPublic ? { signPublic: b64encode(k.signPublic) } : {};
  const j = { repository: k.id, readPublic: b64encode(k.readPublic), generation: k.generation, ...sign, dedupKey: b64encode(k.dedupKey) };
  await ensureConfigDir('repositories'); // writeFileAtomic makes no directory: the config's are checked
  await writeFileAtomic(machineKeyPath(k.id), JSON.stringify(j, null, 2) + '\n', 0o600);
}

/** This machine's keys for repository `id`, or null when it never initialised or unlocked it. */
export async function loadMachineKeys(id: string): Promise<MachineKeys | null> {
  let text: string;
  try {
    text = await readFile(machineKeyPath(id), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError(err, machineKeyPath(id), 'read');
  }
  try {
    const j = JSON.parse(text) as { repository: string; readPublic: string; generation?: number; signPublic?: string; dedupKey: string };
    // A file written before read keys had generations holds generation 0 and no signing key.
    const signPublic = j.signPublic === undefined ? undefined : b64decode(j.signPublic);
    const k = { id: j.repository, readPublic: b64decode(j.readPublic), generation: j.generation ?? 0, signPublic, dedupKey: b64decode(j.dedupKey) };
    if (k.id !== id || k.readPublic.length !== 32 || k.dedupKey.length !== 32 || !Number.isSafeInteger(k.generation) || k.generation < 0 || (signPublic && signPublic.length !== 32)) throw new Error('bad');
    return k;
  } catch {
    throw new BackupctlError(Exit.io, `${machineKeyPath(id)} is damaged; delete it and run: backupctl repo unlock REPO`);
  }
}

export const noMachineKeys = (store: Store) =>
  noKeyError(`this machine holds no key for the repository ${store.name}: run \`backupctl repo unlock ${store.name}\` once (with a recovery code or security key)`);

/** The keys file's bytes, sealed to `recipients` (retired read secrets only once there are any). */
export function sealKeys(keys: RepoKeys, recipients: readonly Recipient[]): Buffer[] {
  const retired = keys.retiredReadSecrets.length ? { retiredReadSecrets: keys.retiredReadSecrets.map(b64encode) } : {};
  const payload = { repository: keys.id, readSecret: b64encode(keys.readSecret), dedupKey: b64encode(keys.dedupKey), ...retired };
  const plain = Buffer.from(KEYS_MAGIC + JSON.stringify(payload), 'utf8');
  try {
    return seal(plain, recipients);
  } finally {
    plain.fill(0);
  }
}

/** Create the repository: marker last, so a half-made one is never taken for a repository. */
export async function initRepository(store: Store, keys: RepoKeys, recipients: readonly Recipient[]): Promise<void> {
  if (await store.exists(MARKER)) throw new BackupctlError(Exit.io, `${store.name} is already a backupctl repository`);
  if (!(await store.isEmpty())) throw new BackupctlError(Exit.io, `${store.name} is not empty: a new repository goes into an empty or new directory`);
  await store.write(KEYS_FILE, sealKeys(keys, recipients));
  const marker: Marker = { format: MARKER, version: 1, id: keys.id, created: new Date().toISOString() };
  try {
    await store.write(MARKER, [Buffer.from(JSON.stringify(marker, null, 2) + '\n')], { exclusive: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new BackupctlError(Exit.io, `${store.name} is already a backupctl repository`);
    throw err;
  }
}

/** The header of the keys file, to find out how to unlock it (no key needed). */
export async function keysFile(store: Store): Promise<SealedFile> {
  return SealedFile.fromBytes(KEYS_FILE, await store.read(KEYS_FILE));
}

/** Open the keys file with a file key `unlock` got from one of its slots (a code, a security key). */
export async function unlockKeys(store: Store, id: string, unlock: (h: ParsedHeader) => Promise<Uint8Array>): Promise<RepoKeys> {
  return unlockKeysFile(store, id, await store.read(KEYS_FILE), unlock);
}

/** unlockKeys of the keys file's `bytes` as read (rotate compares them with the file under its lock). */
export async function unlockKeysFile(store: Store, id: string, bytes: Buffer, unlock: (h: ParsedHeader) => Promise<Uint8Array>): Promise<RepoKeys> {
  const file = await SealedFile.fromBytes(KEYS_FILE, bytes);
  const fileKey = await unlock(file.header);
  const identity: Identity = { description: 'unlocked key', unwrap: async () => new Uint8Array(fileKey) };
  await file.unlock(identity);
  fileKey.fill(0);
  const plain = await file.readAll();
  const text = plain.toString('utf8');
  plain.fill(0);
  if (!text.startsWith(KEYS_MAGIC)) throw corruptError(`${store.name}/${KEYS_FILE} is not a keys file`);
  const j = JSON.parse(text.slice(KEYS_MAGIC.length)) as { repository: string; readSecret: string; dedupKey: string; retiredReadSecrets?: string[] };
  if (j.repository !== id) throw corruptError(`${store.name}/${KEYS_FILE} belongs to another repository than its marker says`);
  if (j.retiredReadSecrets !== undefined && !Array.isArray(j.retiredReadSecrets)) throw corruptError(`${store.name}/${KEYS_FILE} is not a keys file`);
  const readSecret = b64decode(j.readSecret);
  const retiredReadSecrets = (j.retiredReadSecrets ?? []).map((r) => b64decode(r));
  return { id, readSecret, readPublic: publicKeyOf(readSecret), generation: retiredReadSecrets.length, retiredReadSecrets, dedupKey: b64decode(j.dedupKey) };
}
