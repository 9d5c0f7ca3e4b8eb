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
/** kind, id, at, skip, len: put digest bytes [skip, skip + len) at `at`, keep it for a later use. */
export const OP_DIGEST = 1;
/** As OP_DIGEST, the digest's last use: forgotten once its final byte is placed. */
export const OP_DIGEST_LAST = 2;

export class SpanHasher {
  private readonly running = new Map<number, Hash>();
  private readonly digests = new Map<number, Buffer>();

  /** Carry out a segment's operations on its plaintext, before it is sealed. */
  apply(ops: ArrayLike<number>, segment: Uint8Array): void {
    for (let i = 0; i < ops.length; i += SPAN_OP) {
      const kind = ops[i]!;
      const id = ops[i + 1]!;
      const a = ops[i + 2]!;
      const b = ops[i + 3]!;
      if (kind === OP_UPDATE) {
        let h = this.running.get(id);
        if (!h) this.running.set(id, (h = createHash('sha256')));
        h.update(segment.subarray(a, b));
        continue;
      }
      const len = ops[i + 4]!;
      let d = this.digests.get(id);
      if (!d) {
        // An empty file has no update before its digest.
        d = (this.running.get(id) ?? createHash('sha256')).digest();
        this.running.delete(id);
        this.digests.set(id, d);
      }
      segment.set(d.subarray(b, b + len), a);
      if (kind === OP_DIGEST_LAST && b + len === d.length) this.digests.delete(id);
    }
  }
}
