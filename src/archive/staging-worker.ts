// The staging thread of a restore (staging.ts): creates the staged directories and files and
// writes their content, in the order the main thread sends them, with synchronous system calls
// (one thread, so no two file creations contend for the same directory's lock).
import { closeSync, constants, fchmodSync, futimesSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import type { StagingBatch, StagingReply } from './staging.js';

let fd: number | null = null;
let pos = 0;
let path = '';
let failed = false;

function run(b: StagingBatch): void {
  const data = new Uint8Array(b.data);
  let at = 0;
  for (const op of b.ops) {
    if (typeof op === 'number') {
      // Content: the next `op` bytes of the batch, appended to the open file.
      for (let end = at + op; at < end; ) {
        const n = writeSync(fd!, data, at, end - at, pos);
        at += n;
        pos += n;
      }
    } else if (op.t === 'dir') {
      path = op.path;
      mkdirSync(op.path, { recursive: true, mode: 0o700 });
    } else if (op.t === 'open') {
      path = op.path;
      fd = openSync(op.path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      pos = 0;
    } else {
      fchmodSync(fd!, op.mode);
      futimesSync(fd!, op.mtime, op.mtime);
      closeSync(fd!);
      fd = null;
    }
  }
}

parentPort!.on('message', (b: StagingBatch) => {
  const reply = (m: { t: 'done' } | { t: 'error'; code?: string; message: string; path: string }) => parentPort!.postMessage({ ...m, data: b.data } satisfies StagingReply, [b.data]);
  if (failed) return reply({ t: 'done' }); // the first failure was reported; the rest is not done
  try {
    run(b);
    reply({ t: 'done' });
  } catch (err) {
    failed = true;
    if (fd !== null) closeSync(fd);
    reply({ t: 'error', code: (err as NodeJS.ErrnoException).code, message: (err as Error).message, path });
  }
});
