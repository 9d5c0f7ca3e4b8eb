// surveySegments at the byte level: payloads sealed with the real STREAM code, then cut, damaged,
// extended or mixed with another key's segments, and judged segment by segment.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { TAG_LEN } from '../../src/archive/format.js';
import { padme } from '../../src/archive/entries.js';
import { newPayloadEnd, surveySegments } from '../../src/archive/segment-survey.js';
import { payloadKey, sealSegment, segmentKey } from '../../src/archive/stream.js';

const SEG = 4096;
const keyOf = (seed: Buffer) => segmentKey(payloadKey(seed, Buffer.alloc(16, 7)));
const fileKey = randomBytes(32);

/** A payload of `plain` bytes sealed in SEG-byte segments. */
function seal(plain: number, key = keyOf(fileKey)): Buffer {
  const n = Math.ceil(plain / SEG);
  const out: Buffer[] = [];
  for (let i = 0; i < n; i++) out.push(...sealSegment(key, i, i === n - 1, randomBytes(Math.min(SEG, plain - i * SEG))));
  return Buffer.concat(out);
}

/** Judge `bytes`, fed in `chunk`-byte pieces: which segments authenticate, and how it ends. */
async function judge(bytes: Buffer, chunk = 1000) {
  const end = newPayloadEnd();
  const ok: boolean[] = [];
  async function* pieces() {
    for (let o = 0; o < bytes.length; o += chunk) yield bytes.subarray(o, o + chunk);
  }
  for await (const s of surveySegments(keyOf(fileKey), SEG, pieces(), end)) ok[s.index] = s.plain !== null;
  return { ok, end };
}

const S = SEG + TAG_LEN;
// A plaintext length a writer can produce (a Padmé length) with a short final segment.
const PLAIN = padme(5 * SEG + 1000);

describe('surveySegments', () => {
  it('an intact payload: every segment authenticates, the final one as final', async () => {
    const { ok, end } = await judge(seal(PLAIN));
    expect(ok).toEqual([true, true, true, true, true, true]);
    expect(end).toMatchObject({ kind: 'final', firstMissing: null, appended: 0, segments: 6 });
  });

  it('a damaged segment in the middle and a damaged final one are damaged, not truncation', async () => {
    const b = seal(PLAIN);
    b[2 * S + 5]! ^= 1;
    b[b.length - 3]! ^= 1;
    const { ok, end } = await judge(b);
    expect(ok).toEqual([true, true, false, true, true, false]);
    expect(end.kind).toBe('damaged');
  });

  it('cut exactly at a segment boundary: the last segment present opens as a non-final one', async () => {
    const { ok, end } = await judge(seal(PLAIN).subarray(0, 3 * S));
    expect(ok).toEqual([true, true, true]);
    expect(end).toMatchObject({ kind: 'truncated', firstMissing: 3 });
  });

  it('cut inside a segment, or leaving 16 bytes or less of it: that segment is missing', async () => {
    for (const cut of [3 * S + 1000, 3 * S + 16, 3 * S + 1, 2 * S + S - 1]) {
      const { ok, end } = await judge(seal(PLAIN).subarray(0, cut));
      expect(end, String(cut)).toMatchObject({ kind: 'truncated', firstMissing: Math.floor(cut / S) });
      expect(ok.length, String(cut)).toBe(Math.floor(cut / S));
    }
  });

  it('segments sealed with another file key never authenticate', async () => {
    const b = seal(PLAIN);
    const other = seal(PLAIN, keyOf(randomBytes(32)));
    other.copy(b, S, S, 3 * S);
    const { ok } = await judge(b);
    expect(ok).toEqual([true, false, false, true, true, true]);
  });

  it('bytes after a whole final segment are appended, and not judged', async () => {
    const b = Buffer.concat([seal(4 * SEG), randomBytes(100)]);
    const { ok, end } = await judge(b, 4096);
    expect(ok).toEqual([true, true, true, true]);
    expect(end).toMatchObject({ kind: 'final', appended: 100 });
  });
});
