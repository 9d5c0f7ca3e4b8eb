// The archive writer's two ways of hashing stored content — where it is read, or where its
// segments are sealed (span-hash.ts) — must give byte-identical archives: digests land in tails
// and index entries that straddle segment boundaries, files end exactly on one, files are empty.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { EntryType } from '../../src/archive/format.js';
import { SpanHasher, OP_DIGEST, OP_UPDATE } from '../../src/archive/span-hash.js';

const fixed = { fileKey: new Uint8Array(32).fill(7), nonce: new Uint8Array(16).fill(9), created: '2026-11-22T12:00:00Z' };
const recipient = { type: 'test', label: 'test', wrap: () => ({ type: 'test', label: 'test', body: 'AAAA' }) };

function bytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let x = createHash('sha256').update(String(seed)).digest();
  for (let o = 0; o < n; o += 32) {
    x = createHash('sha256').update(x).digest();
    x.copy(out, o, 0, Math.min(32, n - o));
  }
  return out;
}

// Sizes around the 4096-byte segments and the 256 KiB frames, and odd ones, so that frames and
// 32-byte digests fall across segment boundaries in many different places.
const sizes = [0, 1, 31, 32, 33, 4000, 4050, 4096, 4100, 9000, 12_345, 262_144, 262_145, 300_000, 7, 4021, 4063, 4064, 4065, 100];
const chat = Buffer.from('12/03/2024, 21:00 - Ana: a line of chat that compresses well\n'.repeat(9000));

function* entries(chunk: number): Generator<SourceEntry> {
  yield { path: 'Media', type: EntryType.Dir, mode: 0o755, mtimeNs: 1n };
  for (const [i, n] of sizes.entries()) {
    const data = bytes(n, i);
    yield {
      path: `Media/f${String(i).padStart(2, '0')}.jpg`, type: EntryType.File, mode: 0o644, mtimeNs: BigInt(i),
      open: async () => chunkedContent((async function* () { for (let o = 0; o < data.length; o += chunk) yield data.subarray(o, o + chunk); })(), false),
    };
    if (i === 5) yield { path: `Media/link`, type: EntryType.Symlink, mode: 0o777, mtimeNs: 2n, target: 'f00.jpg' };
  }
  yield { path: '_chat.txt', type: EntryType.File, mode: 0o600, mtimeNs: 3n, open: async () => chunkedContent((async function* () { yield chat; })(), true) };
}

async function build(hashOnSealing: boolean, chunk: number): Promise<Buffer> {
  const sink = new MemorySink(hashOnSealing);
  await writeArchive({ recipients: [recipient], entries: entries(chunk), sink, segmentSize: 4096, fixed });
  return sink.bytes;
}

describe('archive writer', () => {
  it('hashing where segments are sealed gives the same archive as hashing where files are read', async () => {
    const here = await build(false, 5000);
    expect(here.length).toBeGreaterThan(sizes.reduce((a, b) => a + b, 0));
    expect((await build(true, 5000)).equals(here)).toBe(true);
    // How the source cuts its chunks does not change the archive either.
    expect((await build(true, 1)).equals(here)).toBe(true);
    expect((await build(false, 1 << 20)).equals(here)).toBe(true);
  });

  it('span hashing: a digest split across segments, used again later, and an empty file', () => {
    const h = new SpanHasher();
    const want = createHash('sha256').update('hello, world').digest();
    const empty = createHash('sha256').digest();
    // File 1's bytes span two segments, then its digest is split 10 + 22 across the next two.
    const seg1 = Buffer.from('hello, ');
    h.apply([OP_UPDATE, 1, 0, 7, 0], seg1);
    const seg2 = Buffer.concat([Buffer.from('world'), Buffer.alloc(10)]);
    h.apply([OP_UPDATE, 1, 0, 5, 0, OP_DIGEST, 1, 5, 0, 10], seg2);
    const seg3 = Buffer.alloc(22 + 32 + 32);
    h.apply([OP_DIGEST, 1, 0, 10, 22, OP_DIGEST, 1, 22, 0, 32, OP_DIGEST, 2, 54, 0, 32], seg3);
    expect(Buffer.concat([seg2.subarray(5), seg3.subarray(0, 22)])).toEqual(want);
    expect(seg3.subarray(22, 54)).toEqual(want);
    expect(seg3.subarray(54)).toEqual(empty); // no update before it: an empty file
    // Far-apart ids (the slab grows) keep what was finished before.
    const seg4 = Buffer.alloc(64);
    h.apply([OP_UPDATE, 5000, 0, 7, 0], seg1);
    h.apply([OP_DIGEST, 5000, 0, 0, 32, OP_DIGEST, 1, 32, 0, 32], seg4);
    expect(seg4.subarray(0, 32)).toEqual(createHash('sha256').update('hello, ').digest());
    expect(seg4.subarray(32)).toEqual(want);
  });
});
