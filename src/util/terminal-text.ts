// Untrusted text (labels from unauthenticated headers, entry paths, link targets, Drive names,
// server messages) is made inert before it reaches a terminal: an ESC could clear the screen,
// forge a line such as "(header authenticated)" or set the clipboard (OSC 52). --json output is
// left exact; JSON.stringify escapes what it must.

/**
 * C0 controls, DEL, C1 controls, and the Unicode bidi/format controls that reorder or hide text
 * (U+061C, U+200E-U+200F, U+202A-U+202E, U+2066-U+2069), plus lone surrogates.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

const escapeOne = (c: string): string => {
  switch (c) {
    case '\n': return '\\n';
    case '\r': return '\\r';
    case '\t': return '\\t';
    case '\x1b': return '\\e';
    default: {
      const cp = c.charCodeAt(0);
      return cp <= 0xff ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`;
    }
  }
};

/** `s` with every control, DEL, C1 and bidi/format control shown as a visible escape (\e, \x9b, \u202e). */
export function termSafe(s: string): string {
  return s.replace(UNSAFE, escapeOne);
}
