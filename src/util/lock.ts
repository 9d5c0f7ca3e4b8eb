// Exclusive locks: TARGET.lock, a small file naming its owner (host tag, pid, start time) and a
// random token. It is written in full under a temporary name and then link()ed to the lock name,
// so nobody ever sees it empty or half-written; content that cannot be read means "held". A lock
// whose owner is certainly gone (owner.ts) is replaced atomically (rename) while holding
// TARGET.lock.break, after reading it again, so two runs never both take it over; and a run
// releases only a lock that still holds its own token.
import { link, open, rename, unlink } from 'node:fs/promises';
import { closeSync, constants, fstatSync, openSync, readSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { ourselves, ownerGone, pidAlive, type Owner } from './owner.js';
import { noHardLinks, tempNameFor } from './fsutil.js';

export interface Lock {
  release(): void;
}

export interface LockOptions {
  /** Keep trying this long while a live run holds the lock (for locks held a few milliseconds). */
  waitMs?: number;
}

const POLL_MS = 20;
/** How long a run waits for another to finish breaking a stale lock (it takes microseconds). */
const BREAK_WAIT_MS = 2000;

/** The files a lock on `target` uses: the lock, and the one that serialises breaking it. */
export const lockFiles = (target: string) => ({ lock: `${target}.lock`, breaker: `${target}.lock.break` });

const lockText = (o: Owner, token: string) => `backupctl-lock 1 host=${o.host} pid=${o.pid} start=${o.start ?? '-'} token=${token}\n`;

/**
 * The owner a lock names; a lock of backupctl before version 1 of the format held only a pid (its
 * host unknown, so never taken for gone). null: not a lock we can read, so it counts as held.
 */
export function parseLock(text: string): Owner | null {
  const m = /^backupctl-lock 1 host=([0-9a-f]{8}) pid=(\d+) start=(\d+|-) token=[0-9a-f]{32}\n$/.exec(text);
  if (m) return { host: m[1]!, pid: Number(m[2]), start: m[3] === '-' ? null : m[3]! };
  const legacy = /^(\d+)\n$/.exec(text);
  return legacy ? { host: '', pid: Number(legacy[1]), start: null } : null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A lock is one short line: anything longer is not one. */
const MAX_LOCK_BYTES = 4096;

/**
 * The lock file at `path` and its owner's uid (-1: a link or not a regular file), or null when
 * there is none. Read without following a link or waiting on a FIFO (a link to /dev/zero would be
 * read without end), and only while a lock's size: anything else, and what cannot be read, has
 * the text '', which holds.
 */
function readLock(path: string): { text: string; uid: number } | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? null : { text: '', uid: -1 };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { text: '', uid: -1 }; // nobody's lock
    if (st.size > MAX_LOCK_BYTES) return { text: '', uid: st.uid };
    const buf = Buffer.alloc(st.size);
    return { text: buf.subarray(0, readSync(fd, buf, 0, st.size, 0)).toString('utf8'), uid: st.uid };
  } catch {
    return { text: '', uid: -1 };
  } finally {
    closeSync(fd);
  }
}

/** Create `path` holding `text` (O_EXCL, 0600), synced so a crash cannot leave it empty. */
async function writeNew(path: string, text: string): Promise<void> {
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function held(lockPath: string, text: string): Lock {
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off('exit', release);
    try {
      // Only our own lock: a path alone could name a lock another run holds by now.
      if (readLock(lockPath)?.text === text) unlinkSync(lockPath);
    } catch {
      /* already gone */
    }
  };
  process.once('exit', release);
  return { release };
}

function lockedError(what: string, path: string, holder: Owner | null): BackupctlError {
  // A pre-1 lock has no host: it names a run only while its pid lives.
  if (holder && (holder.host !== '' || pidAlive(holder.pid))) return new BackupctlError(Exit.locked, `${what} is in use by another backupctl run (pid ${holder.pid}); try again when it has finished`);
  return new BackupctlError(Exit.locked, `${what} is locked (${path}); remove that file if no backupctl is running`);
}

/**
 * Replace `target`'s stale lock (read as `stale`) with `ours` (a complete file, renamed
 * into place). Returns false when the lock changed meanwhile or another run is breaking it.
 */
async function takeOver(target: string, stale: string, ours: string, what: string): Promise<boolean> {
  const { lock: lockPath, breaker: breakPath } = lockFiles(target);
  const me = ourselves();
  const deadline = Date.now() + BREAK_WAIT_MS;
  for (;;) {
    try {
      await writeNew(breakPath, lockText(me, randomBytes(16).toString('hex')));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(err, breakPath, 'create lock file');
      const breaker = parseLock(readLock(breakPath)?.text ?? '');
      // A run died in the microseconds it held this: never guess, ask the user.
      if ((breaker && ownerGone(breaker)) || Date.now() > deadline) throw lockedError(what, breakPath, null);
      await sleep(POLL_MS);
    }
  }
  try {
    if (readLock(lockPath)?.text !== stale) return false;
    await rename(ours, lockPath);
    return true;
  } finally {
    await unlink(breakPath).catch(() => {});
  }
}

/**
 * Whether a run of this user that may be alive holds `target`'s lock, which is not taken: the
 * error acquireLock would end in, naming `what`, or null when there is no lock or its owner is
 * certainly gone. As there, a lock that cannot be read is held; but only a regular file of this
 * user counts: another user's run cannot write where this user's restore goes, and must not hold
 * it up (a file planted in /tmp).
 */
export function lockHeld(target: string, what: string): BackupctlError | null {
  const path = lockFiles(target).lock;
  const l = readLock(path);
  if (!l || (process.getuid && l.uid !== process.getuid())) return null;
  const holder = parseLock(l.text);
  return holder && ownerGone(holder) ? null : lockedError(what, path, holder);
}

/**
 * An exclusive lock on `target` via `target.lock`. A live holder is a clear "locked" error
 * (exit 9), after `waitMs`; a holder certainly gone is replaced.
 */
export async function acquireLock(target: string, what: string, opts: LockOptions = {}): Promise<Lock> {
  const lockPath = lockFiles(target).lock;
  const text = lockText(ourselves(), randomBytes(16).toString('hex'));
  const tmp = tempNameFor(target);
  try {
    await writeNew(tmp, text);
  } catch (err) {
    throw ioError(err, lockPath, 'create lock file');
  }
  const deadline = Date.now() + (opts.waitMs ?? 0);
  try {
    for (;;) {
      try {
        await link(tmp, lockPath);
        return held(lockPath, text);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (noHardLinks(err)) {
          // No atomic publication here: create and fill in place (an empty lock still reads as held).
          try {
            await writeNew(lockPath, text);
            return held(lockPath, text);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(e, lockPath, 'create lock file');
          }
        } else if (code !== 'EEXIST') throw ioError(err, lockPath, 'create lock file');
      }
      const current = readLock(lockPath)?.text ?? null;
      if (current === null) continue; // released meanwhile
      const holder = parseLock(current);
      if (holder && ownerGone(holder)) {
        if (await takeOver(target, current, tmp, what)) return held(lockPath, text);
        continue;
      }
      if (Date.now() >= deadline) throw lockedError(what, lockPath, holder);
      await sleep(POLL_MS);
    }
  } finally {
    await unlink(tmp).catch(() => {});
  }
}
