// Constants of the backupctl archive format, version 1. backupctl-format(5) is the reference;
// every number here appears there.

/** File magic: "BKPCTL\r\n" — the CR LF catches text-mode mangling. */
export const MAGIC = Buffer.from('BKPCTL\r\n', 'latin1');
export const MAJOR = 1;
export const MINOR = 0;
/** magic(8) major(1) minor(1) jsonLength(4). */
export const PREAMBLE_LEN = 14;
export const MAC_LEN = 32;
export const MAX_HEADER_JSON = 1 << 20;
export const MAX_SLOTS = 16;

export const TAG_LEN = 16; // AES-256-GCM tag per segment
export const DEFAULT_SEGMENT_SIZE = 1 << 20;
export const MIN_SEGMENT_SIZE = 1 << 12;
export const MAX_SEGMENT_SIZE = 1 << 24;
export const PAYLOAD_NONCE_LEN = 16;

/** HKDF info labels (salt: empty for the header key, the payload nonce for the payload key). */
export const INFO_HEADER = new TextEncoder().encode('backupctl/v1 header');
export const INFO_PAYLOAD = new TextEncoder().encode('backupctl/v1 payload');

// Plaintext records (see "PAYLOAD PLAINTEXT" in the man page).
export const REC_ENTRY = 0x45; // 'E'
export const REC_INDEX = 0x49; // 'I'
export const FOOTER_MAGIC = Buffer.from('BKPCTIDX', 'latin1');
export const FOOTER_LEN = 40;
/** Largest content frame; every frame is independently decodable. */
export const MAX_FRAME = 4 << 20;
export const MAX_PATH_BYTES = 4096;

export const enum EntryType {
  File = 0,
  Dir = 1,
  Symlink = 2,
}

export const enum Codec {
  Stored = 0,
  Zstd = 1,
  Deflate = 2,
}

export const FLAG_CHANGED = 0x01;
