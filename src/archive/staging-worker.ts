// The staging thread of a restore (staging.ts): creates the staged directories and files and
// writes their content, in the order the main thread sends them, with synchronous system calls
// (one thread, so no two file creations contend for the same directory's lock). It hashes the
// files it is asked to as it writes them, and checks them against the archive's hash at close.
// Paths come relative to the staging directory; one that resolves outside it is refused, whatever
// the main thread checked (defence in depth).
import { createHash, type Hash } from 'node:crypto';
import { closeSync, constants, fchmodSync, futimesSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { finished } from '../util/backlog.js';
import type { StagingBatch, StagingReply, StagingResult } from './staging.js';
import { Outside, stagedPath } from './staged-path.js';

const inside = (rel: string) => stagedPath(root, rel);

const { written, root } = workerData as { written: Int32Array; root: string };
let fd: number | null = null;
let hash: Hash | null = null;
let pos = 0;
let path = '';
let failed = false;

/** A file's content does not hash to what the archive says. */
class Mismatch extends Error {}
function run(b: StagingBatch): void {
  const data = new Uint8Array(b.data);
  let at = 0;
  for (const op of b.ops) {
    if (typeof op === 'number') {
      // Content: the next `op` bytes of the batch, appended to the open file.
      hash?.update(data.subarray(at, at + op));
      for (let end = at + op; at < end; ) {
        const n = writeSync(fd!, data, at, end - at, pos);
        at += n;
        pos += n;
      }
    } else if (op.t === 'dir') {
      path = inside(op.path);
      mkdirSync(path, { recursive: true, mode: 0o700 });
    } else if (op.t === 'open') {
      path = inside(op.path);
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      hash = op.hash ? createHash('sha256') : null;
      pos = 0;
    } else {
      if (hash && !hash.digest().equals(op.sha256!)) throw new Mismatch(op.name);
      fchmodSync(fd!, op.mode);
      futimesSync(fd!, op.mtime, op.mtime);
      closeSync(fd!);
      fd = null;
    }
  }
}

parentPort!.on('message', (b: StagingBatch) => {
  const reply = (m: StagingResult) => parentPort!.postMessage({ ...m, data: b.data } satisfies StagingReply, [b.data]);
  if (failed) return reply({ t: 'done' }); // the first failure was reported; the rest is not done
  try {
    run(b);
    finished(written);
    reply({ t: 'done' });
  } catch (err) {
    failed = true;
    if (fd !== null) closeSync(fd);
    if (err instanceof Mismatch) reply({ t: 'mismatch', name: err.message });
    else if (err instanceof Outside) reply({ t: 'outside', name: err.message });
    else reply({ t: 'error', code: (err as NodeJS.ErrnoException).code, message: (err as Error).message, path });
  }
});
