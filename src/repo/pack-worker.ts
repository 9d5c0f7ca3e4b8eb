// The threads of a PackWriter (pack.ts), two of this one file: one computes the ids of chunks read
// into the open pack, the other seals closed packs. Both read the pack where it is (shared
// memory), so nothing is copied to reach them, and the sealing is done in place. On the backup's
// own thread, hashing and sealing 1 GB took 1.4 s of its 2.5 s, and webcrypto on the thread pool
// copied every chunk first (0.9 s more).
import { parentPort, workerData } from 'node:worker_threads';
import { DedupKeys, packRecipient } from './keys.js';
import { sealInto } from './sealed.js';

/** A pack buffer is sent once (`buffer`), then named by its number: a shared buffer in every message cost 0.4 ms each. */
export type PackJob =
  | { t: 'buffer'; n: number; buf: SharedArrayBuffer }
  | { t: 'forget'; n: number }
  | { t: 'hash'; n: number; offset: number; length: number }
  | { t: 'seal'; n: number; length: number };
export type PackReply = { t: 'buffer' | 'forget' } | { t: 'hash'; id: Uint8Array } | { t: 'seal'; length: number } | { t: 'error'; message: string };

const buffers: Array<SharedArrayBuffer | undefined> = [];

const init = workerData as { readPublic: Uint8Array; dedupKey: Uint8Array };
const recipient = packRecipient(new Uint8Array(init.readPublic));
const dedup = new DedupKeys(init.dedupKey);
init.dedupKey.fill(0);
/** Test only: sealing fails as a crash of the thread would (the command must end in one clear line). */
const failing = process.env.BACKUPCTL_TEST_PACK_THREAD_FAILS === '1';

parentPort!.on('message', (m: PackJob) => {
  if (m.t === 'seal' && failing) throw new Error('test failure of the thread');
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
    } else {
      // Sealed where it is (sealInto), from where the store writes it.
      const length = sealInto(new Uint8Array(buffers[m.n]!, 0, m.length), [recipient], new Uint8Array(buffers[m.n]!));
      parentPort!.postMessage({ t: 'seal', length } satisfies PackReply);
    }
  } catch (err) {
    parentPort!.postMessage({ t: 'error', message: (err as Error).message } satisfies PackReply);
  }
});
