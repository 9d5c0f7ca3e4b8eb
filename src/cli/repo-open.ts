// What restore, verify and prune of a repository start with: one unlock of its keys file (the
// recovery code or a security key, as for an archive), then `use` with every key, which are
// zeroed after it, whatever happens.
import { openStore } from '../repo/repository.js';
import { forgetKeys, type RepoKeys } from '../repo/keys.js';
import type { Store } from '../store/store.js';
import { openRepositoryKeys } from '../ops/repository.js';
import type { RunContext } from './run.js';
import { unlock, type UnlockOptions } from './unlock.js';

export async function withRepositoryKeys<T>(ctx: RunContext, opts: UnlockOptions & { repo: string }, use: (store: Store, keys: RepoKeys) => Promise<T>): Promise<T> {
  const store = openStore(opts.repo);
  const keys = await openRepositoryKeys(store, (h) => unlock(h, opts, ctx.signal));
  try {
    return await use(store, keys);
  } finally {
    forgetKeys(keys);
  }
}
