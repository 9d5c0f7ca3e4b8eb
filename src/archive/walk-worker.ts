// The directory walk's reading thread (see walk.ts): lists the tree, reads every file into the
// shared ring and hashes it, with plain synchronous system calls. Here a call costs its system
// call and nothing more; on the main thread each asynchronous one cost a thread-pool round trip,
// a promise and a wake-up (2.5 times the CPU for thousands of small files), and the hashing
// would take the core that seals the archive.
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, readdirSync, readlinkSync, type BigIntStats } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { EntryType } from './format.js';
import { CHUNK, RELEASED, SLOTS, STOP, type WalkMessage, type WalkSetup } from './walk-protocol.js';

const { root, ring, ctrl } = workerData as WalkSetup;
const post = (m: WalkMessage) => parentPort!.postMessage(m);
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** Thrown out of a wait when the main thread has stopped the walk. */
class Stopped extends Error {}

let produced = 0;
/** The next free ring slot, waiting while all of them hold chunks the main thread has not used. */
function acquire(): number {
  for (;;) {
    if (Atomics.load(ctrl, STOP)) throw new Stopped();
    const released = Atomics.load(ctrl, RELEASED);
    if (produced - released < SLOTS) return produced % SLOTS;
    Atomics.wait(ctrl, RELEASED, released);
  }
}

function warn(message: string): void {
  post({ t: 'warn', message });
}

/** One file: its chunks through the ring, then its hash and whether it changed while read. */
function readFile(abs: string, listed: BigIntStats): void {
  let fd: number;
  try {
    fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const message =
      code === 'ENOENT' ? `skipped ${abs}: it vanished before it could be read`
      : code === 'ELOOP' ? `skipped ${abs}: it was replaced by a symbolic link while listing`
      : ioError(err, abs, 'read').message.replace(/^cannot/, 'skipped: cannot');
    post({ t: 'skip', message });
    return;
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    if (st.ino !== listed.ino || st.dev !== listed.dev || !st.isFile()) {
      post({ t: 'skip', message: `skipped ${abs}: it was replaced while listing` });
      return;
    }
    const hash = createHash('sha256');
    let total = 0;
    for (;;) {
      const slot = acquire();
      const view = new Uint8Array(ring, slot * CHUNK, CHUNK);
      const n = readSync(fd, view, 0, CHUNK, total);
      if (n === 0) break;
      hash.update(view.subarray(0, n));
      produced++;
      post({ t: 'chunk', slot, length: n });
      total += n;
      // A short read is the end of a regular file (growth is caught by the fstat below).
      if (n < CHUNK) break;
    }
    const after = fstatSync(fd, { bigint: true });
    const changed = BigInt(total) !== listed.size || after.mtimeNs !== listed.mtimeNs || after.size !== listed.size || after.ctimeNs !== listed.ctimeNs;
    post({ t: 'end', sha256: hash.digest(), changed });
  } catch (err) {
    if (err instanceof Stopped) throw err;
    throw ioError(err, abs, 'read');
  } finally {
    closeSync(fd);
  }
}

/** Depth first, names in byte order, one lstat per name; never follows a symlink. */
function walk(absDir: string, rel: string): void {
  let raw: Buffer[];
  try {
    raw = readdirSync(absDir, { encoding: 'buffer' }); // raw bytes: tell real U+FFFD from bad UTF-8
  } catch (err) {
    if (rel === '') throw ioError(err, absDir, 'read');
    warn(`skipped ${absDir}: ${ioError(err, absDir, 'read').message.replace(/^cannot read [^:]*: /, '')}`);
    return;
  }
  raw.sort(Buffer.compare);
  for (const bytes of raw) {
    let name: string;
    try {
      name = strictUtf8.decode(bytes);
    } catch {
      warn(`skipped ${join(absDir, bytes.toString('utf8'))}: its name is not valid UTF-8`);
      continue;
    }
    const abs = join(absDir, name);
    const path = rel ? `${rel}/${name}` : name;
    let st: BigIntStats;
    try {
      st = lstatSync(abs, { bigint: true });
    } catch (err) {
      warn(`skipped ${abs}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it vanished' : ioError(err, abs, 'read').message}`);
      continue;
    }
    const base = { path, mode: Number(st.mode & 0o7777n), mtimeNs: st.mtimeNs };
    if (st.isDirectory()) {
      post({ t: 'entry', ...base, type: EntryType.Dir });
      walk(abs, path);
    } else if (st.isFile()) {
      post({ t: 'entry', ...base, type: EntryType.File });
      readFile(abs, st);
    } else if (st.isSymbolicLink()) {
      let target: string;
      try {
        target = readlinkSync(abs);
      } catch (err) {
        warn(`skipped ${abs}: ${ioError(err, abs, 'read').message}`);
        continue;
      }
      post({ t: 'entry', ...base, type: EntryType.Symlink, target });
    } else {
      warn(`skipped ${abs}: not a regular file, directory or symbolic link`);
    }
  }
}

try {
  let rootSt: BigIntStats;
  try {
    rootSt = lstatSync(root, { bigint: true });
  } catch (err) {
    throw ioError(err, root, 'read');
  }
  if (!rootSt.isDirectory()) throw new BackupctlError(Exit.io, `${root} is not a directory`);
  walk(root, '');
  post({ t: 'done' });
} catch (err) {
  if (!(err instanceof Stopped)) {
    post(err instanceof BackupctlError ? { t: 'error', code: err.code, message: err.message } : { t: 'error', code: Exit.internal, message: String((err as Error)?.stack ?? err) });
  }
}
