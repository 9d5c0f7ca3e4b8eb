// Modification times as Node's utimes, futimes and lutimes can set them. They take seconds as a
// double, which libuv splits into seconds and nanoseconds by truncation, so a time is restored to
// the nanosecond only within 2^23 s (97 days) of 1970; further out, the spacing of doubles
// (2^-22 s, 238 ns, from 2004 to 2038) is the limit. The double chosen is the one that lands
// nearest the recorded time: within half that spacing. It is passed as a numeric string because
// Node replaces a negative number (any time before 1970) with the current time
// (nodejs/node#64597); a numeric string is taken as it is. backupctl(1) "RESTORE SAFETY".

const NS = 1_000_000_000n;

/** The time, in nanoseconds, that libuv gives the kernel for `seconds` (uv__fs_to_timespec). */
export function landsAt(seconds: number): bigint {
  let sec = Math.trunc(seconds);
  let nsec = Math.trunc((seconds - sec) * 1e9);
  if (nsec < 0) {
    nsec += 1e9;
    sec -= 1;
  }
  return BigInt(sec) * NS + BigInt(nsec);
}

const f64 = new Float64Array(1);
const bits = new BigInt64Array(f64.buffer);
/** The double `steps` representable values away from `d` (in either direction of its bits). */
function nextTo(d: number, steps: bigint): number {
  f64[0] = d;
  bits[0] += steps;
  return f64[0];
}

const distance = (a: bigint, b: bigint) => (a > b ? a - b : b - a);

/** `mtimeNs` as the utimes argument that lands nearest it. */
export function utimeArg(mtimeNs: bigint): string {
  // Whole seconds and the fraction apart: Number(mtimeNs) / 1e9 rounds twice.
  const guess = Number(mtimeNs / NS) + Number(mtimeNs % NS) / 1e9;
  let best = guess;
  let off = distance(landsAt(guess), mtimeNs);
  // Truncation can leave the nearest double one step short of the nearest landing.
  for (const step of [-2n, -1n, 1n, 2n]) {
    if (off === 0n) break;
    const d = nextTo(guess, step);
    if (!Number.isFinite(d)) continue; // stepped past 0's bit pattern
    const o = distance(landsAt(d), mtimeNs);
    if (o < off) [best, off] = [d, o];
  }
  return String(best);
}

/** The format's mtime is a signed 64-bit count of nanoseconds: 1677-09-21 to 2262-04-11. */
const MAX_NS = 2n ** 63n - 1n;
const MIN_NS = -(2n ** 63n);
/** `ns` within what the format holds, and whether it had to be clamped. */
export function storableTime(ns: bigint): { ns: bigint; clamped: boolean } {
  if (ns > MAX_NS) return { ns: MAX_NS, clamped: true };
  if (ns < MIN_NS) return { ns: MIN_NS, clamped: true };
  return { ns, clamped: false };
}
