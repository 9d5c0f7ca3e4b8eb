// times.ts against the kernel: the argument utimeArg picks lands where landsAt says (libuv's
// conversion), as near the recorded nanoseconds as a double allows; and the Node behaviour it
// works around (a negative number becomes "now") is still there, so the detour is still needed.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lstatSync, utimesSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { landsAt, storableTime, utimeArg } from '../../src/archive/times.js';

let dir: string;
let file: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'backupctl-times-'));
  file = join(dir, 'f');
  writeFileSync(file, '');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

const set = (arg: string | number) => {
  utimesSync(file, arg, arg);
  return lstatSync(file, { bigint: true }).mtimeNs;
};

/**
 * A deterministic spread of values (xorshift), seconds below `limit` in magnitude: either sign
 * within 2^31 s, positive beyond (ext4 keeps nothing before 1901-12-13T20:45:52Z).
 */
function* samples(limit: number, n: number): Generator<bigint> {
  let x = 0x9e3779b9 ^ limit;
  const next = () => ((x ^= x << 13), (x ^= x >>> 17), (x ^= x << 5), (x >>> 0) / 2 ** 32);
  for (let i = 0; i < n; i++) {
    const s = BigInt(Math.floor(next() * limit)) * (i % 2 && limit <= 2 ** 31 ? -1n : 1n);
    yield s * 1_000_000_000n + BigInt(Math.floor(next() * 1e9));
  }
}

describe('utimeArg', () => {
  for (const [range, limit, bound] of [
    ['within 2^23 s of 1970', 2 ** 23, 0n],
    ['within 2^31 s (1901-12-13 to 2038-01-19)', 2 ** 31, 120n],
    ['within 2^32 s (to 2106)', 2 ** 32, 239n],
    ['within 2^33 s (to 2242)', 2 ** 33, 477n],
  ] as const) {
    it(`${range}: lands where predicted, within ${bound} ns`, () => {
      let worst = 0n;
      for (const t of samples(limit, 400)) {
        const arg = utimeArg(t);
        const got = set(arg);
        expect(got, `${t} via ${arg}`).toBe(landsAt(Number(arg)));
        const off = got > t ? got - t : t - got;
        if (off > worst) worst = off;
      }
      expect(worst).toBeLessThanOrEqual(bound);
    });
  }

  it('exact values around 1970 and the moon landing', () => {
    for (const t of [0n, 1n, -1n, 999_999_999n, -999_999_999n, -1_000_000_000n, 123_456_789n]) expect(set(utimeArg(t)), String(t)).toBe(t);
    expect(set(utimeArg(-14_182_939_876_543_211n))).toBe(-14_182_939_876_543_210n); // 2^-29 s apart: 1 ns off
  });

  it('the Node behaviour it works around: a negative number is taken as now (nodejs/node#64597)', () => {
    const before = BigInt(Date.now() - 5_000) * 1_000_000n;
    expect(set(-1) > before).toBe(true);
    expect(set('-1')).toBe(-1_000_000_000n);
  });
});

describe('storableTime', () => {
  it('clamps to the signed 64-bit nanoseconds of the format', () => {
    expect(storableTime(10_413_792_000_000_000_000n)).toEqual({ ns: 2n ** 63n - 1n, clamped: true });
    expect(storableTime(-(2n ** 63n) - 1n)).toEqual({ ns: -(2n ** 63n), clamped: true });
    expect(storableTime(-5n)).toEqual({ ns: -5n, clamped: false });
  });
});
