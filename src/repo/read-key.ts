// The published read key (backupctl-repository(5) KEYS, "The published read key"): a small plain
// file, `read-key`, listing every read key generation after the first, each one's public halves
// signed with the signing key of the generation before it (derived from that generation's read
// secret). `repo rotate --new-read-key` writes it; every backup machine reads it under its lock,
// follows the signatures from the generation it holds, and switches to the newest by itself (no
// secret, no touch). A thief of a backup machine holds no signing secret, so cannot forge one.
// A file that fails its signatures, goes back to an older generation, or is gone once a machine
// holds a later one, is refused: no machine seals new data to a retired key without saying so.
import { timingSafeEqual } from 'node:crypto';
import { BackupctlError, corruptError, noKeyError } from '../errors.js';
import { b64decode, b64encode } from '../util/base64.js';
import type { Store } from '../store/store.js';
import { publicKeyOf } from '../keys/x25519.js';
import { signMessage, verifySignature } from '../keys/ed25519.js';
import { signPublicOf, signingSeed, type MachineKeys, type RepoKeys } from './keys.js';

export const READ_KEY_FILE = 'read-key';
const FORMAT = 'backupctl-repository-read-key';

/** A read key generation: the public half packs are sealed to, and the key that signs the next one. */
export interface PublishedKey {
  generation: number;
  readPublic: Uint8Array;
  signPublic: Uint8Array;
}

interface Link extends PublishedKey {
  /** By the signing key of generation - 1, over linkMessage. */
  signature: Uint8Array;
}

const linkMessage = (id: string, l: PublishedKey) => Buffer.from(`${FORMAT} 1\n${id}\n${l.generation}\n${b64encode(l.readPublic)}\n${b64encode(l.signPublic)}\n`, 'utf8');

const generationOf = (secret: Uint8Array, generation: number): PublishedKey => ({ generation, readPublic: publicKeyOf(secret), signPublic: signPublicOf(secret) });

/** The file for the read secrets `secrets` (generation 0 first), each generation signed by the one before it. */
export function encodeReadKey(id: string, secrets: readonly Uint8Array[]): Buffer {
  const keys = [];
  for (let g = 1; g < secrets.length; g++) {
    const l = generationOf(secrets[g]!, g);
    const seed = signingSeed(secrets[g - 1]!);
    const signature = signMessage(seed, linkMessage(id, l));
    seed.fill(0);
    keys.push({ generation: g, readPublic: b64encode(l.readPublic), signPublic: b64encode(l.signPublic), signature: b64encode(signature) });
  }
  return Buffer.from(JSON.stringify({ format: FORMAT, version: 1, repository: id, generation: secrets.length - 1, keys }, null, 2) + '\n');
}

/** The generations the file lists (1 .. N, well-formed, signatures not checked yet); [] when there is no file. */
async function readChain(store: Store, id: string): Promise<Link[]> {
  let bytes: Buffer;
  try {
    bytes = await store.read(READ_KEY_FILE);
  } catch (err) {
    if ((err as { detail?: { missing?: string } }).detail?.missing === READ_KEY_FILE) return [];
    throw err;
  }
  const where = `${store.name}/${READ_KEY_FILE}`;
  try {
    const j = JSON.parse(bytes.toString('utf8')) as { format: string; version: number; repository: string; generation: number; keys: Array<Record<string, unknown>> };
    if (j?.format !== FORMAT || j.version !== 1 || !Array.isArray(j.keys) || j.keys.length < 1 || j.generation !== j.keys.length) throw new Error('bad');
    if (j.repository !== id) throw corruptError(`${where} belongs to another repository than its marker says`, { file: READ_KEY_FILE });
    return j.keys.map((k, i) => {
      const l = { generation: k.generation as number, readPublic: b64decode(k.readPublic as string), signPublic: b64decode(k.signPublic as string), signature: b64decode(k.signature as string) };
      if (l.generation !== i + 1 || l.readPublic.length !== 32 || l.signPublic.length !== 32 || l.signature.length !== 64) throw new Error('bad');
      return l;
    });
  } catch (err) {
    if (err instanceof BackupctlError) throw err;
    throw corruptError(`${where} is not a valid read-key file`, { file: READ_KEY_FILE });
  }
}

/** Check every generation after `from` against the signing key of the one before it; the first that fails, or null. */
function firstForged(id: string, chain: readonly Link[], from: { generation: number; signPublic: Uint8Array }): number | null {
  let signer = from.signPublic;
  for (const l of chain.slice(from.generation)) {
    if (!verifySignature(signer, linkMessage(id, l), l.signature)) return l.generation;
    signer = l.signPublic;
  }
  return null;
}

const same = (a: PublishedKey, b: { readPublic: Uint8Array; signPublic?: Uint8Array }) =>
  timingSafeEqual(a.readPublic, b.readPublic) && (!b.signPublic || timingSafeEqual(a.signPublic, b.signPublic));

/**
 * The read key a machine holding `held` seals new packs to: the newest published one when its
 * signatures check from the generation held (`switched` set: the caller records it and says so),
 * the held one when that is still the newest.
 */
export async function sealingKey(store: Store, held: MachineKeys): Promise<{ generation: number; readPublic: Uint8Array; signPublic?: Uint8Array; switched: boolean }> {
  const chain = await readChain(store, held.id);
  const where = `${store.name}/${READ_KEY_FILE}`;
  if (chain.length < held.generation) {
    const what = chain.length ? `lists read key generations up to ${chain.length} only` : 'is missing';
    throw corruptError(
      `${where} ${what}, but this machine already seals to generation ${held.generation} (an old copy put back, or a \`backupctl repo rotate\` killed before it finished: run it again): refusing to seal new data to a retired read key`,
      { file: READ_KEY_FILE },
    );
  }
  if (held.generation > 0 && !same(chain[held.generation - 1]!, held)) {
    throw corruptError(`${where} names another read key for generation ${held.generation} than this machine holds (forged or replaced): refusing to back up; \`backupctl repo unlock ${store.name}\` takes the repository's keys again`, { file: READ_KEY_FILE });
  }
  if (chain.length === held.generation) return { generation: held.generation, readPublic: held.readPublic, signPublic: held.signPublic, switched: false };
  if (!held.signPublic) {
    throw noKeyError(`the read key of ${store.name} was renewed (generation ${chain.length}), but this machine's keys predate signed read keys: run \`backupctl repo unlock ${store.name}\` once to take the new one`);
  }
  const forged = firstForged(held.id, chain, { generation: held.generation, signPublic: held.signPublic });
  if (forged !== null) {
    throw corruptError(`${where}: read key generation ${forged} is not signed by generation ${forged - 1} (forged or damaged): refusing to seal new data to it`, { file: READ_KEY_FILE });
  }
  return { ...chain.at(-1)!, switched: true };
}

/**
 * The published read key checked against the secrets an unlock gave (`repo unlock`, rotate,
 * prune): every generation it lists must be the one whose secret the keys file keeps, so that
 * nothing is ever sealed to a key the repository cannot open.
 */
export async function publishedReadKey(store: Store, keys: RepoKeys): Promise<PublishedKey> {
  const chain = await readChain(store, keys.id);
  const where = `${store.name}/${READ_KEY_FILE}`;
  if (chain.length > keys.generation) {
    throw corruptError(
      `${where} lists read key generations up to ${chain.length}, but the keys file holds generations 0 to ${keys.generation} only (it changed since it was unlocked: run this again; or an older copy of it was put back)`,
      { file: READ_KEY_FILE },
    );
  }
  const secrets = [...keys.retiredReadSecrets, keys.readSecret];
  const bad = chain.find((l) => !same(l, generationOf(secrets[l.generation]!, l.generation)))?.generation ?? firstForged(keys.id, chain, generationOf(secrets[0]!, 0));
  if (bad !== null) {
    throw corruptError(`${where}: read key generation ${bad} is not the one whose secret is in the keys file, or not signed by the one before (forged or damaged): refusing to seal to it`, { file: READ_KEY_FILE });
  }
  return generationOf(secrets[chain.length]!, chain.length);
}
