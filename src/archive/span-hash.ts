// Files' SHA-256s computed where segments are sealed (seal-worker.ts), so that the thread reading
// the files does not have to hash them all: on two cores, hashing was a third of create's work
// on the reading thread. The writer sends with each segment a list of operations: which of its
// bytes feed which file's hash, and where a file's finished digest goes (the 32 bytes of the
// record's tail and of its index entry, left as zeros). Segments are sealed in order, and a
// digest is written after the content it covers, so it is always asked for after its last byte.
import { createHash, type Hash } from 'node:crypto';

/** Every operation is SPAN_OP numbers: kind, file id, then three arguments. */
export const SPAN_OP = 5;
/** kind, id, from, to, 0: hash the segment's bytes [from, to). */
export const OP_UPDATE = 0;
/** kind, id, at, skip, len: put bytes [skip, skip + len) of the file's digest at `at`. */
export const OP_DIGEST = 1;

const DIGEST_LEN = 32;

export class SpanHasher {
  private readonly running = new Map<number, Hash>();
  /**
   * Finished digests by file id (ids are entry numbers, so dense), kept for the index entry that
   * comes long after the tail: one slab and a flag per id, not an object per file (a Map of
   * digest buffers cost about 400 bytes per entry with 100,000 files).
   */
  private digests = Buffer.alloc(0);
  private finished = new Uint8Array(0);

  /** Carry out a segment's operations on its plaintext, before it is sealed. */
  apply(ops: ArrayLike<number>, segment: Uint8Array): void {
    for (let i = 0; i < ops.length; i += SPAN_OP) {
      const id = ops[i + 1]!;
      const a = ops[i + 2]!;
      const b = ops[i + 3]!;
      if (ops[i] === OP_UPDATE) {
        let h = this.running.get(id);
        if (!h) this.running.set(id, (h = createHash('sha256')));
        h.update(segment.subarray(a, b));
        continue;
      }
      if (!this.finished[id]) this.finish(id);
      const at = id * DIGEST_LEN + b;
      segment.set(this.digests.subarray(at, at + ops[i + 4]!), a);
    }
  }

  /** The file's content is all hashed (its first digest operation comes after its last byte). */
  private finish(id: number): void {
    if (id >= this.finished.length) {
      const n = Math.max(id + 1, this.finished.length * 2, 1024);
      const digests = Buffer.alloc(n * DIGEST_LEN);
      this.digests.copy(digests);
      this.digests = digests;
      const finished = new Uint8Array(n);
      finished.set(this.finished);
      this.finished = finished;
    }
    // An empty file has no update before its digest.
    (this.running.get(id) ?? createHash('sha256')).digest().copy(this.digests, id * DIGEST_LEN);
    this.running.delete(id);
    this.finished[id] = 1;
  }
}
