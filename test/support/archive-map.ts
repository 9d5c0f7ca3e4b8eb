// Where things are in an archive file, found with the library and the recovery code (as an
// attacker who knows the format could), for tests that damage an archive at chosen places.
import { ArchiveFile, unlockHeader } from '../../src/archive/reader.js';
import { readIndex } from '../../src/archive/records.js';
import type { Footer, IndexEntry } from '../../src/archive/entries.js';
import { recoveryIdentity } from '../../src/keys/recovery-code.js';

export interface ArchiveMap {
  headerLength: number;
  segments: number;
  index: IndexEntry[];
  footer: Footer;
  plainSize: number;
}

export async function mapArchive(path: string, recoveryCode: string): Promise<ArchiveMap> {
  const a = await ArchiveFile.open(path);
  try {
    a.attachKey(await unlockHeader(a.header, [recoveryIdentity(recoveryCode)]));
    return { headerLength: a.header.headerLength, segments: a.segmentCount, footer: await a.footer(), index: await readIndex(a), plainSize: a.plainSize };
  } finally {
    await a.close();
  }
}
