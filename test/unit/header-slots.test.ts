// The header parser's rules for slot text (backupctl-format(5) KEY SLOTS): a label must keep the
// label rule and a tag must be 4 bytes of canonical base64, or the header is refused as damaged
// (exit 5) before anything in it is shown or used.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { encodeHeader, parseHeader } from '../../src/archive/header.js';
import { BackupctlError, Exit } from '../../src/errors.js';
import { isValidLabel } from '../../src/keys/label.js';
import type { Slot } from '../../src/keys/types.js';

const slot = (over: Partial<Slot>): Slot => ({ type: 'recovery', label: 'paper', tag: 'AAAAAA', share: 'A'.repeat(43), body: 'A'.repeat(64), ...over });
const header = (slots: Slot[]) =>
  encodeHeader({ created: '2026-12-01T00:00:00Z', segmentSize: 65536, nonce: new Uint8Array(16), slots }, new Uint8Array(randomBytes(32)));

function refusal(slots: Slot[]): string {
  try {
    parseHeader(header(slots));
  } catch (err) {
    expect(err).toBeInstanceOf(BackupctlError);
    expect((err as BackupctlError).code).toBe(Exit.corrupt);
    return (err as Error).message;
  }
  throw new Error('parseHeader accepted it');
}

describe('slot labels in a parsed header', () => {
  it.each([
    ['ESC', 'a\x1b[2J'], ['OSC 52', 'a\x1b]52;c;aGk=\x07'], ['newline', 'a\nb'], ['CR', 'a\rb'], ['tab', 'a\tb'], ['DEL', 'a\x7f'],
    ['C1', 'a\u009b2J'], ['bidi override', 'a\u202eb'], ['isolate', '\u2066a'], ['zero-width space', 'a\u200bb'], ['lone surrogate', 'a\ud800'],
    ['empty', ''], ['blank', '   '], ['leading blank', ' a'], ['101 units', 'x'.repeat(101)],
  ])('%s: refused as damaged, naming the slot', (_name, label) => {
    expect(isValidLabel(label)).toBe(false);
    expect(refusal([slot({}), slot({ label })])).toBe('header: the label of slot 2 is not 1 to 100 visible characters on one line (backupctl writes no such label)');
  });

  it.each([['accents and emoji', 'Clé USB de Zoë 🎂'], ['CJK', '李雷的钥匙'], ['100 units', 'x'.repeat(100)], ['default label', 'recovery code 2026-12-01 (2)']])(
    '%s: accepted as written', (_name, label) => {
      expect(isValidLabel(label)).toBe(true);
      expect(parseHeader(header([slot({ label })])).slots[0]!.label).toBe(label);
    });
});

describe('slot tags in a parsed header', () => {
  it.each([['not base64', '!!!!!!'], ['3 bytes', 'AAAA'], ['5 bytes', 'AAAAAAA'], ['non-canonical', 'AAAAAB'], ['padded', 'AAAAAA==']])(
    '%s: refused as damaged', (_name, tag) => {
      expect(refusal([slot({ tag })])).toBe('header: the tag of slot 1 is not 4 bytes of base64');
    });
});
