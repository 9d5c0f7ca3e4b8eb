// Canonical base64 for the header: standard alphabet, no padding (as age uses). Decoding is
// strict: non-canonical encodings are rejected so one header has exactly one byte form.
const RE = /^[A-Za-z0-9+/]*$/;

export function b64encode(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64').replace(/=+$/, '');
}

export function b64decode(s: string): Uint8Array {
  if (typeof s !== 'string' || !RE.test(s) || s.length % 4 === 1) throw new Error('invalid base64');
  const out = new Uint8Array(Buffer.from(s, 'base64'));
  if (b64encode(out) !== s) throw new Error('non-canonical base64');
  return out;
}
