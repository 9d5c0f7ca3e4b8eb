import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import {
  ALPHABET,
  DATA_SYMBOLS,
  GROUPS,
  GROUP_LEN,
  formatRecoveryCode,
  generateRecoveryCode,
  parseRecoveryCode,
  recoveryIdentity,
  recoveryKeyPair,
  recoveryRecipientEntry,
} from '../../src/keys/recovery-code.js';
import { generateX25519, publicKeyOf, wrapX25519 } from '../../src/keys/x25519.js';
import { recipientFromEntry } from '../../src/config.js';
import { BackupctlError, Exit } from '../../src/errors.js';
import { b64decode } from '../../src/util/base64.js';

const FORMAT = /^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){6}$/;
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Known answers computed independently (Python `cryptography`: HKDF-SHA-256 + X25519, and a
// separate GF(32) implementation of the check symbols), not by the code under test.
const KAT = [
  {
    data: '0123456789ABCDEFGHJKMNPQRSTV',
    code: '01233-4567V-89AB2-CDEFE-GHJK1-MNPQS-RSTV0',
    secret: 'ca11b175be2e56f22b709e5fdf9cab5d49f93dafadcb41a3cd6928f9a2337591',
    public: 'f27b9ac5e9e1e304570d254a944dae9251e7a5f8c990dd1174d3ff50f9007b34',
  },
  {
    data: 'ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ',
    secret: '42a1d915ef63ed77ae9891f7250607ae50423d6bf1129be8e0a24987a36eec93',
    public: '4105ba16174517415c09226464bf2776cdca02bd529a268467ab795908920d7f',
  },
];

/** The BackupctlError a parse throws (fails the test if it does not throw one). */
function parseError(input: string): BackupctlError {
  try {
    parseRecoveryCode(input);
  } catch (err) {
    expect(err).toBeInstanceOf(BackupctlError);
    expect((err as BackupctlError).code).toBe(Exit.noKey);
    return err as BackupctlError;
  }
  throw new Error(`parse accepted ${input}`);
}

const symbolsOf = (code: string) => [...code.replace(/-/g, '')];
const join = (symbols: string[]) => symbols.join('');
const groupText = (symbols: string[], g: number) => join(symbols.slice(g * GROUP_LEN, (g + 1) * GROUP_LEN));

describe('generation', () => {
  it('gives 7 dash-separated groups of 5 alphabet symbols that parse back', () => {
    for (let i = 0; i < 200; i++) {
      const code = generateRecoveryCode();
      expect(code).toMatch(FORMAT);
      const data = parseRecoveryCode(code);
      expect(data).toHaveLength(DATA_SYMBOLS);
      expect(formatRecoveryCode(data)).toBe(code);
    }
  });

  it('draws every data symbol uniformly (140 bits, no bias, no fixed bits)', () => {
    const n = 2000;
    const counts = new Map<string, number>();
    const perPosition = Array.from({ length: DATA_SYMBOLS }, () => new Set<string>());
    const seen = new Set<string>();
    for (let i = 0; i < n; i++) {
      const data = parseRecoveryCode(generateRecoveryCode());
      seen.add(data);
      [...data].forEach((c, p) => {
        counts.set(c, (counts.get(c) ?? 0) + 1);
        perPosition[p]!.add(c);
      });
    }
    expect(seen.size).toBe(n);
    const expected = (n * DATA_SYMBOLS) / 32; // 1750, standard deviation about 41
    expect(counts.size).toBe(32);
    for (const c of ALPHABET) expect(Math.abs(counts.get(c)! - expected)).toBeLessThan(300);
    // Every position takes (nearly) all 32 values: no position is stuck on a few bits.
    for (const s of perPosition) expect(s.size).toBeGreaterThanOrEqual(28);
  });
});

describe('normalisation', () => {
  const { code, data } = KAT[0]!;
  it('ignores case, spaces, dashes, dots, underscores and line breaks', () => {
    expect(parseRecoveryCode(code.toLowerCase())).toBe(data);
    expect(parseRecoveryCode(code.replace(/-/g, ' '))).toBe(data);
    expect(parseRecoveryCode(code.replace(/-/g, ''))).toBe(data);
    expect(parseRecoveryCode(code.replace(/-/g, '.'))).toBe(data);
    expect(parseRecoveryCode(` ${code.replace(/-/g, '_').replace('V', 'v\n')}\t`)).toBe(data);
  });

  it('reads O as 0, I and L as 1, U as V', () => {
    const typed = code.replace(/0/g, 'O').replace(/1/g, 'i').replace(/V/g, 'U').replace(/^O1/, 'Ol');
    expect(typed).not.toBe(code);
    expect(parseRecoveryCode(typed)).toBe(data);
  });

  it('refuses a wrong length saying how many symbols were expected and got', () => {
    expect(parseError(code.slice(0, -1)).message).toBe('recovery code: expected 35 symbols (7 groups of 5), got 34');
    expect(parseError(`${code}-A`).message).toBe('recovery code: expected 35 symbols (7 groups of 5), got 36');
    expect(parseError('').message).toContain('got 0');
  });

  it('names a symbol outside the alphabet and its group', () => {
    const s = symbolsOf(code);
    s[12] = '#';
    expect(parseError(join(s)).message).toMatch(/^recovery code: '#' in group 3 is not a recovery-code symbol/);
    s[12] = 'é';
    expect(parseError(join(s)).message).toContain('U+00C9 in group 3');
  });
});

describe('per-group check symbols', () => {
  it('match the independently computed known answer', () => {
    expect(formatRecoveryCode(KAT[0]!.data)).toBe(KAT[0]!.code);
  });

  it('name the group with a typo, and every wrong group, by number only', () => {
    const s = symbolsOf(KAT[0]!.code);
    s[12] = s[12] === 'A' ? 'B' : 'A';
    expect(parseError(join(s)).message).toBe('recovery code: group 3 has a typo');
    s[0] = s[0] === 'Z' ? 'Y' : 'Z';
    s[34] = s[34] === 'Z' ? 'Y' : 'Z';
    expect(parseError(join(s)).message).toBe('recovery code: groups 1, 3 and 7 have typos');
  });

  it('never echo a group: a systematically wrong code (every group off by one symbol) shows none of it', () => {
    for (let i = 0; i < 50; i++) {
      const s = symbolsOf(generateRecoveryCode());
      const t = s.map((c, p) => (p % GROUP_LEN === 2 ? ALPHABET[(ALPHABET.indexOf(c) + 1) % 32]! : c));
      const m = parseError(join(t)).message;
      expect(m).toBe('recovery code: groups 1, 2, 3, 4, 5, 6 and 7 have typos');
      // No run of 3 symbols from the typed or the real code appears in the message.
      for (const code of [join(t), join(s)]) {
        for (let p = 0; p + 3 <= code.length; p++) if (!code.slice(p, p + 3).includes('-')) expect(m).not.toContain(code.slice(p, p + 3));
      }
    }
  });

  it('report two groups typed in each other\'s place as swapped, next to a typo elsewhere', () => {
    const s = symbolsOf(KAT[0]!.code);
    const groups = Array.from({ length: GROUPS }, (_, g) => groupText(s, g));
    [groups[1], groups[4]] = [groups[4]!, groups[1]!];
    expect(parseError(groups.join('-')).message).toBe('recovery code: groups 2 and 5 are swapped');
    [groups[0], groups[6]] = [groups[6]!, groups[0]!];
    expect(parseError(groups.join('-')).message).toBe('recovery code: groups 1 and 7 are swapped; groups 2 and 5 are swapped');
    groups[2] = groups[2]!.slice(0, 4) + (groups[2]![4] === 'A' ? 'B' : 'A');
    expect(parseError(groups.join('-')).message).toBe('recovery code: groups 1 and 7 are swapped; groups 2 and 5 are swapped; group 3 has a typo');
  });

  // Every group (position 1..7) of random codes, every symbol position in it, every other value.
  it('catch every single substituted symbol, naming its group', () => {
    for (let i = 0; i < 30; i++) {
      const s = symbolsOf(generateRecoveryCode());
      for (let p = 0; p < s.length; p++) {
        for (const c of ALPHABET) {
          if (c === s[p]) continue;
          const t = [...s];
          t[p] = c;
          expect(parseError(join(t)).message).toBe(`recovery code: group ${Math.floor(p / GROUP_LEN) + 1} has a typo`);
        }
      }
    }
  });

  // Exhaustive: in every group, at every neighbour position (including last data symbol ↔
  // check symbol), every pair x ≠ y. For the check position, varying the 3rd and 4th data
  // symbols over all 32×32 values yields every (4th symbol, check symbol) pair exactly once.
  it('catch every swap of two different neighbours, naming its group', () => {
    const base = [...parseRecoveryCode(generateRecoveryCode())];
    const per = GROUP_LEN - 1;
    let swaps = 0;
    for (let g = 0; g < GROUPS; g++) {
      for (let k = 0; k < GROUP_LEN - 1; k++) {
        for (const x of ALPHABET) {
          for (const y of ALPHABET) {
            const d = [...base];
            const at = g * per + Math.min(k, per - 2);
            d[at] = x;
            d[at + 1] = y;
            const t = symbolsOf(formatRecoveryCode(d.join('')));
            const p = g * GROUP_LEN + k;
            if (t[p] === t[p + 1]) continue;
            [t[p], t[p + 1]] = [t[p + 1]!, t[p]!];
            expect(parseError(join(t)).message).toBe(`recovery code: group ${g + 1} has a typo`);
            swaps++;
          }
        }
      }
    }
    expect(swaps).toBe(GROUPS * (GROUP_LEN - 1) * 32 * 31);
  });

  it('catch a group typed in the wrong place, and report the two as swapped', () => {
    for (let i = 0; i < 50; i++) {
      const s = symbolsOf(generateRecoveryCode());
      for (let a = 0; a < GROUPS; a++) {
        for (let b = a + 1; b < GROUPS; b++) {
          const groups = Array.from({ length: GROUPS }, (_, g) => groupText(s, g));
          [groups[a], groups[b]] = [groups[b]!, groups[a]!];
          expect(parseError(groups.join('-')).message).toBe(`recovery code: groups ${a + 1} and ${b + 1} are swapped`);
        }
      }
    }
  });
});

describe('key derivation and identity', () => {
  it('derives the known-answer key pair', () => {
    for (const k of KAT) {
      const kp = recoveryKeyPair(formatRecoveryCode(k.data));
      expect(hex(kp.secretKey)).toBe(k.secret);
      expect(hex(kp.publicKey)).toBe(k.public);
      expect(hex(publicKeyOf(kp.secretKey))).toBe(k.public);
    }
    // Any spelling of the same code gives the same key.
    expect(hex(recoveryKeyPair(KAT[0]!.code.toLowerCase().replace(/-/g, ' ')).publicKey)).toBe(KAT[0]!.public);
  });

  it('refuses a code with a typo before deriving anything', () => {
    expect(() => recoveryKeyPair(KAT[0]!.code.replace('V', 'W'))).toThrow(/^recovery code: group 2 has a typo$/);
  });

  it('round-trips a file key through a recovery slot, and a wrong code opens nothing', async () => {
    const code = generateRecoveryCode();
    const entry = recoveryRecipientEntry(code, 'paper copy');
    expect(entry).toEqual({ type: 'recovery', label: 'paper copy', publicKey: entry.publicKey, created: entry.created });
    expect(Number.isNaN(Date.parse(entry.created))).toBe(false);
    expect(hex(b64decode(entry.publicKey))).toBe(hex(recoveryKeyPair(code).publicKey));

    const fileKey = new Uint8Array(randomBytes(32));
    const other = generateX25519();
    const slots = [
      wrapX25519('recovery', 'someone else', other.publicKey, fileKey),
      // Same public key but another slot type: not for a recovery code.
      wrapX25519('fido2', 'key', b64decode(entry.publicKey), new Uint8Array(randomBytes(32))),
      recipientFromEntry(entry).wrap(fileKey),
    ];
    const opened = await recoveryIdentity(code).unwrap(slots);
    expect(opened && hex(opened)).toBe(hex(fileKey));
    expect(await recoveryIdentity(code).unwrap(slots.slice(0, 2))).toBeNull();
    expect(await recoveryIdentity(generateRecoveryCode()).unwrap(slots)).toBeNull();
  });
});
