// A FIFO of buffers from which exact byte counts are taken, copying only when a request spans
// buffers. Shared by the segment opener (sealed bytes) and the record parser (plaintext bytes).
export class ByteQueue {
  private q: Buffer[] = [];
  length = 0;

  push(b: Uint8Array): void {
    if (b.length === 0) return;
    this.q.push(Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.length));
    this.length += b.length;
  }

  /** Take exactly n bytes (n ≤ length): a view when they lie in one buffer, else a copy. */
  take(n: number): Buffer {
    const first = this.q[0];
    if (n === 0) return Buffer.alloc(0);
    if (first && first.length >= n) {
      if (first.length === n) this.q.shift();
      else this.q[0] = first.subarray(n);
      this.length -= n;
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let o = 0;
    while (o < n) {
      const f = this.q[0]!;
      const k = Math.min(f.length, n - o);
      f.copy(out, o, 0, k);
      if (k === f.length) this.q.shift();
      else this.q[0] = f.subarray(k);
      o += k;
    }
    this.length -= n;
    return out;
  }

  /** Take up to n bytes without copying (at most the rest of the first buffer). */
  takeSome(n: number): Buffer {
    const first = this.q[0]!;
    return this.take(Math.min(n, first.length));
  }
}
