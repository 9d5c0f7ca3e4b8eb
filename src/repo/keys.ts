// The repository's keys (backupctl-repository(5) "KEYS"). Two secrets, made at `repo init` from
// the CSPRNG:
//   - the read key, an X25519 key pair: packs (content and trees) are sealed to its public half.
//     Its secret half exists only inside the `keys` file, sealed to the config's recipients
//     (recovery codes, security keys), so only an unlock reads old backups;
//   - the dedup key, 32 bytes, held by every machine that backs up: it keys the chunker's gear
//     table and the chunk ids, and opens the index and the snapshot list.
// The backup machine holds the dedup key and the read key's public half: it can add snapshots
// and tell which chunks exist, never read what any pack holds (Tarsnap's write-only keys).
import { createHmac, type KeyObject, createSecretKey, randomBytes } from 'node:crypto';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { publicKeyOf, unwrapX25519, wrapX25519, type X25519KeyPair } from '../keys/x25519.js';
import type { Identity, Recipient } from '../keys/types.js';
import { gearTable, type Gear } from './chunker.js';

/** Slot types: a pack (read key), an index file and a snapshot file (both the dedup key's X25519 pair). */
export const PACK_SLOT = 'repo-pack';
export const INDEX_SLOT = 'repo-index';
export const SNAPSHOT_SLOT = 'repo-snapshot';

/** What a backup machine holds (in its config directory, mode 0600). */
export interface MachineKeys {
  id: string;
  readPublic: Uint8Array;
  dedupKey: Uint8Array;
}

/** What an unlock of the `keys` file gives: the machine's keys and the read secret. */
export interface RepoKeys extends MachineKeys {
  readSecret: Uint8Array;
}

const derive = (dedupKey: Uint8Array, what: string, n: number) => hkdf(sha256, dedupKey, new Uint8Array(0), utf8ToBytes(`backupctl/v1 repository ${what}`), n);

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

  /** A chunk's id: HMAC-SHA-256 of its plaintext under the chunk-id key. */
  chunkId(plain: Uint8Array): Buffer {
    return createHmac('sha256', this.idKey).update(plain).digest();
  }

  /** Index and snapshot files are sealed to the dedup key's own X25519 pair. */
  recipient(type: typeof INDEX_SLOT | typeof SNAPSHOT_SLOT): Recipient {
    return { type, label: type, wrap: (k) => wrapX25519(type, type, this.indexPair.publicKey, k) };
  }

  identity(type: typeof INDEX_SLOT | typeof SNAPSHOT_SLOT): Identity {
    return slotIdentity(type, this.indexPair, `repository ${type === INDEX_SLOT ? 'index' : 'snapshot'} key`);
  }
}

function slotIdentity(type: string, pair: X25519KeyPair, description: string): Identity {
  return {
    description,
    async unwrap(slots) {
      for (const s of slots) {
        const k = unwrapX25519(type, pair, s);
        if (k) return k;
      }
      return null;
    },
  };
}

export function packRecipient(readPublic: Uint8Array): Recipient {
  return { type: PACK_SLOT, label: PACK_SLOT, wrap: (k) => wrapX25519(PACK_SLOT, PACK_SLOT, readPublic, k) };
}

export function packIdentity(keys: RepoKeys): Identity {
  return slotIdentity(PACK_SLOT, { secretKey: keys.readSecret, publicKey: keys.readPublic }, 'repository read key');
}

/** New repository keys from the CSPRNG. */
export function newRepoKeys(): RepoKeys {
  const readSecret = randomBytes(32);
  return { id: randomBytes(16).toString('hex'), readSecret: new Uint8Array(readSecret), readPublic: publicKeyOf(readSecret), dedupKey: new Uint8Array(randomBytes(32)) };
}

