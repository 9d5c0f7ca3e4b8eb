// The sealing thread of a PackWriter (pack.ts): it seals closed packs, and computes the ids of
// chunks read into the open pack when it has the time, reading both where they are (shared
// memory, nothing copied to reach it). On a store on this machine it writes the sealed file
// itself, segment by segment as sealed, through the descriptor of the store's temporary file;
// else it seals into a shared buffer, reused from one pack to the next, that the store writes
// from. On the backup's own thread, hashing and sealing 1 GB took 1.4 s of its 2.5 s.
import { parentPort, workerData } from 'node:worker_threads';
import { DedupKeys, packRecipient } from './keys.js';
import { sealInto, sealSegments } from './sealed.js';
import { freeBuffers } from '../archive/stream.js';
import { finished } from '../util/backlog.js';
import { writeAllSync } from '../util/write-all.js';

/** A pack buffer is sent once (`buffer`), then named by its number: a shared buffer in every message cost 0.4 ms each. */
export type PackJob =
  | { t: 'buffer'; n: number; buf: SharedArrayBuffer }
  | { t: 'forget'; n: number }
  | { t: 'hash'; n: number; offset: number; length: number }
  | { t: 'seal'; n: number; length: number; out: number }
  | { t: 'write'; n: number; length: number; fd: number };
export type PackReply = { t: 'buffer' | 'forget' } | { t: 'hash'; id: Uint8Array } | { t: 'seal'; length: number } | { t: 'error'; message: string; code?: string };

const buffers: Array<SharedArrayBuffer | undefined> = [];

const init = workerData as { readPublic: Uint8Array; dedupKey: Uint8Array; done: Int32Array };
const recipient = packRecipient(new Uint8Array(init.readPublic));
const dedup = new DedupKeys(init.dedupKey);
init.dedupKey.fill(0);
/** Test only: sealing fails as a crash of the thread would (the command must end in one clear line). */
const failing = process.env.BACKUPCTL_TEST_PACK_THREAD_FAILS === '1';

/**
 * Seal the first `length` bytes of `plain` and write them at the start of `fd`; the file's length.
 * One write per 64 KiB segment, as it is sealed: the cipher's output is written while still in
 * the cache and never copied, and the page cache is filled in small pieces (the kernel sizes its
 * pages by the write: whole-pack writes of 16 MiB cost 0.4-3 s of system time per GB here,
 * 64 KiB ones 0.22-0.36 s).
 */
function sealToFile(plain: Uint8Array, fd: number): number {
  let pos = 0;
  let previous: Buffer[] = [];
  sealSegments(plain, [recipient], (pieces) => {
    pos += writeAllSync(fd, [...pieces], pos);
    // Freed one segment late: freeing them at once handed the memory back to the system each time.
    freeBuffers(previous);
    previous = pieces;
  });
  freeBuffers(previous);
  return pos;
}

parentPort!.on('message', (m: PackJob) => {
  if ((m.t === 'seal' || m.t === 'write') && failing) throw new Error('test failure of the thread');
  try {
    if (m.t === 'buffer') {
      buffers[m.n] = m.buf;
      parentPort!.postMessage({ t: 'buffer' } satisfies PackReply);
    } else if (m.t === 'forget') {
      buffers[m.n] = undefined;
      parentPort!.postMessage({ t: 'forget' } satisfies PackReply);
    } else if (m.t === 'hash') {
      const id = dedup.chunkId(new Uint8Array(buffers[m.n]!, m.offset, m.length));
      parentPort!.postMessage({ t: 'hash', id } satisfies PackReply);
    } else if (m.t === 'write') {
      const length = sealToFile(new Uint8Array(buffers[m.n]!, 0, m.length), m.fd);
      parentPort!.postMessage({ t: 'seal', length } satisfies PackReply);
    } else {
      // Sealed into another shared buffer (`out`), from which the store writes it.
      const length = sealInto(new Uint8Array(buffers[m.n]!, 0, m.length), [recipient], new Uint8Array(buffers[m.out]!));
      parentPort!.postMessage({ t: 'seal', length } satisfies PackReply);
    }
  } catch (err) {
    // An errno (ENOSPC, EIO...) is the file's, for the store to report; anything else, the thread's.
    const code = (err as NodeJS.ErrnoException).code;
    parentPort!.postMessage({ t: 'error', message: (err as Error).message, code: code && /^E[A-Z0-9]+$/.test(code) ? code : undefined } satisfies PackReply);
  } finally {
    if (m.t !== 'buffer' && m.t !== 'forget') finished(init.done);
  }
});
