// Repository locks (backupctl-repository(5) "LOCKS"), restic's scheme: a backup takes a shared
// lock, prune an exclusive one; each is a small plain file under locks/ naming its owner. A lock
// is stale when its process is gone (same host) or it has not been refreshed for STALE_MS.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { BackupctlError, Exit } from '../errors.js';
import type { Store } from '../store/store.js';
import { pidAlive } from '../util/owner.js';

export type LockKind = 'shared' | 'exclusive';

export interface LockFile {
  kind: LockKind;
  host: string;
  pid: number;
  operation: string;
  /** Last refresh, ISO 8601. */
  time: string;
}

const REFRESH_MS = 5 * 60_000;
const STALE_MS = 30 * 60_000;

export function isStale(l: LockFile, now = Date.now()): boolean {
  if (l.host === hostname() && !pidAlive(l.pid)) return true;
  return now - Date.parse(l.time) > STALE_MS;
}

export interface RepoLock {
  release(): Promise<void>;
}

/** Every lock but `mine`, with its content (null: gone meanwhile, or unreadable). */
export async function others(store: Store, mine: string): Promise<Array<{ path: string; lock: LockFile | null }>> {
  const out = [];
  for (const f of await store.list('locks')) {
    if (f.path === mine) continue;
    let lock: LockFile | null = null;
    try {
      lock = JSON.parse((await store.read(f.path)).toString('utf8')) as LockFile;
    } catch {
      /* gone meanwhile, or unreadable: treated as stale */
    }
    out.push({ path: f.path, lock });
  }
  return out;
}

/**
 * Take a lock: write ours, then look at the others. A shared lock yields to a live exclusive one;
 * an exclusive lock yields to any live lock. Both may yield at once (then both fail: try again),
 * never both go on. Stale locks are removed on the way.
 */
export async function lockRepository(store: Store, kind: LockKind, operation: string): Promise<RepoLock> {
  const path = `locks/${randomBytes(8).toString('hex')}`;
  const body = (): LockFile => ({ kind, host: hostname(), pid: process.pid, operation, time: new Date().toISOString() });
  await store.write(path, [Buffer.from(JSON.stringify(body()) + '\n')], { exclusive: true });
  for (const o of await others(store, path)) {
    if (!o.lock || isStale(o.lock)) {
      await store.delete(o.path);
      continue;
    }
    if (kind === 'exclusive' || o.lock.kind === 'exclusive') {
      await store.delete(path);
      throw new BackupctlError(Exit.locked, `the repository ${store.name} is in use (${o.lock.operation} on ${o.lock.host}, pid ${o.lock.pid}, since ${o.lock.time}); try again when it has finished (if that machine is gone for good: backupctl repo break-lock ${store.name} --all)`);
    }
  }
  const timer = setInterval(() => void store.write(path, [Buffer.from(JSON.stringify(body()) + '\n')]).catch(() => {}), REFRESH_MS);
  timer.unref();
  return {
    async release() {
      clearInterval(timer);
      await store.delete(path);
    },
  };
}
