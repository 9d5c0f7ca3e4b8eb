// `repo break-lock REPO [--all]`: remove the locks of runs that are gone. Stale locks (their
// process is gone from this host, or nobody refreshed them for 30 minutes) are removed anyway by
// whoever meets them; this removes them at once, and with `all` also a fresh lock of a machine
// the user knows is dead (a laptop lost mid-backup), which nothing else could tell from a live one.
import { isStale, others, type LockFile } from '../repo/lock.js';
import type { Store } from '../store/store.js';

export interface BrokenLocks {
  removed: Array<LockFile | null>;
  kept: LockFile[];
}

export async function breakLocks(store: Store, all: boolean): Promise<BrokenLocks> {
  const res: BrokenLocks = { removed: [], kept: [] };
  for (const o of await others(store, '')) {
    if (all || !o.lock || isStale(o.lock)) {
      await store.delete(o.path);
      res.removed.push(o.lock);
    } else res.kept.push(o.lock);
  }
  return res;
}
