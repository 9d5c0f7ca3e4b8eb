// walk.ts's prefetcher: reads the files the walk will read next into the page cache, so that when
// the data has to come from a disk the walk finds it there instead of waiting for each file in
// turn. The bytes go to a scratch buffer nobody reads. It stays at most AHEAD files in front of
// the walk (a shared counter of files the walk has reached), and never opens anything but the
// regular files it is sent (O_NOFOLLOW | O_NONBLOCK: a file swapped for a FIFO does not block it).
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

const { reached } = workerData as { reached: Int32Array };
/** Files read ahead of the walk at most. */
const AHEAD = 16;
const CHUNK = 256 << 10;
const scratch = Buffer.allocUnsafe(CHUNK);
let sent = 0;

parentPort!.on('message', (paths: string[]) => {
  for (const abs of paths) {
    const mine = sent++;
    for (;;) {
      const at = Atomics.load(reached, 0);
      if (mine < at) break; // the walk is past it already
      if (mine - at < AHEAD) {
        prefetch(abs);
        break;
      }
      Atomics.wait(reached, 0, at);
    }
  }
});

function prefetch(abs: string): void {
  let fd: number;
  try {
    fd = openSync(abs, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return; // the walk reports what it cannot read
  }
  try {
    if (!fstatSync(fd).isFile()) return;
    for (let pos = 0; readSync(fd, scratch, 0, CHUNK, pos) === CHUNK; pos += CHUNK);
  } catch {
    /* the walk reports what it cannot read */
  } finally {
    closeSync(fd);
  }
}
