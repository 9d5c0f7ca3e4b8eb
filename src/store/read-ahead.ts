// Many small files read in turn (index files, snapshots): a few are fetched ahead of the one in
// use. One after another, each waited for a round trip: of the thread pool on a local disk (76
// index files, 25 ms of a restore's 2 s), of a request on Drive.
import type { Store, StoredFile } from './store.js';

/** Reads in flight ahead of the file in use. */
const AHEAD = 8;

/**
 * `use` each file of `listed` in order, with its bytes, or with null where it is gone since the
 * listing (deleted by a prune or forget meanwhile). Stops at the first failure, which it throws.
 */
export async function readInTurn(store: Store, listed: readonly StoredFile[], use: (f: StoredFile, bytes: Buffer | null) => Promise<void> | void): Promise<void> {
  const fetch = (f: StoredFile) =>
    store.read(f.path).then(
      (bytes) => ({ bytes }),
      (err: unknown) => ({ err }),
    );
  const reads = listed.slice(0, AHEAD).map(fetch);
  for (let i = 0; i < listed.length; i++) {
    if (i + AHEAD < listed.length) reads.push(fetch(listed[i + AHEAD]!));
    const f = listed[i]!;
    const r = await reads[i]!;
    if ('bytes' in r) await use(f, r.bytes);
    else if ((r.err as { detail?: { missing?: string } }).detail?.missing === f.path) await use(f, null);
    else throw r.err;
  }
}
