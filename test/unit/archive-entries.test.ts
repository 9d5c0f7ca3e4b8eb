// Entry records and the index with 64-bit sizes and offsets, and Padmé, at the byte level.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { BufferSource, IndexDecoder, decodeFooter, decodeIndex, encodeFooter, encodeHead, encodeIndexEntry, encodeTail, padme, readHead, readTail, type IndexEntry } from '../../src/archive/entries.js';
import { Codec, EntryType } from '../../src/archive/format.js';

const big: IndexEntry = {
  type: EntryType.File, path: 'Media/WhatsApp Video/VID-20240101-WA0001.mp4', mode: 0o640, mtimeNs: -1234567890123n,
  codec: Codec.Stored, target: '', size: 5n * 2n ** 32n + 7n, sha256: createHash('sha256').update('x').digest(), flags: 1,
  offset: 6 * 2 ** 32 + 3, length: 5 * 2 ** 32 + 200,
};

describe('entry records', () => {
  it('round-trip sizes and offsets beyond 4 GiB and negative mtimes', async () => {
    const rec = Buffer.concat([encodeHead(big), encodeTail(big)]);
    const src = new BufferSource(rec);
    const head = await readHead(src);
    const tail = await readTail(src);
    expect({ ...head, ...tail }).toEqual({ type: big.type, path: big.path, mode: big.mode, mtimeNs: big.mtimeNs, codec: big.codec, target: '', size: big.size, sha256: big.sha256, flags: 1 });
    const index = await decodeIndex(Buffer.concat([encodeIndexEntry(big), encodeIndexEntry({ ...big, path: 'b', offset: 1, length: 2 })]), 2);
    expect(index[0]).toEqual(big);
    expect(index[1]!.offset).toBe(1);
  });

  it('refuses an index with trailing bytes or too few records', async () => {
    const one = encodeIndexEntry(big);
    await expect(decodeIndex(Buffer.concat([one, Buffer.of(0)]), 1)).rejects.toThrow(/trailing/);
    await expect(decodeIndex(one, 2)).rejects.toThrow(/truncated/);
  });

  it('IndexDecoder gives the same entries whatever pieces the index arrives in', async () => {
    const entries: IndexEntry[] = Array.from({ length: 200 }, (_, i) => ({
      ...big, path: `dir ${i % 7}/file-${i}-${'ñ'.repeat(i % 5)}.jpg`, offset: i * 1000, length: 999,
      type: i % 3 === 0 ? EntryType.Symlink : EntryType.File, target: i % 3 === 0 ? `t${i}` : '',
      sha256: createHash('sha256').update(String(i)).digest(),
    }));
    const body = Buffer.concat(entries.map(encodeIndexEntry));
    const expected = await decodeIndex(body, entries.length);
    expect(expected).toEqual(entries);
    for (const size of [1, 2, 7, 75, 1000, body.length]) {
      const d = new IndexDecoder(entries.length, body.length);
      const got: IndexEntry[] = [];
      for (let o = 0; o < body.length; o += size) got.push(...d.push(body.subarray(o, o + size)));
      d.end();
      expect(got, `pieces of ${size}`).toEqual(expected);
    }
    const short = new IndexDecoder(entries.length, body.length);
    short.push(body.subarray(0, body.length - 5));
    expect(() => short.end()).toThrow(/truncated|trailing/);
  });

  it('footer: consistent values only', () => {
    const f = { indexOffset: 2 ** 33, indexLength: 99, entryCount: 3 };
    expect(decodeFooter(encodeFooter(f), 2 ** 34)).toEqual(f);
    expect(() => decodeFooter(encodeFooter(f), 2 ** 33 + 100)).toThrow(/inconsistent/);
    const bad = encodeFooter(f);
    bad[0] ^= 1;
    expect(() => decodeFooter(bad, 2 ** 34)).toThrow(/footer/);
  });

  it('Padmé: known values, never smaller, overhead at most 12% from 256 bytes on', () => {
    expect([0, 1, 2, 3, 100, 1000, 1024, 1025, 123456789].map(padme)).toEqual([0, 1, 2, 3, 104, 1024, 1024, 1088, 123731968]);
    for (let l = 256; l < 1e7; l = Math.floor(l * 1.37) + 1) {
      const p = padme(l);
      expect(p).toBeGreaterThanOrEqual(l);
      expect(p / l).toBeLessThanOrEqual(1.12);
    }
  });
});
