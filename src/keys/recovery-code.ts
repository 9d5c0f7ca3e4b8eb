// Recovery codes: generated (never chosen), 140 bits, written as 7 groups of 5 Crockford-base32
// symbols, each group ending in a check symbol that names the group holding a typo.
// Layout and checksum are specified in backupctl-recovery-code(1), section CODE FORMAT.
//
// Checksum: the Damm algorithm over the quasigroup x∘y = a·x ⊕ y in GF(32) (x^5+x^2+1, a = x).
// The interim value of a group with position p and symbols s1..s5 is
//   a^5·p ⊕ a^4·s1 ⊕ a^3·s2 ⊕ a^2·s3 ⊕ a·s4 ⊕ s5,
// and the check symbol s5 makes it 0. Changing one symbol by δ ≠ 0 changes it by a^k·δ ≠ 0;
// swapping neighbours x ≠ y changes it by a^(k-1)·(a ⊕ 1)·(x ⊕ y) ≠ 0 (a ∉ {0,1}); a group
// typed at position p' ≠ p changes it by a^5·(p ⊕ p') ≠ 0. So all three are always caught.
import { randomBytes } from 'node:crypto';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { BackupctlError, Exit } from '../errors.js';
import type { Identity } from './types.js';
import { publicKeyOf, unwrapX25519, type X25519KeyPair } from './x25519.js';
import { b64encode } from '../util/base64.js';
import { hkdfSha256 } from '../util/hkdf.js';
import type { RecipientEntry } from '../config.js';

export const RECOVERY_SLOT_TYPE = 'recovery';
export const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const GROUPS = 7;
export const GROUP_LEN = 5;
const DATA_PER_GROUP = GROUP_LEN - 1;
export const DATA_SYMBOLS = GROUPS * DATA_PER_GROUP; // 28 symbols = 140 bits
const CODE_SYMBOLS = GROUPS * GROUP_LEN;

const SALT = utf8ToBytes('backupctl recovery code v1');
const INFO = utf8ToBytes('X25519 secret');

const VALUE = new Map<string, number>([...ALPHABET].map((c, i) => [c, i]));
// Crockford's look-alikes, plus U (left out of the alphabet) read as V.
const LOOK_ALIKES: Record<string, string> = { O: '0', I: '1', L: '1', U: 'V' };
const SEPARATORS = /[\s._-]/gu;

/** Multiply by a = x in GF(2^5) modulo x^5 + x^2 + 1. */
const timesA = (v: number) => ((v << 1) & 0x20 ? (v << 1) ^ 0x25 : v << 1);

/** Damm interim after `symbols` (values 0..31), seeded with the 1-based group position. */
function interim(position: number, symbols: readonly number[]): number {
  let r = position;
  for (const s of symbols) r = timesA(r) ^ s;
  return r;
}

/** The check symbol for 4 data symbols at `position`: c = a·interim, so the final interim is 0. */
const checkSymbol = (position: number, data: readonly number[]) => timesA(interim(position, data));

const groupIsValid = (position: number, group: readonly number[]) => interim(position, group) === 0;

/** 28 fresh data symbols: 5 bits each from CSPRNG bytes (no modulo, so no bias). */
function randomDataSymbols(): string {
  const bytes = randomBytes(Math.ceil((DATA_SYMBOLS * 5) / 8));
  let out = '';
  for (let i = 0; i < DATA_SYMBOLS; i++) {
    const bit = i * 5;
    const word = (bytes[bit >> 3]! << 8) | (bytes[(bit >> 3) + 1] ?? 0);
    out += ALPHABET[(word >> (11 - (bit & 7))) & 31];
  }
  bytes.fill(0);
  return out;
}

/** Add check symbols and dashes to 28 canonical data symbols: "XXXXX-XXXXX-…" (7 groups). */
export function formatRecoveryCode(data28: string): string {
  if (data28.length !== DATA_SYMBOLS || [...data28].some((c) => !VALUE.has(c))) {
    throw new Error(`recovery code data must be ${DATA_SYMBOLS} symbols of ${ALPHABET}`);
  }
  const groups: string[] = [];
  for (let g = 0; g < GROUPS; g++) {
    const data = [...data28.slice(g * DATA_PER_GROUP, (g + 1) * DATA_PER_GROUP)].map((c) => VALUE.get(c)!);
    groups.push(data28.slice(g * DATA_PER_GROUP, (g + 1) * DATA_PER_GROUP) + ALPHABET[checkSymbol(g + 1, data)]);
  }
  return groups.join('-');
}

/** A new recovery code, formatted for display. */
export function generateRecoveryCode(): string {
  return formatRecoveryCode(randomDataSymbols());
}

const noKey = (msg: string) => new BackupctlError(Exit.noKey, msg);

/**
 * Normalise a typed code (case, separators, look-alikes), check length, alphabet and every
 * group's check symbol, and return the 28 canonical data symbols. Errors name the wrong group(s)
 * by number, and groups typed in each other's place as swapped.
 */
export function parseRecoveryCode(input: string): string {
  const symbols = [...input.toUpperCase().replace(SEPARATORS, '')].map((c) => LOOK_ALIKES[c] ?? c);
  const bad = symbols.findIndex((c) => !VALUE.has(c));
  if (bad >= 0) {
    const c = symbols[bad]!;
    const shown = /^[\x21-\x7e]$/.test(c) ? `'${c}'` : `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
    throw noKey(`recovery code: ${shown} in group ${Math.floor(bad / GROUP_LEN) + 1} is not a recovery-code symbol (they are ${ALPHABET})`);
  }
  if (symbols.length !== CODE_SYMBOLS) {
    throw noKey(
      `recovery code: expected ${CODE_SYMBOLS} symbols (${GROUPS} groups of ${GROUP_LEN}), got ${symbols.length}`,
    );
  }
  const groups = Array.from({ length: GROUPS }, (_, g) => symbols.slice(g * GROUP_LEN, (g + 1) * GROUP_LEN).map((c) => VALUE.get(c)!));
  const wrong = groups.flatMap((values, g) => (groupIsValid(g + 1, values) ? [] : [g + 1]));
  if (wrong.length) throw noKey(`recovery code: ${describeWrongGroups(groups, wrong)}`);
  return groups.map((values) => values.slice(0, DATA_PER_GROUP).map((v) => ALPHABET[v]).join('')).join('');
}

/**
 * "group 3 has a typo", "groups 2 and 5 are swapped; group 7 has a typo": groups named by their
 * number only, since the text of a group is part of a secret that error output may be shared
 * with. Two wrong groups that are each valid in the other's place were typed in each other's
 * place (a pair of typos looks like that by chance with probability 1/1024).
 */
function describeWrongGroups(groups: readonly number[][], wrong: readonly number[]): string {
  const swapped: Array<[number, number]> = [];
  const left = [...wrong];
  for (let i = 0; i < left.length; i++) {
    const a = left[i]!;
    const j = left.findIndex((b, k) => k > i && groupIsValid(b, groups[a - 1]!) && groupIsValid(a, groups[b - 1]!));
    if (j < 0) continue;
    swapped.push([a, left[j]!]);
    left.splice(j, 1);
    left.splice(i--, 1);
  }
  const list = (n: readonly number[]) => (n.length === 1 ? `${n[0]}` : `${n.slice(0, -1).join(', ')} and ${n[n.length - 1]}`);
  const parts = swapped.map(([a, b]) => `groups ${a} and ${b} are swapped`);
  if (left.length) parts.push(left.length === 1 ? `group ${left[0]} has a typo` : `groups ${list(left)} have typos`);
  return parts.join('; ');
}

/**
 * The recovery key pair: X25519 secret = HKDF-SHA-256(ikm = the 28 data symbols as ASCII,
 * salt = "backupctl recovery code v1", info = "X25519 secret"). The code has full entropy
 * (140 bits, generated), so no slow password KDF is needed.
 */
export function recoveryKeyPair(input: string): X25519KeyPair {
  const ikm = utf8ToBytes(parseRecoveryCode(input));
  const secretKey = hkdfSha256(ikm, SALT, INFO, 32);
  ikm.fill(0);
  return { secretKey, publicKey: publicKeyOf(secretKey) };
}

/** The Identity a recovery code gives: opens any "recovery" slot wrapped to its public key. */
export function recoveryIdentity(input: string): Identity {
  const keyPair = recoveryKeyPair(input);
  return {
    description: 'recovery code',
    async unwrap(slots) {
      for (const slot of slots) {
        const fileKey = unwrapX25519(RECOVERY_SLOT_TYPE, keyPair, slot);
        if (fileKey) return fileKey;
      }
      return null;
    },
  };
}

/** The config entry recording a code's public recipient (the secret half is never stored). */
export function recoveryRecipientEntry(input: string, label: string): RecipientEntry {
  const { secretKey, publicKey } = recoveryKeyPair(input);
  secretKey.fill(0);
  return { type: RECOVERY_SLOT_TYPE, label, publicKey: b64encode(publicKey), created: new Date().toISOString() };
}
