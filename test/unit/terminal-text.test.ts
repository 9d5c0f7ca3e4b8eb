import { describe, expect, it } from 'vitest';
import { termSafe } from '../../src/util/terminal-text.js';

describe('termSafe', () => {
  it('shows C0, ESC, DEL and C1 controls as visible escapes', () => {
    expect(termSafe('a\x1b[2Jb')).toBe('a\\e[2Jb');
    expect(termSafe('\x1b]52;c;aGk=\x07')).toBe('\\e]52;c;aGk=\\x07');
    expect(termSafe('x\ny\rz\tw\x00\x7f\x9b')).toBe('x\\ny\\rz\\tw\\x00\\x7f\\x9b');
  });
  it('shows bidi overrides and isolates, and lone surrogates', () => {
    expect(termSafe('evil\u202etxt.exe')).toBe('evil\\u202etxt.exe');
    expect(termSafe('\u2066a\u2069\u200f')).toBe('\\u2066a\\u2069\\u200f');
    expect(termSafe('a\ud800b')).toBe('a\\ud800b');
  });
  it('leaves printable text, accents and emoji alone', () => {
    const s = 'Media/WhatsApp Images/Álbum São João/Fiesta 🎂 (1).jpg';
    expect(termSafe(s)).toBe(s);
  });
});
