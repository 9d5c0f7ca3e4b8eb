// Reader for WhatsApp's crypt15 backups (the ones protected by the 64-digit key), read-only and
// streaming: the plaintext never exists whole in memory nor on disk. The format was never
// published; ../shared/notes/whatsapp-crypt15.md describes it (from wa-crypt-tools and the real
// sample in ../shared/interop/whatsapp-crypt15):
//
//   varint header length | BackupPrefix (protobuf) | AES-256-GCM(zlib(db)) | tag (16) | MD5 (16)
//
// and the multi-file variant (stickers, wallpapers): no MD5 footer, the plaintext is a ZIP.
// The MD5 covers everything before it and needs no key, so it is what tells a damaged file
// ("corrupt or truncated") from a key that does not open an intact one.
import { createDecipheriv, createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { createInflate } from 'node:zlib';
import { BackupctlError, Exit, corruptError, ioError } from '../errors.js';
import { decodeMessage, ProtobufError, type Field } from './protobuf.js';

const TAG_LEN = 16;
const MD5_LEN = 16;
const IV_LEN = 16;
/** Real headers are ~130-200 bytes; anything near this is not a crypt15 file. */
const MAX_HEADER = 4096;
const READ_CHUNK = 256 * 1024;
/** Inflated output arrives in pieces up to this size: the archive writer frames (and compresses) per piece. */
const INFLATE_CHUNK = 1 << 20;

/** key_type in BackupPrefix: 1 for crypt15 (end-to-end encrypted backup), 0 for crypt14. */
export const KEY_TYPE_CRYPT15 = 1;

export interface Crypt15Header {
  /** File offset where the ciphertext starts. */
  dataOffset: number;
  /** Length of the BackupPrefix protobuf. */
  prefixLength: number;
  /** True when a 0x01 "feature table" byte follows a one-byte length (as some tools write). */
  featureByte: boolean;
  keyType: number;
  iv: Buffer;
  appVersion?: string;
  /** The last two digits of the account's phone number. */
  jidSuffix?: string;
  backupVersion?: number;
  /** Feature bools of the info message, by field number (5..39), as serialised. */
  features: Record<number, boolean>;
}

/** Why a file cannot be used at all, before any key is involved (exit 5). */
function notCrypt15(path: string, why: string): BackupctlError {
  const older = /\.crypt(\d+)$/i.exec(path);
  if (older && Number(older[1]) < 15) return olderFormat(path, `crypt${older[1]}`);
  return corruptError(`${path} is not a WhatsApp crypt15 backup (${why})`);
}

function olderFormat(path: string, kind: string): BackupctlError {
  return corruptError(
    `${path} is a ${kind} backup, not crypt15: ${kind} backups are encrypted with a key kept on the phone ` +
      `(/data/data/com.whatsapp/files/key), not with the 64-digit key, so this command cannot migrate it; ` +
      `in WhatsApp turn on end-to-end encrypted backup with a 64-digit key, back up again, and migrate the new .crypt15 files`,
    { format: kind },
  );
}

const bytesOf = (f: Field | undefined) => (f && f.value instanceof Uint8Array ? f.value : undefined);
const numberOf = (f: Field | undefined) => (f && typeof f.value === 'bigint' ? Number(BigInt.asIntN(32, f.value)) : undefined);
const last = (fields: Field[], n: number) => fields.findLast((f) => f.field === n);

/** Parse the header from the first bytes of a file (at least the whole header). */
export function parseCrypt15Header(head: Uint8Array, path: string): Crypt15Header {
  if (head.length === 0) throw notCrypt15(path, 'it is empty');
  // The length is a protobuf varint ("81 01" = 129). Some writers put a one-byte length and then
  // 0x01 as a "feature table" marker; for a one-byte length that 0x01 cannot start a message
  // (it would be field number 0), so the two forms are told apart without guessing.
  let len = 0;
  let pos = 0;
  for (let shift = 0; ; shift += 7) {
    if (pos >= head.length || shift > 14) throw notCrypt15(path, 'no header length');
    const b = head[pos++]!;
    len |= (b & 0x7f) << shift;
    if ((b & 0x80) === 0) break;
  }
  let featureByte = false;
  if (pos === 1 && head[pos] === 0x01) {
    featureByte = true;
    pos++;
  }
  if (len === 0 || len > MAX_HEADER) throw notCrypt15(path, `implausible header length ${len}`);
  if (pos + len > head.length) throw notCrypt15(path, 'the file ends inside its header');
  let fields: Field[];
  try {
    fields = decodeMessage(head.subarray(pos, pos + len));
  } catch (err) {
    if (err instanceof ProtobufError) throw notCrypt15(path, `its header does not parse: ${err.message}`);
    throw err;
  }
  const keyType = numberOf(last(fields, 1)) ?? 0;
  // crypt14 carries its server salt, google id and IV in field 2 (C14_cipher), key_type 0.
  if (last(fields, 2) || (keyType === 0 && !last(fields, 3))) throw olderFormat(path, 'crypt14');
  const ivMsg = bytesOf(last(fields, 3));
  let iv: Uint8Array | undefined;
  try {
    iv = ivMsg && bytesOf(last(decodeMessage(ivMsg), 1));
  } catch {
    iv = undefined;
  }
  if (!iv || iv.length !== IV_LEN) throw notCrypt15(path, 'its header has no 16-byte IV');
  if (keyType !== KEY_TYPE_CRYPT15) throw notCrypt15(path, `unknown key type ${keyType}`);
  const header: Crypt15Header = { dataOffset: pos + len, prefixLength: len, featureByte, keyType, iv: Buffer.from(iv), features: {} };
  const info = bytesOf(last(fields, 4));
  if (info) {
    try {
      for (const f of decodeMessage(info)) {
        if (f.field === 1 && f.value instanceof Uint8Array) header.appVersion = Buffer.from(f.value).toString('utf8');
        else if (f.field === 3 && f.value instanceof Uint8Array) header.jidSuffix = Buffer.from(f.value).toString('utf8');
        else if (f.field === 4) header.backupVersion = numberOf(f);
        else if (f.field >= 5 && typeof f.value === 'bigint') header.features[f.field] = f.value !== 0n;
      }
    } catch (err) {
      if (err instanceof ProtobufError) throw notCrypt15(path, `its header's info does not parse: ${err.message}`);
      throw err;
    }
  }
  return header;
}

/** Read and parse the header of `path` (no key needed); also returns the file size. */
export async function readCrypt15Header(path: string): Promise<Crypt15Header & { size: number }> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    throw ioError(err, path, 'read');
  }
  try {
    const size = (await fh.stat()).size;
    const head = Buffer.alloc(Math.min(size, MAX_HEADER + 3));
    await fh.read(head, 0, head.length, 0);
    const header = parseCrypt15Header(head, path);
    if (size - header.dataOffset < TAG_LEN + MD5_LEN) {
      throw corruptError(`${path} is corrupt or truncated: it ends ${Math.max(0, size - header.dataOffset)} bytes after its header`);
    }
    return { ...header, size };
  } catch (err) {
    if (err instanceof BackupctlError) throw err;
    throw ioError(err, path, 'read');
  } finally {
    await fh.close();
  }
}

/** What the start of the plaintext is, with the right key: a zlib stream, a ZIP, or noise. */
type PayloadKind = 'zlib' | 'zip' | 'unknown';

function payloadKind(p: Uint8Array): PayloadKind {
  // RFC 1950 §2.2: CM = 8 (deflate), CINFO <= 7, FDICT clear, and CMF*256+FLG a multiple of 31.
  if (p.length >= 2 && (p[0]! & 0x0f) === 8 && p[0]! >> 4 <= 7 && (p[1]! & 0x20) === 0 && ((p[0]! << 8) | p[1]!) % 31 === 0) return 'zlib';
  // A ZIP starts with a local file header (or, when empty, the end-of-central-directory record).
  if (p.length >= 4 && p[0] === 0x50 && p[1] === 0x4b && ((p[2] === 3 && p[3] === 4) || (p[2] === 5 && p[3] === 6))) return 'zip';
  return 'unknown';
}

interface PayloadState {
  kind?: PayloadKind;
  /** Set only after the GCM tag (and the MD5, when present) verified. */
  verified: boolean;
}

/**
 * Decrypt the payload of one file, yielding the still-compressed plaintext once its first bytes
 * show it is zlib or ZIP (with a wrong key they are noise, and nothing is yielded). The last 32
 * bytes are held back: they are either tag + MD5 or, in the multi-file variant, the end of the
 * ciphertext + tag; the MD5 decides. Ends by throwing the error that says what is wrong.
 */
async function* decryptPayload(path: string, header: Crypt15Header, aesKey: Uint8Array, state: PayloadState, signal?: AbortSignal) {
  const md5 = createHash('md5');
  const decipher = createDecipheriv('aes-256-gcm', aesKey, header.iv);
  const input = createReadStream(path, { highWaterMark: READ_CHUNK, ...(signal ? { signal } : {}) });
  let held = Buffer.alloc(0);
  let first: Buffer[] = [];
  let firstLen = 0;
  const emit = function* (pt: Buffer) {
    if (state.kind === undefined) {
      // Decide on the first 4 plaintext bytes (GCM is CTR mode: they exist before the tag is checked).
      first.push(pt);
      firstLen += pt.length;
      if (firstLen < 4) return;
      const head = Buffer.concat(first);
      first = [];
      state.kind = payloadKind(head);
      if (state.kind !== 'unknown') yield head;
    } else if (state.kind !== 'unknown' && pt.length) yield pt;
  };
  let offset = 0;
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      let data = chunk;
      if (offset < header.dataOffset) {
        const skip = Math.min(header.dataOffset - offset, chunk.length);
        md5.update(chunk.subarray(0, skip));
        data = chunk.subarray(skip);
      }
      offset += chunk.length;
      const all = held.length ? Buffer.concat([held, data]) : data;
      const keep = TAG_LEN + MD5_LEN;
      if (all.length <= keep) {
        held = Buffer.from(all);
        continue;
      }
      const body = all.subarray(0, all.length - keep);
      held = Buffer.from(all.subarray(all.length - keep));
      md5.update(body);
      yield* emit(decipher.update(body));
    }
  } catch (err) {
    if ((err as Error)?.name === 'AbortError') throw signal?.reason ?? err;
    throw ioError(err, path, 'read');
  }
  if (held.length < TAG_LEN + MD5_LEN) throw corruptError(`${path} is corrupt or truncated: it ends right after its header`);
  const a = held.subarray(0, TAG_LEN);
  const b = held.subarray(TAG_LEN);
  md5.update(a);
  const checksummed = md5.digest().equals(b);
  if (!checksummed) yield* emit(decipher.update(a)); // multi-file: `a` is ciphertext, `b` the tag
  let tagOk = true;
  try {
    decipher.setAuthTag(checksummed ? a : b);
    yield* emit(decipher.final());
  } catch {
    tagOk = false;
  }
  if (state.kind === undefined) {
    state.kind = payloadKind(Buffer.concat(first));
    if (tagOk && state.kind !== 'unknown') yield Buffer.concat(first);
  }
  if (tagOk && state.kind === 'unknown') {
    throw corruptError(`${path} decrypts, but to neither a zlib stream nor a ZIP: an unsupported kind of crypt15 backup`);
  }
  if (tagOk) {
    state.verified = true;
    return;
  }
  if (checksummed) {
    // The file is intact (its MD5 matches), so only the key can be wrong.
    throw new BackupctlError(Exit.noKey, `this key does not open ${path} (the file is intact: its MD5 checksum matches)`);
  }
  // The plaintext starts as it should, so the key is right and the bytes after are damaged.
  if (state.kind === 'zip') throw corruptError(`${path} is corrupt or truncated (a multi-file backup whose authentication tag does not match)`);
  if (state.kind === 'zlib') throw corruptError(`${path} is corrupt or truncated (its MD5 checksum does not match and decryption fails)`);
  throw corruptError(
    `${path} is corrupt or truncated (its MD5 checksum does not match), or, if it is a multi-file backup such as stickers or wallpapers, which carry no checksum, this key does not open it`,
  );
}

export interface DecryptResult {
  /** 'zlib' for a database (inflated on the fly), 'zip' for the multi-file variant (kept as a ZIP). */
  kind: 'zlib' | 'zip';
  /** The plaintext, in chunks; the iterator throws if the file turns out damaged or the key wrong. */
  chunks: AsyncGenerator<Buffer>;
}

/** Run the whole verification with the output discarded, to name the cause of a failure. */
async function diagnose(path: string, header: Crypt15Header, aesKey: Uint8Array, zlibError: Error): Promise<BackupctlError> {
  try {
    for await (const _ of decryptPayload(path, header, aesKey, { verified: false }));
  } catch (err) {
    if (err instanceof BackupctlError) return err;
    throw err;
  }
  return corruptError(`${path} decrypts correctly but its compressed data is damaged (zlib: ${zlibError.message})`);
}

/**
 * Open a crypt15 file for streaming decryption with the AES key (see legacy-key.ts). Reads the
 * ciphertext up to its first block to learn what it holds; the rest streams as `chunks` are
 * consumed. Data handed out before the end is NOT yet authenticated: the consumer must discard
 * everything if the iterator throws (the migrate command writes into a temp file it deletes).
 */
export async function decryptCrypt15(path: string, aesKey: Uint8Array, signal?: AbortSignal): Promise<DecryptResult> {
  const header = await readCrypt15Header(path);
  const state: PayloadState = { verified: false };
  const payload = decryptPayload(path, header, aesKey, state, signal);
  const first = await payload.next(); // throws the classified error when nothing decrypts
  if (first.done) throw corruptError(`${path} holds no data`);
  const kind = state.kind as 'zlib' | 'zip';
  const all = (async function* () {
    yield first.value;
    yield* payload;
  })();
  const verifiedEnd = () => {
    // The payload generator verifies before it returns; this guards the invariant.
    if (!state.verified) throw new Error(`internal: ${basename(path)} ended before it was verified`);
  };
  if (kind === 'zip') {
    return {
      kind,
      chunks: (async function* () {
        yield* all;
        verifiedEnd();
      })(),
    };
  }
  return {
    kind,
    chunks: (async function* () {
      try {
        for await (const chunk of Readable.from(all).compose(createInflate({ chunkSize: INFLATE_CHUNK })) as AsyncIterable<Buffer>) yield chunk;
      } catch (err) {
        if (err instanceof BackupctlError || signal?.aborted) throw signal?.aborted ? signal.reason : err;
        throw await diagnose(path, header, aesKey, err as Error);
      }
      verifiedEnd();
    })(),
  };
}

/** Does this key decrypt the first block of the file to the start of a zlib stream or a ZIP? */
export async function probeCrypt15(path: string, aesKey: Uint8Array): Promise<boolean> {
  const header = await readCrypt15Header(path);
  let fh;
  try {
    fh = await open(path, 'r');
    const block = Buffer.alloc(16);
    await fh.read(block, 0, 16, header.dataOffset);
    return payloadKind(createDecipheriv('aes-256-gcm', aesKey, header.iv).update(block)) !== 'unknown';
  } catch (err) {
    throw ioError(err, path, 'read');
  } finally {
    await fh?.close();
  }
}
