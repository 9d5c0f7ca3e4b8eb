// Bytes that pass readArchiveHeader (a real header from the archive module, random payload): for
// unit tests of the transfer machinery, which checks headers but never decrypts.
import { randomBytes } from 'node:crypto';
import { encodeHeader } from '../../../src/archive/header.js';

export function archiveLikeBytes(size: number): Buffer {
  const b64 = (n: number) => randomBytes(n).toString('base64').replace(/=+$/, '');
  const header = encodeHeader(
    {
      created: '2026-11-22T12:00:00Z',
      segmentSize: 1 << 20,
      nonce: randomBytes(16),
      slots: [{ type: 'recovery', label: 'test', tag: b64(4), share: b64(32), body: b64(48) }],
    },
    randomBytes(32),
  );
  return Buffer.concat([header, randomBytes(Math.max(0, size - header.length))]);
}
