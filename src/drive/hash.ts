// MD5 (what Drive reports as md5Checksum) and SHA-256 (what we keep in appProperties and in the
// pushed log) of a whole local file, in one read.
import { createReadStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { ioError } from '../errors.js';

export interface FileDigest {
  size: number;
  md5: string;
  sha256: string;
}

export async function digestFile(path: string, signal: AbortSignal): Promise<FileDigest> {
  const md5 = createHash('md5');
  const sha = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20, signal })) {
      md5.update(chunk as Buffer);
      sha.update(chunk as Buffer);
      size += (chunk as Buffer).length;
    }
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw ioError(err, path, 'read');
  }
  return { size, md5: md5.digest('hex'), sha256: sha.digest('hex') };
}
