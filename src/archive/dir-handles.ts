// Directories of DEST reached without following a link, for the commit (commit.ts). Node has no
// openat(2) or linkat(2). On Linux each directory is opened beneath its parent's descriptor, one
// component at a time, with O_DIRECTORY|O_NOFOLLOW through /proc/self/fd/N, and every step names
// its target as /proc/self/fd/N/NAME: the kernel resolves N to the directory that was opened, so
// a directory swapped for a link after it was opened changes nothing. Elsewhere the paths are
// used, and each directory's device and inode are checked again before every step (a window of
// one system call remains: backupctl(1) RESTORE SAFETY).
import { closeSync, constants, existsSync, lstatSync, openSync, type Stats } from 'node:fs';
import { join } from 'node:path';

const OPEN_DIR = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;
/** Descriptors kept open at most; beyond that all but DEST's are closed (and reopened when needed). */
const MAX_OPEN = 256;

const linkError = (path: string) => Object.assign(new Error(`${path} changed during the restore`), { code: 'ELOOP', path });
const id = (st: Stats) => `${st.dev}:${st.ino}`;

/** The parent directory (relative, '' for DEST) and the name of an entry path. */
export function splitPath(path: string): [string, string] {
  const slash = path.lastIndexOf('/');
  return slash < 0 ? ['', path] : [path.slice(0, slash), path.slice(slash + 1)];
}

export class DirHandles {
  /** Linux: relative directory -> open descriptor; '' is DEST. */
  private readonly fds = new Map<string, number>();
  /** Elsewhere: relative directory -> "dev:ino" when first seen. */
  private readonly ids = new Map<string, string>();
  private readonly viaProc: boolean;

  /** `dest` must be a real path (no links in it). Throws like open(2). */
  constructor(private readonly dest: string, viaProc = process.platform === 'linux' && existsSync('/proc/self/fd')) {
    this.viaProc = viaProc;
    if (viaProc) this.fds.set('', openSync(dest, OPEN_DIR));
  }

  /** A path for directory `rel` of DEST itself (for chmod, utimes), reached through real directories only. */
  self(rel: string): string {
    if (this.viaProc) return `/proc/self/fd/${this.fd(rel)}`;
    this.check(rel);
    return join(this.dest, rel);
  }

  /**
   * A path for `name` inside directory `rel` of DEST; the name itself is not resolved (no-follow
   * steps only). A directory on the way that is not one throws, with its path in DEST as `path`.
   */
  at(rel: string, name: string): string {
    return `${this.self(rel)}/${name}`;
  }

  /** Directory `rel` is gone (removed or moved aside): forget its descriptor. */
  forget(rel: string): void {
    const fd = this.fds.get(rel);
    if (fd !== undefined && rel !== '') closeSync(fd);
    this.fds.delete(rel);
    this.ids.delete(rel);
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }

  private fd(rel: string): number {
    const have = this.fds.get(rel);
    if (have !== undefined) return have;
    const [parent, name] = splitPath(rel);
    const parentFd = this.fd(parent);
    if (this.fds.size >= MAX_OPEN) {
      for (const [k, v] of this.fds) if (k !== '' && k !== parent) { closeSync(v); this.fds.delete(k); }
    }
    let fd: number;
    try {
      fd = openSync(`/proc/self/fd/${parentFd}/${name}`, OPEN_DIR);
    } catch (err) {
      // Named by its path in DEST; a link is ELOOP (open(2) says ENOTDIR with O_DIRECTORY).
      const p = join(this.dest, rel);
      const link = (err as NodeJS.ErrnoException).code === 'ENOTDIR' && lstatSync(p, { throwIfNoEntry: false })?.isSymbolicLink();
      throw Object.assign(new Error(p), { code: link ? 'ELOOP' : (err as NodeJS.ErrnoException).code, path: p });
    }
    this.fds.set(rel, fd);
    return fd;
  }

  /** Every directory from DEST down to `rel` is a real directory, the same one as when first seen. */
  private check(rel: string): void {
    if (rel === '') return;
    for (let i = rel.indexOf('/'); ; i = rel.indexOf('/', i + 1)) {
      const sub = i < 0 ? rel : rel.slice(0, i);
      const p = join(this.dest, sub);
      const st = lstatSync(p);
      if (!st.isDirectory()) throw Object.assign(new Error(p), { code: st.isSymbolicLink() ? 'ELOOP' : 'ENOTDIR', path: p });
      const was = this.ids.get(sub);
      if (was === undefined) this.ids.set(sub, id(st));
      else if (was !== id(st)) throw linkError(p);
      if (i < 0) return;
    }
  }
}
