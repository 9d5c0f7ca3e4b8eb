// The names restore keeps for itself in every directory it restores into: its lock and its
// staging directories (commit.ts). Restore refuses archive entries of these names; create and
// backup warn when they store one (walk.ts), which is most often what a killed restore left.
import { lockFiles } from '../util/lock.js';

export const STAGING = '.backupctl-restore-';
/** Staging directories carry their owner's identity: .backupctl-restore-PID.START-XXXXXX. */
export const STAGING_NAME = /^\.backupctl-restore-(\d+\.\d+)-([A-Za-z0-9]{6})$/;
/** What restore.ts locks DEST with: DEST/.backupctl-restore.lock (util/lock.ts adds ".lock"). */
export const RESTORE_LOCK = '.backupctl-restore';
const LOCK_NAMES = Object.values(lockFiles(RESTORE_LOCK));

/**
 * What restore keeps the name `name` for in every directory it restores into (any directory of a
 * restored tree may be the next restore's DIR), or null. An entry of that name would be taken for
 * the lock (held for ever, or replaced under --force) or, as a dead run's staging directory, be
 * rolled back and removed by the next restore. The lock's names in any case (DIR's file system may
 * ignore case).
 */
export function restoreKeeps(name: string): string | null {
  if (LOCK_NAMES.includes(name.toLowerCase())) return 'its lock';
  return STAGING_NAME.test(name) ? 'its staging directories' : null;
}
