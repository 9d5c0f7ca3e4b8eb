// The store a --repo argument names (a local directory, or drive:NAME / drive-appdata:NAME on
// Google Drive), and what restore, verify and prune of a repository start with: one unlock of its
// keys file (the recovery code or a security key, as for an archive), then `use` with every key,
// which are zeroed after it, whatever happens.
import { forgetKeys, type RepoKeys } from '../repo/keys.js';
import type { Store } from '../store/store.js';
import { LocalStore } from '../store/local.js';
import { openRepositoryKeys } from '../ops/repository.js';
import type { RunContext } from './run.js';
import { unlock, type UnlockOptions } from './unlock.js';

/** Drive's code (and googleapis) loads only for a repository on Drive. */
export async function openStore(ctx: RunContext, repo: string): Promise<Store> {
  if (!/^drive(-appdata)?:/.test(repo)) return new LocalStore(repo);
  const { DriveStore, parseDriveRepo } = await import('../store/drive.js');
  const { openDrive } = await import('./commands/drive.js');
  return new DriveStore(repo, parseDriveRepo(repo)!, () => openDrive(ctx));
}

export async function withRepositoryKeys<T>(ctx: RunContext, opts: UnlockOptions & { repo: string }, use: (store: Store, keys: RepoKeys) => Promise<T>): Promise<T> {
  const store = await openStore(ctx, opts.repo);
  const keys = await openRepositoryKeys(store, (h) => unlock(h, opts, ctx.signal));
  try {
    return await use(store, keys);
  } finally {
    forgetKeys(keys);
  }
}
