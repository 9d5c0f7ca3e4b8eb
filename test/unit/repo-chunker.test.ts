// The repository's chunker against the cut rule exactly as backupctl-repository(5) "CHUNKS"
// states it (a plain reimplementation, a byte pair per step), and its behaviour on edits.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { AVG_CHUNK, FIXED_CHUNK, MAX_CHUNK, MIN_CHUNK, chunkStream, cutPoint, gearTable } from '../../src/repo/chunker.js';
import { padme } from '../../src/repo/pack.js';

const G = gearTable(randomBytes(1024));

/** The man page's rule, written from the page: h over byte pairs from start + MIN, two masks. */
function documentedCut(d: Uint8Array, start: number, end: number): number {
  const n = end - start;
  if (n <= MIN_CHUNK) return n;
  const limit = Math.min(MAX_CHUNK, n);
  let h = 0;
  for (let i = start + MIN_CHUNK; i + 1 < start + limit; i += 2) {
    h = (Math.imul(h, 4) + Math.imul(G.g[d[i]!]!, 2) + G.g[d[i + 1]!]!) | 0;
    const mask = i + 1 < start + Math.min(AVG_CHUNK, n) ? 0xffff8000 : 0xfff80000;
    if ((h & mask) === 0) return i + 2 - start;
  }
  return limit;
}

async function chunks(data: Buffer, gear: typeof G | null = G): Promise<Buffer[]> {
  const out: Buffer[] = [];
  let at = 0;
  await chunkStream(gear, (dst) => {
    const n = data.copy(dst, 0, at);
    at += n;
    return n;
  }, (c) => {
    out.push(Buffer.from(c));
  });
  return out;
}

describe('repository chunker', () => {
  it('cuts exactly where the documented rule cuts, within the size bounds', () => {
    const d = randomBytes(8 << 20);
    let pos = 0;
    let count = 0;
    while (pos < d.length) {
      const end = Math.min(d.length, pos + MAX_CHUNK);
      const len = cutPoint(G, d, pos, end);
      expect(len).toBe(documentedCut(d, pos, end));
      if (pos + len < d.length) expect(len).toBeGreaterThanOrEqual(MIN_CHUNK);
      expect(len).toBeLessThanOrEqual(MAX_CHUNK);
      pos += len;
      count++;
    }
    // About 73 KiB on average on random data (8 MiB: ~110 chunks).
    expect(count).toBeGreaterThan(70);
    expect(count).toBeLessThan(200);
  });

  it('an append changes only the last chunk; an insert only the chunks around it', async () => {
    const base = randomBytes(3 << 20);
    const a = await chunks(base);
    expect(Buffer.concat(a).equals(base)).toBe(true);
    const appended = await chunks(Buffer.concat([base, randomBytes(10_000)]));
    const same = (x: Buffer[], y: Buffer[]) => x.filter((c) => y.some((d) => d.equals(c))).length;
    expect(same(a, appended)).toBeGreaterThanOrEqual(a.length - 1);
    const inserted = await chunks(Buffer.concat([base.subarray(0, 1 << 20), Buffer.from('twelve bytes'), base.subarray(1 << 20)]));
    expect(same(a, inserted)).toBeGreaterThanOrEqual(a.length - 2);
    expect(await chunks(Buffer.alloc(0))).toEqual([]);
  });

  it('cuts media (no gear) into fixed 1 MiB pieces', async () => {
    const d = randomBytes((5 << 20) / 2);
    expect((await chunks(d, null)).map((c) => c.length)).toEqual([FIXED_CHUNK, FIXED_CHUNK, FIXED_CHUNK / 2]);
  });

  it('pads with Padmé: never shorter, at most 12% longer', () => {
    for (const n of [1, 2, 100, 4097, 65_536, 1_000_003, 16 << 20]) {
      const p = padme(n);
      expect(p).toBeGreaterThanOrEqual(n);
      expect(p).toBeLessThanOrEqual(Math.ceil(n * 1.12) + 1);
    }
    expect(padme(1_000_003)).toBe(1_015_808); // E = 19, S = 5: a multiple of 2^14
  });
});
