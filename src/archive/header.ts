// The envelope: a preamble, a JSON header readable without any key, and an HMAC-SHA-256 over
// both keyed from the file key — which authenticates the header and commits to the file key
// (age's header MAC is the model). backupctl-format(5) "HEADER".
import { open, type FileHandle } from 'node:fs/promises';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { corruptError, ioError } from '../errors.js';
import type { Slot } from '../keys/types.js';
import { MAX_LABEL, isValidLabel } from '../keys/label.js';
import { b64decode, b64encode } from '../util/base64.js';
import { hkdfSha256 } from '../util/hkdf.js';
import {
  INFO_HEADER, MAC_LEN, MAGIC, MAJOR, MAX_HEADER_JSON, MAX_SEGMENT_SIZE, MAX_SLOTS, MINOR,
  MIN_SEGMENT_SIZE, PAYLOAD_NONCE_LEN, PREAMBLE_LEN,
} from './format.js';

export interface Header {
  /** "1.0" */
  version: string;
  /** ISO 8601 UTC creation time, second precision. */
  created: string;
  segmentSize: number;
  nonce: Uint8Array;
  slots: Slot[];
}

export interface ParsedHeader extends Header {
  /** The exact header bytes the MAC covers (preamble + JSON). */
  macInput: Buffer;
  mac: Buffer;
  /** Where the payload starts. */
  headerLength: number;
}

function headerKey(fileKey: Uint8Array): Uint8Array {
  return hkdfSha256(fileKey, new Uint8Array(0), INFO_HEADER, 32);
}

export function computeMac(fileKey: Uint8Array, macInput: Uint8Array): Buffer {
  const key = headerKey(fileKey);
  const mac = createHmac('sha256', key).update(macInput).digest();
  key.fill(0);
  return mac;
}

/** True when `fileKey` is the key this header was written with (constant-time compare). */
export function verifyMac(h: ParsedHeader, fileKey: Uint8Array): boolean {
  return timingSafeEqual(computeMac(fileKey, h.macInput), h.mac);
}

/**
 * Accept a file key recovered from a slot only if the header MAC confirms it. A slot that opens
 * to a key the MAC rejects means the header was altered (or the slot forged): damage, not a wrong key.
 */
export function confirmFileKey(h: ParsedHeader, fileKey: Uint8Array): Uint8Array {
  if (verifyMac(h, fileKey)) return fileKey;
  fileKey.fill(0);
  throw corruptError('the archive header failed authentication: it was modified or damaged after it was written');
}

/** Serialise a header and MAC it with the file key. */
export function encodeHeader(h: Omit<Header, 'version'>, fileKey: Uint8Array): Buffer {
  if (h.slots.length === 0) throw new Error('an archive needs at least one slot');
  if (h.slots.length > MAX_SLOTS) throw new Error(`at most ${MAX_SLOTS} slots`);
  const json = Buffer.from(
    JSON.stringify({ created: h.created, segmentSize: h.segmentSize, cipher: 'AES-256-GCM', nonce: b64encode(h.nonce), slots: h.slots }),
    'utf8',
  );
  const pre = Buffer.alloc(PREAMBLE_LEN);
  MAGIC.copy(pre, 0);
  pre[8] = MAJOR;
  pre[9] = MINOR;
  pre.writeUInt32BE(json.length, 10);
  const macInput = Buffer.concat([pre, json]);
  return Buffer.concat([macInput, computeMac(fileKey, macInput)]);
}

export const looksLikeArchive = (prefix: Uint8Array) =>
  prefix.length >= MAGIC.length && Buffer.from(prefix.subarray(0, MAGIC.length)).equals(MAGIC);

/** How many bytes the whole header takes, from its first 14 bytes. */
export function headerLengthFromPreamble(pre: Buffer): number {
  if (!looksLikeArchive(pre)) throw corruptError('not a backupctl archive (bad magic)');
  if (pre.length < PREAMBLE_LEN) throw corruptError('truncated header');
  if (pre[8] !== MAJOR) throw corruptError(`unsupported archive format version ${pre[8]}.${pre[9]}: this backupctl reads version ${MAJOR}.x; upgrade backupctl`);
  const len = pre.readUInt32BE(10);
  if (len < 2 || len > MAX_HEADER_JSON) throw corruptError(`header length ${len} out of range`);
  return PREAMBLE_LEN + len + MAC_LEN;
}

function isSlot(s: unknown): s is Slot {
  const o = s as Record<string, unknown>;
  return (
    typeof o === 'object' && o !== null && typeof o.type === 'string' && typeof o.label === 'string' &&
    typeof o.tag === 'string' && typeof o.share === 'string' && typeof o.body === 'string' &&
    (o.params === undefined || (typeof o.params === 'object' && o.params !== null && !Array.isArray(o.params)))
  );
}

/**
 * The label rule (keys/label.ts) and a 4-byte tag, for every slot: backupctl writes no other, so
 * a header breaking them is damaged or forged, refused before any label is shown or any key used.
 */
function checkSlotText(s: Slot, i: number): void {
  if (!isValidLabel(s.label)) {
    throw corruptError(`header: the label of slot ${i + 1} is not 1 to ${MAX_LABEL} visible characters on one line (backupctl writes no such label)`);
  }
  let tag: Uint8Array | null = null;
  try {
    tag = b64decode(s.tag);
  } catch {
    /* reported below */
  }
  if (tag?.length !== 4) throw corruptError(`header: the tag of slot ${i + 1} is not 4 bytes of base64`);
}

/** Parse (but do not authenticate) a complete header. Strict: any deviation is "corrupt". */
export function parseHeader(buf: Buffer): ParsedHeader {
  const headerLength = headerLengthFromPreamble(buf);
  if (buf.length < headerLength) throw corruptError('truncated header');
  const jsonBytes = buf.subarray(PREAMBLE_LEN, headerLength - MAC_LEN);
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(jsonBytes));
  } catch {
    throw corruptError('header is not valid UTF-8 JSON');
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw corruptError('header is not a JSON object');
  const { created, segmentSize, nonce, slots, cipher } = j;
  if (cipher !== 'AES-256-GCM') throw corruptError(`unsupported payload cipher ${JSON.stringify(cipher)}`);
  if (typeof created !== 'string' || Number.isNaN(Date.parse(created))) throw corruptError('header: bad "created"');
  if (
    typeof segmentSize !== 'number' || !Number.isInteger(segmentSize) || segmentSize < MIN_SEGMENT_SIZE ||
    segmentSize > MAX_SEGMENT_SIZE || (segmentSize & (segmentSize - 1)) !== 0
  ) throw corruptError(`header: bad segmentSize ${segmentSize}`);
  let nonceBytes: Uint8Array;
  try {
    nonceBytes = b64decode(nonce as string);
  } catch {
    throw corruptError('header: bad nonce');
  }
  if (nonceBytes.length !== PAYLOAD_NONCE_LEN) throw corruptError('header: bad nonce length');
  if (!Array.isArray(slots) || slots.length === 0 || slots.length > MAX_SLOTS || !slots.every(isSlot)) {
    throw corruptError(`header: slots must be 1 to ${MAX_SLOTS} well-formed objects`);
  }
  slots.forEach(checkSlotText);
  return {
    version: `${buf[8]}.${buf[9]}`,
    created,
    segmentSize,
    nonce: nonceBytes,
    slots,
    macInput: Buffer.from(buf.subarray(0, headerLength - MAC_LEN)),
    mac: Buffer.from(buf.subarray(headerLength - MAC_LEN, headerLength)),
    headerLength,
  };
}

/** Read and parse the header at the start of an open file (`name` for messages). */
export async function readHeaderFrom(fh: FileHandle, name: string): Promise<ParsedHeader> {
  const pre = Buffer.alloc(PREAMBLE_LEN);
  const { bytesRead } = await fh.read(pre, 0, PREAMBLE_LEN, 0).catch((err: unknown) => {
    throw ioError(err, name, 'read'); // e.g. a directory (EISDIR)
  });
  if (!looksLikeArchive(pre.subarray(0, bytesRead))) throw corruptError(`${name} is not a backupctl archive`);
  const total = headerLengthFromPreamble(pre.subarray(0, bytesRead));
  const buf = Buffer.alloc(total);
  const r = await fh.read(buf, 0, total, 0);
  if (r.bytesRead < total) throw corruptError(`${name}: truncated header`);
  return parseHeader(buf);
}

/** Read and parse the header of the archive at `path` (no key needed, nothing authenticated). */
export async function readArchiveHeader(path: string): Promise<ParsedHeader> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw ioError(err, path, 'open');
  }
  try {
    return await readHeaderFrom(fh, path);
  } finally {
    await fh.close();
  }
}
