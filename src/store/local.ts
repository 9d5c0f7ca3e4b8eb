// A store on a local directory (a USB disk, a NAS mount). Writes go to a temporary name beside
// the target, are synced, then renamed (or hard-linked, for an exclusive write) into place, and
// the directory is synced: a file either is there whole or not at all, even after kill -9 or a
// power cut. Temporary names start with '.', so a listing never shows a half-written file.
import { closeSync, constants, openSync, readSync } from 'node:fs';
import { link, lstat, mkdir, open, readFile, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BackupctlError, corruptError, ioError } from '../errors.js';
import { syncDir, tempNameFor } from '../util/fsutil.js';
import { writeAll } from '../util/write-all.js';
import { DIRECT_ALIGN, alignedBuffer, directFlag } from '../util/direct-io.js';
import type { StagedWrite, Store, StoredFile } from './store.js';

/**
 * Test only: BACKUPCTL_TEST_KILL_AT_WRITE=N[:SIGNAL] kills the process (SIGKILL, as kill -9; or
 * sends it SIGNAL, e.g. SIGSTOP to let a test act mid-run) at its N-th write, after the temporary
 * file is written and synced and before it is moved into place: the repository tests stop a run
 * at every step this way, deterministically.
 */
let writes = 0;
const [killAt, killWith = 'SIGKILL'] = process.env.BACKUPCTL_TEST_KILL_AT_WRITE?.split(':') ?? [];
function killPoint(): void {
  const at = Number(killAt);
  if (Number.isInteger(at) && at > 0 && ++writes === at) process.kill(process.pid, killWith as NodeJS.Signals);
}

export class LocalStore implements Store {
  readonly readThrough = 512 << 10;

  /** Whether this file system takes direct writes (null: not tried yet). */
  private direct: boolean | null = directFlag() ? null : false;

  constructor(readonly root: string) {}

  get name(): string {
    return this.root;
  }

  get localDir(): string {
    return this.root;
  }

  private abs(path: string): string {
    return join(this.root, ...path.split('/'));
  }

  private async walk(dir: string, temps: boolean): Promise<StoredFile[]> {
    const out: StoredFile[] = [];
    const visit = async (rel: string) => {
      let names: string[];
      try {
        names = await readdir(this.abs(rel));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw ioError(err, this.abs(rel), 'list');
      }
      for (const name of names.sort()) {
        const path = `${rel}/${name}`;
        const st = await lstat(this.abs(path)).catch(() => null);
        if (!st) continue; // removed meanwhile (a concurrent prune)
        if (st.isDirectory()) await visit(path);
        else if (st.isFile() && name.startsWith('.') === temps) out.push({ path, size: st.size, mtimeMs: st.mtimeMs });
      }
    };
    await visit(dir);
    return out;
  }

  list(dir: string): Promise<StoredFile[]> {
    return this.walk(dir, false);
  }

  /** Every listing is a new one. */
  listAgain(dir: string): Promise<StoredFile[]> {
    return this.list(dir);
  }

  leftovers(dir: string): Promise<StoredFile[]> {
    return this.walk(dir, true);
  }

  async read(path: string): Promise<Buffer> {
    try {
      return await readFile(this.abs(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw corruptError(`${path} is missing from the repository ${this.root}`, { missing: path });
      throw ioError(err, this.abs(path), 'read');
    }
  }

  async readRange(path: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    let fd: number;
    try {
      fd = openSync(this.abs(path), constants.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw corruptError(`${path} is missing from the repository ${this.root}`, { missing: path });
      throw ioError(err, this.abs(path), 'open');
    }
    try {
      const buf = into ? Buffer.from(into.buffer, into.byteOffset, length) : Buffer.allocUnsafe(length);
      let got = 0;
      while (got < length) {
        const n = readSync(fd, buf, got, length - got, offset + got);
        if (n === 0) break;
        got += n;
      }
      return buf.subarray(0, got);
    } catch (err) {
      throw ioError(err, this.abs(path), 'read');
    } finally {
      closeSync(fd);
    }
  }

  /**
   * Asynchronous calls, so that the thread pool writes and syncs a pack while the caller goes on
   * chunking the next one (measured: the write and fsync of 1 GB of packs took 3.4 s of the
   * first backup's time when they were synchronous).
   */
  async write(path: string, data: Uint8Array[], opts: { exclusive?: boolean } = {}): Promise<void> {
    const { fh, tmp, target } = await this.openTemp(path);
    try {
      try {
        await writeAll(fh, [...data], 0);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await this.publish(tmp, target, opts.exclusive === true);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw err;
      throw ioError(err, target, 'write');
    }
  }

  /** The file is opened for direct writes where the file system takes them (util/direct-io.ts): a pack is not read again by the backup that writes it. */
  async stage(path: string): Promise<StagedWrite> {
    const { fh, tmp, target, direct } = await this.openStaged(path);
    const fail = async (err: unknown) => {
      await fh.close().catch(() => {});
      await unlink(tmp).catch(() => {});
      return err instanceof BackupctlError ? err : ioError(err, target, 'write');
    };
    return {
      fd: fh.fd,
      direct,
      commit: async () => {
        try {
          try {
            await fh.sync();
          } finally {
            await fh.close();
          }
          await this.publish(tmp, target, false);
        } catch (err) {
          throw await fail(err);
        }
      },
      abort: fail,
    };
  }

  /**
   * openTemp with O_DIRECT where it works. Some file systems refuse the flag when opening, some
   * only the first write (EINVAL either way): the first file is tried with one aligned block.
   */
  private async openStaged(path: string): Promise<{ fh: FileHandle; tmp: string; target: string; direct: boolean }> {
    const file = this.direct === false ? null : await this.openTemp(path, directFlag());
    if (file && this.direct === null) {
      let works: boolean | Error;
      try {
        await file.fh.write(alignedBuffer(DIRECT_ALIGN), 0, DIRECT_ALIGN, 0);
        await file.fh.truncate(0);
        works = true;
      } catch (err) {
        works = (err as NodeJS.ErrnoException).code === 'EINVAL' ? false : ioError(err, file.target, 'write');
      }
      if (works !== true) {
        await file.fh.close();
        await unlink(file.tmp).catch(() => {});
        if (works instanceof Error) throw works;
      }
      this.direct = works;
    }
    if (file && this.direct) return { ...file, direct: true };
    this.direct = false;
    return { ...(await this.openTemp(path))!, direct: false };
  }

  /** A new temporary file beside `path`'s place (its directory made if need be); with `flags` (O_DIRECT), null where the file system refuses them. */
  private async openTemp(path: string): Promise<{ fh: FileHandle; tmp: string; target: string }>;
  private async openTemp(path: string, flags: number): Promise<{ fh: FileHandle; tmp: string; target: string } | null>;
  private async openTemp(path: string, flags = 0): Promise<{ fh: FileHandle; tmp: string; target: string } | null> {
    const target = this.abs(path);
    const dir = dirname(target);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw ioError(err, dir, 'create directory');
    }
    const tmp = tempNameFor(target);
    try {
      return { fh: await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | flags, 0o600), tmp, target };
    } catch (err) {
      if (flags && (err as NodeJS.ErrnoException).code === 'EINVAL') {
        await unlink(tmp).catch(() => {}); // some file systems create the file before refusing the flag
        return null;
      }
      throw ioError(err, target, 'write');
    }
  }

  /** The synced temporary file moved into place (`exclusive`: linked, never replacing), and its directory synced. */
  private async publish(tmp: string, target: string, exclusive: boolean): Promise<void> {
    killPoint();
    if (exclusive) {
      await link(tmp, target); // fails with EEXIST, never replaces
      await unlink(tmp);
    } else await rename(tmp, target);
    await syncDir(dirname(target));
  }

  async delete(path: string): Promise<void> {
    try {
      await unlink(this.abs(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError(err, this.abs(path), 'delete');
    }
  }

  async isEmpty(): Promise<boolean> {
    try {
      return (await readdir(this.root)).length === 0;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
      throw ioError(err, this.root, 'read');
    }
  }

  async exists(path: string): Promise<boolean> {
    return lstat(this.abs(path)).then((s) => s.isFile(), () => false);
  }
}
