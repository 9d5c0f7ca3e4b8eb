// Small file-system helpers shared by every module that writes: temporary names and their
// leftovers, atomic replace, publishing a new file without replacing one, the output directory.
import { link, lstat, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { closeSync, constants, fsyncSync, openSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { HOST_TAG, writerGone } from './owner.js';

/** A temporary name beside `path`, recognisable as ours: the pid and host tag that wrote it. */
export function tempNameFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.backupctl-tmp-${process.pid}-${HOST_TAG}-${randomBytes(4).toString('hex')}`);
}

const TEMP_NAME = /^\..+\.backupctl-tmp-(\d+)-([0-9a-f]{8})-[0-9a-f]{8}$/;

/**
 * Temporary files in `dir` left by runs that were killed: named by tempNameFor on this host, and
 * their pid is dead or belongs to a process started after the file was last written. Files of
 * other hosts (a shared or NFS directory) and of older backupctl versions are never touched.
 */
export async function leftoverTemps(dir: string): Promise<Array<{ path: string; size: number }>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return [];
  }
  const out: Array<{ path: string; size: number }> = [];
  for (const n of names) {
    const m = TEMP_NAME.exec(n);
    if (!m || m[2] !== HOST_TAG) continue;
    const path = join(dir, n);
    const st = await lstat(path).catch(() => null);
    if (st?.isFile() && writerGone(Number(m[1]), st.mtimeMs)) out.push({ path, size: st.size });
  }
  return out;
}

/** Remove the leftovers of killed runs in `dir` (see leftoverTemps); best effort. */
export async function removeLeftoverTemps(dir: string): Promise<void> {
  for (const t of await leftoverTemps(dir)) await unlink(t.path).catch(() => {});
}

/**
 * An output file's directory must exist already: creating it would put a backup meant for an
 * unmounted disk on the local one. Exit 6 naming the directory.
 */
export async function requireOutputDir(path: string): Promise<void> {
  const dir = dirname(path);
  let st;
  try {
    st = await stat(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new BackupctlError(Exit.io, `cannot write ${path}: the directory ${dir} does not exist (is the disk mounted?)`);
    throw ioError(err, dir, 'write into');
  }
  if (!st.isDirectory()) throw new BackupctlError(Exit.io, `cannot write ${path}: ${dir} is not a directory`);
}

/** Hard links are missing on some file systems (FAT and exFAT USB disks): the answer there is an error, not EEXIST. */
export const noHardLinks = (err: unknown) => ['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS'].includes((err as NodeJS.ErrnoException)?.code ?? '');

/**
 * Give the complete file `tmp` the name `dest` unless `dest` exists: link() fails atomically with
 * EEXIST, so of two runs publishing one name exactly one wins. Where there are no hard links the
 * check and the rename are two steps. `tmp` is gone afterwards either way.
 */
export async function publishNew(tmp: string, dest: string): Promise<void> {
  try {
    await link(tmp, dest);
  } catch (err) {
    if (!noHardLinks(err)) {
      await unlink(tmp).catch(() => {});
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new BackupctlError(Exit.io, `${dest} was created meanwhile by something else; it was left as it is (use --force to replace it)`);
      throw ioError(err, dest, 'write');
    }
    if (await lstat(dest).then(() => true, () => false)) {
      await unlink(tmp).catch(() => {});
      throw new BackupctlError(Exit.io, `${dest} was created meanwhile by something else; it was left as it is (use --force to replace it)`);
    }
    await rename(tmp, dest);
    return;
  }
  await unlink(tmp);
}

/** syncDir for synchronous callers (restore's commit journal runs without yielding). */
export function syncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, constants.O_RDONLY);
    fsyncSync(fd);
  } catch {
    /* some file systems do not allow fsync on directories */
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
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

/** Write `data` to `path` atomically (temp file, fsync, rename) with the given mode; the directory must exist. */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = tempNameFor(path);
  try {
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
