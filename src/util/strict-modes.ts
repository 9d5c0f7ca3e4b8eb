// Whoever can change the config decides who future backups are encrypted to, so it is trusted
// only the way ssh's StrictModes trusts ~/.ssh: the config directory and file are real (not
// symbolic links), belong to the user running backupctl, and are not writable by group or others;
// and every directory above them, up to the home directory (when they are inside it) or else up
// to /, belongs to that user or root and is not writable by group or others. One difference from
// ssh, which refuses those too: a sticky directory owned by root (/tmp) is accepted above, since
// the sticky bit keeps others from renaming or removing what is ours in it, and everything below
// it is checked as above (a directory someone else made there first is refused). Not checked on
// Windows, which has no such modes.
import { lstat, realpath, stat } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { homedir } from 'node:os';
import { BackupctlError, Exit, ioError } from '../errors.js';

const refused = (msg: string) => new BackupctlError(Exit.refused, `refusing to use ${msg}`);
const modeOf = (m: number) => (m & 0o7777).toString(8);
const checks = () => process.platform !== 'win32' && typeof process.getuid === 'function';

/**
 * `path` must be a `kind` of our own, neither a symbolic link nor writable by group or others.
 * Returns false when it does not exist (yet).
 */
export async function checkOwnPath(path: string, kind: 'directory' | 'file'): Promise<boolean> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw ioError(err, path, 'read');
  }
  if (!checks()) return true;
  if (st.isSymbolicLink()) throw refused(`${path}: it is a symbolic link; the config ${kind} must be a real ${kind} of yours`);
  if (kind === 'directory' ? !st.isDirectory() : !st.isFile()) throw refused(`${path}: it is not a ${kind}`);
  const uid = process.getuid!();
  if (st.uid !== uid) throw refused(`${path}: it belongs to uid ${st.uid}, not to you (uid ${uid}); whoever owns it decides who your backups are encrypted to`);
  if ((st.mode & 0o022) !== 0) throw refused(`${path}: it is writable by group or others (mode ${modeOf(st.mode)}); run: chmod go-w ${path}`);
  return true;
}

/**
 * Every existing directory above `dir` (up to the home directory when `dir` is inside it) must
 * belong to us or root and not be writable by group or others: else another user could put a
 * config of their own in its place.
 */
export async function checkAncestors(dir: string): Promise<void> {
  if (!checks()) return;
  const home = await realpath(homedir()).catch(() => homedir());
  let p = dirname(dir);
  for (;;) {
    const real = await realpath(p).catch(() => null);
    if (real !== null) {
      p = real;
      break;
    }
    if (dirname(p) === p) return;
    p = dirname(p); // not created yet: start from the nearest directory that exists
  }
  const real = await realpath(dir).catch(() => null);
  const inHome = (x: string) => x === home || x.startsWith(home.endsWith('/') ? home : `${home}/`);
  // The config directory is the home directory itself (which may not exist yet).
  if (real === home || resolve(dir) === resolve(homedir())) return;
  const stopAtHome = inHome(p);
  const uid = process.getuid!();
  for (;;) {
    const st = await stat(p).catch((err: unknown) => {
      throw ioError(err, p, 'read');
    });
    if (st.uid !== uid && st.uid !== 0) throw refused(`the config in ${dir}: ${p} above it belongs to uid ${st.uid}, neither you nor root, who could replace the config`);
    if ((st.mode & 0o022) !== 0 && !((st.mode & 0o1000) !== 0 && st.uid === 0)) {
      throw refused(`the config in ${dir}: ${p} above it is writable by group or others (mode ${modeOf(st.mode)}), who could replace the config; run: chmod go-w ${p}`);
    }
    if ((stopAtHome && p === home) || dirname(p) === p) return;
    p = dirname(p);
  }
}
