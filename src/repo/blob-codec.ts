// How a chunk is stored in a pack (backupctl-repository(5) "PACKS"): zstd (level 3) where that
// saves an eighth or more, else as it is. Shared by the pack writer and its sealing thread, which
// compresses a first backup's text for it.
import zlib from 'node:zlib';
import { Codec } from '../archive/format.js';

const hasZstd = typeof zlib.zstdCompressSync === 'function';

/** A chunk as stored: compressed when that saves an eighth or more, else as it is (not copied). */
export function encodeBlob(plain: Uint8Array, compressible: boolean): { codec: Codec; data: Uint8Array } {
  if (compressible && plain.length >= 256) {
    const c = hasZstd
      ? zlib.zstdCompressSync(plain, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 3 } })
      : zlib.deflateRawSync(plain, { level: 6 });
    if (c.length <= plain.length - (plain.length >> 3)) return { codec: hasZstd ? Codec.Zstd : Codec.Deflate, data: c };
  }
  return { codec: Codec.Stored, data: plain };
}
