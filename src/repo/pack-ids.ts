// The ids of one pack's blobs while it is open or being written (pack.ts), so that a chunk met
// twice in a run is stored once: an open-addressing table of entry numbers over the pack's own
// list of blobs, where the ids already are. A Set of the ids as strings cost about 120 bytes of
// heap a chunk until its pack was written: 12 MB in a backup of 100,000 small files, the largest
// thing in its heap, and garbage to collect once the pack was written.
import { BLOB_ENTRY_LEN } from './index.js';

/** A slot for an id: its first four bytes (an HMAC: uniform). */
const slotOf = (b: Uint8Array, o: number) => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;

export class PackIds {
  /** Entry + 1 per slot (0: empty); a power of two, at least twice the entries. */
  private table = new Int32Array(1024);
  private n = 0;

  /** `list`: the pack's entries, BLOB_ENTRY_LEN bytes each, the id first; it may be replaced by a larger or a shorter copy (entries keep their numbers). */
  constructor(public list: Buffer) {}

  /** Entry `entry` of the list, whose id is set. */
  add(entry: number): void {
    if (2 * (this.n + 1) > this.table.length) {
      const old = this.table;
      this.table = new Int32Array(2 * old.length);
      for (const e of old) if (e) this.place(e - 1);
    }
    this.place(entry);
    this.n++;
  }

  has(id: Uint8Array): boolean {
    const mask = this.table.length - 1;
    for (let s = slotOf(id, 0) & mask; ; s = (s + 1) & mask) {
      const e = this.table[s]!;
      if (e === 0) return false;
      const o = (e - 1) * BLOB_ENTRY_LEN;
      if (this.list.compare(id, 0, 32, o, o + 32) === 0) return true;
    }
  }

  private place(entry: number): void {
    const mask = this.table.length - 1;
    let s = slotOf(this.list, entry * BLOB_ENTRY_LEN) & mask;
    while (this.table[s] !== 0) s = (s + 1) & mask;
    this.table[s] = entry + 1;
  }
}
