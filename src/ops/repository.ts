// Use cases that set up a repository's keys: create one (no secret needed: the keys file is
// sealed to public recipients), and let a machine back up into one after a single unlock.
import type { ParsedHeader } from '../archive/header.js';
import type { Recipient } from '../keys/types.js';
import type { Store } from '../store/store.js';
import { newRepoKeys, type MachineKeys, type RepoKeys } from '../repo/keys.js';
import { initRepository, loadMachineKeys, noMachineKeys, repositoryId, saveMachineKeys, unlockKeys, writeKeys } from '../repo/repository.js';

/** A new repository in `store`, its keys sealed to `recipients`; this machine keeps what backup needs. */
export async function createRepository(store: Store, recipients: readonly Recipient[]): Promise<string> {
  const keys = newRepoKeys();
  try {
    await initRepository(store, keys, recipients);
    await saveMachineKeys(keys);
    return keys.id;
  } finally {
    keys.readSecret.fill(0);
  }
}

export type Unlocker = (header: ParsedHeader) => Promise<Uint8Array>;

/** Every key of the repository, from its keys file (one unlock). The caller zeroes readSecret. */
export async function openRepositoryKeys(store: Store, unlock: Unlocker): Promise<RepoKeys> {
  return unlockKeys(store, await repositoryId(store), unlock);
}

/** One unlock, after which this machine backs up into the repository without a secret. */
export async function adoptRepository(store: Store, unlock: Unlocker): Promise<string> {
  const keys = await openRepositoryKeys(store, unlock);
  keys.readSecret.fill(0);
  await saveMachineKeys(keys);
  return keys.id;
}

/** What this machine holds for backing up; exit 4 with what to do when it holds nothing. */
export async function machineKeysFor(store: Store): Promise<MachineKeys> {
  const keys = await loadMachineKeys(await repositoryId(store));
  if (!keys) throw noMachineKeys(store);
  return keys;
}

/** The dedup key's part of the repository: the machine's copy, or else one unlock. */
export async function listingKeys(store: Store, unlock: Unlocker): Promise<MachineKeys> {
  const held = await loadMachineKeys(await repositoryId(store));
  if (held) return held;
  const keys = await openRepositoryKeys(store, unlock);
  keys.readSecret.fill(0);
  return keys;
}

/**
 * Seal the keys file to `recipients` instead (one unlock with a current one). The keys
 * themselves stay: a recipient removed now cannot open the keys file from here on, but one who
 * kept a copy of the old keys file (or of a pack and that copy) still reads what it opens.
 */
export async function resealRepository(store: Store, unlock: Unlocker, recipients: readonly Recipient[]): Promise<void> {
  const keys = await openRepositoryKeys(store, unlock);
  try {
    await writeKeys(store, keys, recipients);
  } finally {
    keys.readSecret.fill(0);
    keys.dedupKey.fill(0);
  }
}
