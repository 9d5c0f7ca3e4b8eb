// glibc hands the top of a thread's heap back to the system once 128 KiB of it is free, so the
// buffers a thread frees behind it (decrypted segments, sealed pieces once written) were faulted
// in afresh for the next ones: restore, 30,000 page faults a GB, a third of all; a first backup
// of 1 GB, 36,500 faults, or at times 117,000 and a quarter more CPU. Freeing one block glibc had
// to map raises that threshold to twice the block's size for the rest of the process.
import { freeBuffers } from '../archive/stream.js';

/** Let threads keep up to 8 MiB of freed heap for their next allocations (process-wide, once is enough). */
export function keepFreedHeap(): void {
  freeBuffers([Buffer.allocUnsafeSlow(4 << 20)]);
}
