// The sealing thread of a file sink (output.ts FileSink.segments): seals each plaintext segment
// it is sent and writes it at its place in the archive file, then sends the buffer back. Files'
// hashes it is asked for are computed from the plaintext first (span-hash.ts).
import { parentPort, workerData } from 'node:worker_threads';
import { TAG_LEN } from './format.js';
import type { SealReply } from './output.js';
import { finished } from '../util/backlog.js';
import { writeAllSync } from '../util/write-all.js';
import { SpanHasher } from './span-hash.js';
import { freeBuffers, sealSegment, segmentKey } from './stream.js';

const { fd, segmentSize, base, sealed } = workerData as { fd: number; key: Uint8Array; segmentSize: number; base: number; sealed: Int32Array };
const key = segmentKey(Buffer.from((workerData as { key: Uint8Array }).key));
(workerData as { key: Uint8Array }).key.fill(0);
const reply = (m: SealReply, transfer: ArrayBuffer[] = []) => parentPort!.postMessage(m, transfer);

let previous: Buffer[] = [];
const hasher = new SpanHasher();

parentPort!.on('message', (m: { index: number; last: boolean; length: number; buf: ArrayBuffer; ops: number[] }) => {
  try {
    const plain = new Uint8Array(m.buf, 0, m.length);
    hasher.apply(m.ops, plain);
    const pieces = sealSegment(key, m.index, m.last, plain);
    const bytes = writeAllSync(fd, [...pieces], base + m.index * (segmentSize + TAG_LEN));
    // Freed one segment late: freeing them at once handed the memory back to the system each
    // time (the top of this thread's heap), to be faulted in again for the next segment.
    freeBuffers(previous);
    previous = pieces;
    finished(sealed);
    reply({ t: 'sealed', index: m.index, buf: m.buf, bytes }, [m.buf]);
  } catch (err) {
    reply({ t: 'error', code: (err as NodeJS.ErrnoException).code, message: (err as Error).message });
  }
});
