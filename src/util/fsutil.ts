// Small file-system helpers shared by every module that writes: atomic replace and a lock file.
import { open, rename, unlink, writeFile, mkdir } from 'node:fs/promises';
import { constants, readFileSync, unlinkSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BackupctlError, Exit, ioError } from '../errors.js';

/** A temporary name beside `path`, recognisable as ours (and by pid, as stale). */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.backupctl-tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** fsync a directory so a rename in it survives a crash. Best effort on platforms that refuse. */
export async function syncDir(dir: string): Promise<void> {
  let fh;
  try {
    fh = await open(dir, constants.O_RDONLY);
    await fh.sync();
  } catch {
    /* some file systems do not allow fsync on directories */
  } finally {
    await fh?.close();
  }
}

/** Write `data` to `path` atomically (temp file, fsync, rename) with the given mode. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = tempNameFor(path);
  try {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await syncDir(dirname(path));
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw ioError(err, path, 'write');
  }
}

/** Is process `pid` (on this host) still running? */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export interface Lock {
  release(): void;
}

/**
 * An exclusive lock on `target` via `target.lock` (O_EXCL, holding our pid). A lock whose
 * pid is gone is stale and taken over; a live one is a clear "locked" error (exit 9).
 */
export async function acquireLock(target: string, what: string): Promise<Lock> {
  const lockPath = `${target}.lock`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await mkdir(dirname(lockPath), { recursive: true, mode: 0o700 });
      await writeFile(lockPath, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        try {
          unlinkSync(lockPath);
        } catch {
          /* already gone */
        }
      };
      process.once('exit', release);
      return { release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError(err, lockPath, 'create lock file');
      let holder = NaN;
      try {
        holder = parseInt(readFileSync(lockPath, 'utf8'), 10);
      } catch {
        /* vanished meanwhile: retry */
      }
      if (Number.isInteger(holder) && holder !== process.pid && pidAlive(holder)) {
        throw new BackupctlError(Exit.locked, `${what} is in use by another backupctl run (pid ${holder}); try again when it has finished`);
      }
      await unlink(lockPath).catch(() => {});
    }
  }
  throw new BackupctlError(Exit.locked, `${what} is locked (${lockPath}); remove it if no backupctl is running`);
}
