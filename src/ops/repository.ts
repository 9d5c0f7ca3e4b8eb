// Use cases that set up a repository's keys: create one (no secret needed: the keys file is
// sealed to public recipients), let a machine back up into one after a single unlock, tell a
// backup which read key to seal to, and rotate: reseal the keys to other recipients, optionally
// with a new read key for the data written from then on.
import type { ParsedHeader } from '../archive/header.js';
import type { Recipient } from '../keys/types.js';
import { slotFingerprint } from '../keys/x25519.js';
import type { Store } from '../store/store.js';
import { BackupctlError, Exit } from '../errors.js';
import { forgetKeys, newRepoKeys, signPublicOf, withNewReadKey, type MachineKeys, type RepoKeys } from '../repo/keys.js';
import { lockRepository } from '../repo/lock.js';
import { READ_KEY_FILE, encodeReadKey, publishedReadKey, sealingKey } from '../repo/read-key.js';
import { SealedFile } from '../repo/sealed.js';
import { KEYS_FILE, initRepository, loadMachineKeys, noMachineKeys, repositoryId, saveMachineKeys, sealKeys, unlockKeys, unlockKeysFile } from '../repo/repository.js';

/** A new repository in `store`, its keys sealed to `recipients`; this machine keeps what backup needs. */
export async function createRepository(store: Store, recipients: readonly Recipient[]): Promise<string> {
  const keys = newRepoKeys();
  try {
    await initRepository(store, keys, recipients);
    await saveMachineKeys({ ...keys, signPublic: signPublicOf(keys.readSecret) });
    return keys.id;
  } finally {
    forgetKeys(keys);
  }
}

export type Unlocker = (header: ParsedHeader) => Promise<Uint8Array>;

/** Every key of the repository, from its keys file (one unlock). The caller zeroes them (forgetKeys). */
export async function openRepositoryKeys(store: Store, unlock: Unlocker): Promise<RepoKeys> {
  return unlockKeys(store, await repositoryId(store), unlock);
}

/** One unlock, after which this machine backs up into the repository without a secret. */
export async function adoptRepository(store: Store, unlock: Unlocker): Promise<string> {
  const keys = await openRepositoryKeys(store, unlock);
  try {
    // The published read key, as every other machine seals to it (checked against the secrets).
    const { readPublic, signPublic, generation } = await publishedReadKey(store, keys);
    await saveMachineKeys({ id: keys.id, readPublic, signPublic, generation, dedupKey: keys.dedupKey });
    return keys.id;
  } finally {
    forgetKeys(keys);
  }
}

/** What this machine holds for backing up; exit 4 with what to do when it holds nothing. */
export async function machineKeysFor(store: Store): Promise<MachineKeys> {
  const keys = await loadMachineKeys(await repositoryId(store));
  if (!keys) throw noMachineKeys(store);
  return keys;
}

/**
 * The read key a backup seals its packs to, read under the repository lock (a rotate holds the
 * exclusive one): a newer generation published by `repo rotate --new-read-key` is taken, kept
 * for the next runs and said; anything else but the key this machine holds is refused.
 */
export async function backupReadKey(store: Store, held: MachineKeys, onWarning?: (m: string) => void): Promise<Uint8Array> {
  const k = await sealingKey(store, held);
  if (k.switched) {
    onWarning?.(`the read key of ${store.name} was renewed (generation ${k.generation}, signed by the one this machine held): this machine seals new data to it from now on`);
    await saveMachineKeys({ ...held, readPublic: k.readPublic, signPublic: k.signPublic, generation: k.generation }).catch((err: unknown) =>
      onWarning?.(`the renewed read key was not saved on this machine (the next backup takes it again): ${(err as Error).message}`),
    );
  }
  return k.readPublic;
}

/** The dedup key's part of the repository: the machine's copy, or else one unlock. */
export async function listingKeys(store: Store, unlock: Unlocker): Promise<MachineKeys> {
  const held = await loadMachineKeys(await repositoryId(store));
  if (held) return held;
  const keys = await openRepositoryKeys(store, unlock);
  keys.readSecret.fill(0);
  for (const s of keys.retiredReadSecrets) s.fill(0);
  return keys;
}

/** A recipient as messages name it. */
export interface Holder {
  type: string;
  label: string;
  fingerprint: string;
}

const same = (a: Holder) => (b: Holder) => a.type === b.type && a.fingerprint === b.fingerprint;

export interface RotateResult {
  /** Who opened the keys file before and no longer does, and who opens it now and did not. */
  removed: Holder[];
  added: Holder[];
  /** The read key generation new packs are sealed to now. */
  generation: number;
  /** A new read key was made. */
  renewed: boolean;
  /** A rotate killed between its two writes was finished: its new read key is published now. */
  finished: boolean;
}

/**
 * Seal the keys file to `recipients` instead (one unlock with a current one); with
 * `newReadKey`, also make the next read key, to which packs written afterwards are sealed.
 * Under the exclusive lock (no backup runs meanwhile), after everything that can fail: the keys
 * file first (so that the new secret is kept before any machine seals to its public half), then
 * the published read key; each write is atomic, and a rotate killed between the two leaves the
 * old read key in use, and is finished by the next rotate.
 */
export async function rotateRepository(store: Store, unlock: Unlocker, recipients: ReadonlyArray<Recipient & { fingerprint: string }>, newReadKey: boolean): Promise<RotateResult> {
  const id = await repositoryId(store);
  const bytes = await store.read(KEYS_FILE);
  // Unlocked before the lock is taken: backups are not held up while a code is typed or a key touched.
  const keys = await unlockKeysFile(store, id, bytes, unlock);
  let next = keys;
  try {
    const lock = await lockRepository(store, 'exclusive', 'rotate');
    try {
      if (!(await store.read(KEYS_FILE)).equals(bytes)) {
        throw new BackupctlError(Exit.locked, `${store.name}/${KEYS_FILE} changed while it was being unlocked (another rotate?): run this again`);
      }
      const published = await publishedReadKey(store, keys);
      const finished = published.generation < keys.generation;
      // A read key that was never published was never sealed to: it is as new as a new one.
      if (newReadKey && !finished) next = withNewReadKey(keys);
      const before = (await SealedFile.fromBytes(KEYS_FILE, bytes)).header.slots.map((s) => ({ type: s.type, label: s.label, fingerprint: slotFingerprint(s) }));
      const sealed = sealKeys(next, recipients);
      const publish = next.generation > published.generation;
      const readKey = publish ? encodeReadKey(id, [...next.retiredReadSecrets, next.readSecret]) : null;
      await store.write(KEYS_FILE, sealed);
      if (readKey) await store.write(READ_KEY_FILE, [readKey]);
      const holders = recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: r.fingerprint }));
      return { removed: before.filter((b) => !holders.some(same(b))), added: holders.filter((h) => !before.some(same(h))), generation: next.generation, renewed: next !== keys, finished };
    } finally {
      await lock.release();
    }
  } finally {
    forgetKeys(keys);
    if (next !== keys) forgetKeys(next);
  }
}
