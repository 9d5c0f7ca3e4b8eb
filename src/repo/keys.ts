// The repository's keys (backupctl-repository(5) "KEYS"). Two secrets, made at `repo init` from
// the CSPRNG:
//   - the read key, an X25519 key pair: packs (content and trees) are sealed to its public half.
//     Its secret half exists only inside the `keys` file, sealed to the config's recipients
//     (recovery codes, security keys), so only an unlock reads old backups. `repo rotate
//     --new-read-key` makes a new one (the next generation): packs written afterwards are sealed
//     to it, and the keys file keeps the retired secrets for the packs written before;
//   - the dedup key, 32 bytes, held by every machine that backs up: it keys the chunker's gear
//     table and the chunk ids, and opens the index and the snapshot list.
// The backup machine holds the dedup key and the read key's public half: it can add snapshots
// and tell which chunks exist, never read what any pack holds (Tarsnap's write-only keys).
import { createHmac, type KeyObject, createSecretKey, randomBytes } from 'node:crypto';
import { hkdfSha256 } from '../util/hkdf.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { publicKeyOf, unwrapX25519, wrapX25519, type X25519KeyPair } from '../keys/x25519.js';
import type { Identity, Recipient } from '../keys/types.js';
import { signingPublicKey } from '../keys/ed25519.js';
import { gearTable, type Gear } from './chunker.js';

/** Slot types: a pack (read key), an index file and a snapshot file (both the dedup key's X25519 pair). */
export const PACK_SLOT = 'repo-pack';
export const INDEX_SLOT = 'repo-index';
export const SNAPSHOT_SLOT = 'repo-snapshot';

/** What a backup machine holds (in its config directory, mode 0600). */
export interface MachineKeys {
  id: string;
  /** The public half of the read key new packs are sealed to, and its generation (0 at init). */
  readPublic: Uint8Array;
  generation: number;
  /** That generation's signing public key, which checks the next one (absent in files older than it). */
  signPublic?: Uint8Array;
  dedupKey: Uint8Array;
}

/** What an unlock of the `keys` file gives: the machine's keys and every read secret. */
export interface RepoKeys extends MachineKeys {
  readSecret: Uint8Array;
  /** The read secrets of generations 0 .. generation-1 (they open the packs written before each rotation). */
  retiredReadSecrets: Uint8Array[];
}

const derive = (dedupKey: Uint8Array, what: string, n: number) => hkdfSha256(dedupKey, new Uint8Array(0), utf8ToBytes(`backupctl/v1 repository ${what}`), n);

/** Everything the dedup key keys, derived once per run. */
export class DedupKeys {
  readonly gear: Gear;
  private readonly idKey: KeyObject;
  readonly indexPair: X25519KeyPair;

  constructor(dedupKey: Uint8Array) {
    this.gear = gearTable(derive(dedupKey, 'gear', 1024));
    const id = derive(dedupKey, 'chunk id', 32);
    this.idKey = createSecretKey(id);
    id.fill(0);
    const secretKey = derive(dedupKey, 'index X25519', 32);
    this.indexPair = { secretKey, publicKey: publicKeyOf(secretKey) };
  }

  /** A chunk's id: HMAC-SHA-256 of its plaintext (given whole, or in consecutive parts) under the chunk-id key. */
  chunkId(...plain: Uint8Array[]): Buffer {
    const h = createHmac('sha256', this.idKey);
    for (const part of plain) h.update(part);
    return h.digest();
  }

  /** Index and snapshot files are sealed to the dedup key's own X25519 pair. */
  recipient(type: typeof INDEX_SLOT | typeof SNAPSHOT_SLOT): Recipient {
    return { type, label: type, wrap: (k) => wrapX25519(type, type, this.indexPair.publicKey, k) };
  }

  identity(type: typeof INDEX_SLOT | typeof SNAPSHOT_SLOT): Identity {
    return slotIdentity(type, [this.indexPair], `repository ${type === INDEX_SLOT ? 'index' : 'snapshot'} key`);
  }
}

function slotIdentity(type: string, pairs: readonly X25519KeyPair[], description: string): Identity {
  return {
    description,
    async unwrap(slots) {
      for (const s of slots) {
        for (const pair of pairs) {
          const k = unwrapX25519(type, pair, s);
          if (k) return k;
        }
      }
      return null;
    },
  };
}

/**
 * The Ed25519 seed a read key's generation signs the next generation's public keys with
 * (read-key.ts): derived from its read secret, so only an unlock of the keys file can sign, and
 * a backup machine, which holds the public half, can check.
 */
export const signingSeed = (readSecret: Uint8Array) => hkdfSha256(readSecret, new Uint8Array(0), utf8ToBytes('backupctl/v1 repository read key signing'), 32);

/** The signing public key of the generation whose read secret is `readSecret`. */
export function signPublicOf(readSecret: Uint8Array): Uint8Array {
  const seed = signingSeed(readSecret);
  try {
    return signingPublicKey(seed);
  } finally {
    seed.fill(0);
  }
}

export function packRecipient(readPublic: Uint8Array): Recipient {
  return { type: PACK_SLOT, label: PACK_SLOT, wrap: (k) => wrapX25519(PACK_SLOT, PACK_SLOT, readPublic, k) };
}

/** Opens a pack sealed to any generation of the read key, the current one tried first. */
export function packIdentity(keys: RepoKeys): Identity {
  const pairs = [{ secretKey: keys.readSecret, publicKey: keys.readPublic }, ...keys.retiredReadSecrets.toReversed().map((s) => ({ secretKey: s, publicKey: publicKeyOf(s) }))];
  return slotIdentity(PACK_SLOT, pairs, 'repository read key');
}

const newReadSecret = () => new Uint8Array(randomBytes(32));

/** New repository keys from the CSPRNG. */
export function newRepoKeys(): RepoKeys {
  const readSecret = newReadSecret();
  return { id: randomBytes(16).toString('hex'), readSecret, readPublic: publicKeyOf(readSecret), generation: 0, retiredReadSecrets: [], dedupKey: new Uint8Array(randomBytes(32)) };
}

/**
 * The next generation: a new read key from the CSPRNG, the current one retired (kept to read
 * the packs sealed to it). The dedup key stays: a new one would store every chunk again.
 */
export function withNewReadKey(k: RepoKeys): RepoKeys {
  const readSecret = newReadSecret();
  return { ...k, readSecret, readPublic: publicKeyOf(readSecret), generation: k.generation + 1, retiredReadSecrets: [...k.retiredReadSecrets, new Uint8Array(k.readSecret)], dedupKey: new Uint8Array(k.dedupKey) };
}

/** Zero every secret of `k` (the public half and the id are not secret). */
export function forgetKeys(k: RepoKeys): void {
  k.readSecret.fill(0);
  for (const s of k.retiredReadSecrets) s.fill(0);
  k.dedupKey.fill(0);
}

