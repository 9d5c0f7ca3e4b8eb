// Writes WhatsApp-style crypt15 backups for tests, from the layout documented in
// ../shared/notes/whatsapp-crypt15.md — deliberately not from src/legacy (its own protobuf
// encoder, its own framing), so a misreading in the reader cannot be mirrored here. The real
// sample in ../shared/interop keeps both honest.
import { createCipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { crc32, createDeflate } from 'node:zlib';

type Value = number | boolean | string | Uint8Array;

function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    out.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n = Math.floor(n / 128);
  } while (n > 0);
  return Buffer.from(out);
}

/** Protobuf with explicit presence: every listed field is written, false bools included. */
function message(fields: Array<[number, Value]>): Buffer {
  return Buffer.concat(
    fields.map(([field, v]) => {
      if (typeof v === 'string' || v instanceof Uint8Array) {
        const b = typeof v === 'string' ? Buffer.from(v) : Buffer.from(v);
        return Buffer.concat([varint((field << 3) | 2), varint(b.length), b]);
      }
      return Buffer.concat([varint(field << 3), varint(Number(v))]);
    }),
  );
}

export interface Crypt15Options {
  /** The 32-byte root key (the 64-digit key). */
  rootKey: Uint8Array;
  /** Header size: 'small' (< 128 bytes: no feature flags) or 'large' (> 128: flags 5..39, like WhatsApp 2.22). */
  header?: 'small' | 'large';
  /** Write a one-byte length followed by a 0x01 feature byte (as some tools do) instead of a varint. */
  featureByte?: boolean;
  /** zlib level for the single-file variant (1 older WhatsApp, 9 newer). */
  level?: 1 | 9;
  iv?: Uint8Array;
  appVersion?: string;
  jidSuffix?: string;
}

export const aesKeyOf = (rootKey: Uint8Array) => Buffer.from(hkdfSync('sha256', rootKey, Buffer.alloc(0), 'backup encryption', 32));

export function prefixBytes(o: Crypt15Options, iv: Uint8Array): Buffer {
  const info: Array<[number, Value]> = [
    [1, o.appVersion ?? (o.header === 'small' ? '2.23.1' : '2.24.13.78')],
    [3, o.jidSuffix ?? '42'],
    [4, 1],
  ];
  if (o.header !== 'small') for (let f = 5; f <= 39; f++) info.push([f, f % 3 === 0]);
  const prefix = message([
    [1, 1],
    [3, message([[1, iv]])],
    [4, message(info)],
  ]);
  const small = prefix.length < 128;
  if (o.header === 'small' && !small) throw new Error('small header came out >= 128 bytes');
  if (o.header !== 'small' && small) throw new Error('large header came out < 128 bytes');
  if (o.featureByte) {
    if (prefix.length > 255) throw new Error('one-byte length');
    return Buffer.concat([Buffer.from([prefix.length, 1]), prefix]);
  }
  return Buffer.concat([varint(prefix.length), prefix]);
}

async function* deflated(plaintext: Uint8Array | AsyncIterable<Uint8Array>, level: number): AsyncGenerator<Buffer> {
  const source = plaintext instanceof Uint8Array ? Readable.from([Buffer.from(plaintext)]) : Readable.from(plaintext);
  yield* source.pipe(createDeflate({ level })) as AsyncIterable<Buffer>;
}

async function* once_(b: Uint8Array): AsyncGenerator<Buffer> {
  yield Buffer.from(b);
}

/**
 * Encrypt `payload` chunks to `path`: header, AES-256-GCM(payload), tag, and (single-file) the
 * MD5 of everything before it. Streams, so tests can build databases larger than memory allows.
 */
async function writeContainer(path: string, o: Crypt15Options, payload: AsyncIterable<Buffer>, withMd5: boolean): Promise<void> {
  const iv = o.iv ?? randomBytes(16);
  const cipher = createCipheriv('aes-256-gcm', aesKeyOf(o.rootKey), iv);
  const md5 = createHash('md5');
  await mkdir(dirname(path), { recursive: true });
  const out = createWriteStream(path);
  const put = async (b: Buffer) => {
    if (!b.length) return;
    md5.update(b);
    if (!out.write(b)) await once(out, 'drain');
  };
  await put(prefixBytes(o, iv));
  for await (const chunk of payload) await put(cipher.update(chunk));
  await put(cipher.final());
  await put(cipher.getAuthTag());
  if (withMd5) out.write(md5.digest());
  out.end();
  await once(out, 'finish');
}

/** A single-file crypt15 (msgstore.db.crypt15 and the like): zlib inside, MD5 footer. */
export async function writeCrypt15(path: string, plaintext: Uint8Array | AsyncIterable<Uint8Array>, o: Crypt15Options): Promise<void> {
  await writeContainer(path, o, deflated(plaintext, o.level ?? 9), true);
}

/** A minimal ZIP of stored (uncompressed) files: what the multi-file variant carries. */
export function storedZip(files: Record<string, Uint8Array>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(files)) {
    const n = Buffer.from(name);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(n.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(n.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, n, Buffer.from(data));
    centrals.push(central, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(files).length, 8);
  end.writeUInt16LE(Object.keys(files).length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** The multi-file variant (stickers, wallpapers): a ZIP, no zlib, no MD5 footer. */
export async function writeMultiFileCrypt15(path: string, zip: Uint8Array, o: Crypt15Options): Promise<void> {
  await writeContainer(path, o, once_(zip), false);
}

/** Any payload bytes, encrypted as they are, with an MD5 footer: for payloads WhatsApp never writes. */
export async function writeRawCrypt15(path: string, payload: Uint8Array, o: Crypt15Options): Promise<void> {
  await writeContainer(path, o, once_(payload), true);
}

/** A crypt14-style file (key_type 0, C14_cipher in field 2): only its header matters to us. */
export async function writeCrypt14(path: string): Promise<void> {
  const c14 = message([
    [1, 0],
    [2, randomBytes(32)],
    [3, randomBytes(16)],
    [4, message([[1, randomBytes(16)]])],
  ]);
  const prefix = message([
    [1, 0],
    [2, c14],
    [4, message([[1, '2.21.4.18'], [3, '42']])],
  ]);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, Buffer.concat([varint(prefix.length), prefix, randomBytes(4096)]));
}
