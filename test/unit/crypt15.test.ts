import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { decryptCrypt15, probeCrypt15, readCrypt15Header, type DecryptResult } from '../../src/legacy/crypt15.js';
import { backupEncryptionKey, parseLegacyKeyFile, parseLegacyKeyText } from '../../src/legacy/legacy-key.js';
import { BackupctlError, Exit } from '../../src/errors.js';
import { storedZip, writeCrypt14, writeCrypt15, writeMultiFileCrypt15, writeRawCrypt15 } from '../support/crypt15-writer.js';
import { deflateSync } from 'node:zlib';

const INTEROP = resolve(import.meta.dirname, '../../../shared/interop/whatsapp-crypt15');
const SAMPLE = join(INTEROP, 'msgstore.db.crypt15');
const SAMPLE_HEX = '6730a595a1484d0c39c101dc0ac82ec5e401bb6f0e1b8ee2dc104a6b3687f017';
const SAMPLE_SHA256 = '1425b944a2e3885fc936a7bb82f6548c5cc09523a2f61f02aa836c4ed8bbd16e';

function requireInterop() {
  if (!existsSync(SAMPLE)) throw new Error(`the real crypt15 sample is missing: expected ${SAMPLE} (../shared/interop beside the repository)`);
}

async function drain(r: DecryptResult): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r.chunks) parts.push(c);
  return Buffer.concat(parts);
}

/** Decrypt fully; resolve to the error (a BackupctlError) it fails with. */
async function failure(path: string, key: Uint8Array): Promise<BackupctlError> {
  try {
    await drain(await decryptCrypt15(path, key));
  } catch (err) {
    expect(err).toBeInstanceOf(BackupctlError);
    return err as BackupctlError;
  }
  throw new Error(`${path} decrypted without error`);
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('the 64-digit key', () => {
  it('derives the AES key of the known answer in the notes (HKDF-SHA256, "backup encryption")', () => {
    expect(backupEncryptionKey(Buffer.from(SAMPLE_HEX, 'hex')).toString('hex')).toBe(
      '17ec312152f6f84fd13a3ec6b9c9279aac60bb84405f0685d1fae27293757bc7',
    );
  });

  it('accepts spaces, dashes, any case, a byte-order mark and a trailing newline', () => {
    const grouped = SAMPLE_HEX.toUpperCase().match(/.{4}/g)!.join(' ');
    const dashed = SAMPLE_HEX.match(/.{8}/g)!.join('-');
    for (const text of [SAMPLE_HEX, grouped, dashed, `\uFEFF${SAMPLE_HEX}\r\n`, ` ${grouped}\n`]) {
      expect(parseLegacyKeyText(text).toString('hex')).toBe(SAMPLE_HEX);
    }
  });

  it('says how many digits are missing or extra', () => {
    expect(() => parseLegacyKeyText(SAMPLE_HEX.slice(1))).toThrow('the 64-digit key has 63 hex digits, not 64 (1 missing)');
    expect(() => parseLegacyKeyText(SAMPLE_HEX + 'ab')).toThrow('has 66 hex digits, not 64 (2 too many)');
    expect(() => parseLegacyKeyText('')).toThrow('has 0 hex digits');
  });

  it('names the character that is not a hex digit, and where it is', () => {
    const typo = SAMPLE_HEX.slice(0, 10) + 'O' + SAMPLE_HEX.slice(11);
    expect(() => parseLegacyKeyText(typo)).toThrow("character 11 is 'O' (did you mean 0?)");
    expect(() => parseLegacyKeyText(SAMPLE_HEX.slice(0, 63) + 'g')).toThrow("only the hex digits 0-9 and a-f (spaces and dashes are ignored), but character 64 is 'g'");
    expect(() => parseLegacyKeyText(SAMPLE_HEX.slice(0, 63) + '\u00e9')).toThrow('character 64 is U+00E9');
    const err = (() => {
      try {
        parseLegacyKeyText('xyz');
      } catch (e) {
        return e as BackupctlError;
      }
      throw new Error('accepted a malformed key');
    })();
    expect(err.code).toBe(Exit.noKey); // a mistyped key is a wrong key, like a mistyped recovery code
  });

  it("reads WhatsApp's 59-byte encrypted_backup.key and text key files", () => {
    requireInterop();
    const file = readFileSync(join(INTEROP, 'encrypted_backup.key'));
    expect(file.length).toBe(59);
    expect(parseLegacyKeyFile(file, 'k').toString('hex')).toBe(SAMPLE_HEX);
    expect(parseLegacyKeyFile(Buffer.from(`\uFEFF${SAMPLE_HEX}\n`), 'k').toString('hex')).toBe(SAMPLE_HEX);
    const wrongLength = Buffer.concat([file, Buffer.from([0])]);
    expect(() => parseLegacyKeyFile(wrongLength, 'k')).toThrow("k looks like a Java-serialised key file but is not WhatsApp's encrypted_backup.key (expected 59 bytes");
    expect(() => parseLegacyKeyFile(Buffer.from('hello'), 'k.txt')).toThrow("k.txt: the 64-digit key may contain only");
  });
});

describe('the real WhatsApp sample (../shared/interop/whatsapp-crypt15)', () => {
  it('has the documented header, readable without a key', async () => {
    requireInterop();
    const h = await readCrypt15Header(SAMPLE);
    expect(h.prefixLength).toBe(129);
    expect(h.dataOffset).toBe(131);
    expect(h.keyType).toBe(1);
    expect(h.iv.toString('hex')).toMatch(/^c395ee00[0-9a-f]{20}559c$/);
    expect(h.appVersion).toBe('2.22.5.13');
    expect(h.jidSuffix).toBe('67');
    expect(Object.keys(h.features).length).toBeGreaterThan(20);
  });

  it('decrypts to the SQLite database with the listed SHA-256, streaming', async () => {
    requireInterop();
    const key = backupEncryptionKey(Buffer.from(SAMPLE_HEX, 'hex'));
    const r = await decryptCrypt15(SAMPLE, key);
    expect(r.kind).toBe('zlib');
    const parts: Buffer[] = [];
    for await (const c of r.chunks) parts.push(c);
    expect(parts.length).toBeGreaterThan(1); // handed out in pieces, not as one buffer
    const db = Buffer.concat(parts);
    expect(db.length).toBe(1_273_856);
    expect(db.subarray(0, 16).toString('latin1')).toBe('SQLite format 3\0');
    expect(sha256(db)).toBe(SAMPLE_SHA256);
  });

  it('says a wrong key does not open it, and that the file is intact', async () => {
    requireInterop();
    const err = await failure(SAMPLE, backupEncryptionKey(randomBytes(32)));
    expect(err.code).toBe(Exit.noKey);
    expect(err.message).toBe(`this key does not open ${SAMPLE} (the file is intact: its MD5 checksum matches)`);
    expect(await probeCrypt15(SAMPLE, backupEncryptionKey(randomBytes(32)))).toBe(false);
    expect(await probeCrypt15(SAMPLE, backupEncryptionKey(Buffer.from(SAMPLE_HEX, 'hex')))).toBe(true);
  });
});

describe('files from the test writer', () => {
  let dir: string;
  const rootKey = randomBytes(32);
  const key = backupEncryptionKey(rootKey);
  // Compressible but not trivial, like a database: repeated records with varying fields.
  const db = Buffer.concat(Array.from({ length: 20_000 }, (_, i) => Buffer.from(`row ${i}|${(i * 7919) % 10007}|hello from chat ${i % 97}\n`)));

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'crypt15-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const header of ['small', 'large'] as const) {
    for (const level of [1, 9] as const) {
      it(`round-trips a ${header} header (${header === 'small' ? '<' : '>'} 128 bytes) with zlib level ${level}`, async () => {
        const p = join(dir, `${header}-${level}.db.crypt15`);
        await writeCrypt15(p, db, { rootKey, header, level });
        const raw = await readFile(p);
        expect(raw[0]! < 0x80).toBe(header === 'small'); // one-byte varint only below 128
        const h = await readCrypt15Header(p);
        expect(h.prefixLength < 128).toBe(header === 'small');
        const r = await decryptCrypt15(p, key);
        expect(r.kind).toBe('zlib');
        expect(sha256(await drain(r))).toBe(sha256(db));
      });
    }
  }

  it('reads the "length, 0x01 feature byte" header form', async () => {
    const p = join(dir, 'fb.db.crypt15');
    await writeCrypt15(p, db, { rootKey, header: 'small', featureByte: true });
    const h = await readCrypt15Header(p);
    expect(h.featureByte).toBe(true);
    expect(sha256(await drain(await decryptCrypt15(p, key)))).toBe(sha256(db));
  });

  it('keeps the multi-file variant (no MD5, ZIP payload) as its ZIP', async () => {
    const zip = storedZip({ 'wallpaper.jpg': randomBytes(3000), 'settings.xml': Buffer.from('<map/>') });
    const p = join(dir, 'wallpapers.backup.crypt15');
    await writeMultiFileCrypt15(p, zip, { rootKey });
    const r = await decryptCrypt15(p, key);
    expect(r.kind).toBe('zip');
    expect((await drain(r)).equals(zip)).toBe(true);
  });

  it('a multi-file backup with a wrong key: no checksum, so both causes are named', async () => {
    const p = join(dir, 'stickers.db.crypt15');
    await writeMultiFileCrypt15(p, storedZip({ 'a.webp': randomBytes(500) }), { rootKey });
    const err = await failure(p, backupEncryptionKey(randomBytes(32)));
    expect(err.code).toBe(Exit.corrupt);
    expect(err.message).toContain('multi-file backup such as stickers or wallpapers, which carry no checksum, this key does not open it');
  });

  it('a damaged multi-file backup (right key) is "corrupt or truncated"', async () => {
    const p = join(dir, 'wallpaper-damaged.backup.crypt15');
    await writeMultiFileCrypt15(p, storedZip({ 'w.jpg': randomBytes(4000) }), { rootKey });
    const b = await readFile(p);
    b[b.length - 100]! ^= 4;
    await writeFile(p, b);
    const err = await failure(p, key);
    expect(err.code).toBe(Exit.corrupt);
    expect(err.message).toBe(`${p} is corrupt or truncated (a multi-file backup whose authentication tag does not match)`);
  });

  it('authentic but broken zlib, or a payload that is neither zlib nor ZIP: corrupt, and said so', async () => {
    const z = deflateSync(db);
    z[z.length >> 1]! ^= 0xff;
    const p = join(dir, 'badzlib.db.crypt15');
    await writeRawCrypt15(p, z, { rootKey });
    let err = await failure(p, key);
    expect(err.code).toBe(Exit.corrupt);
    expect(err.message).toMatch(/badzlib\.db\.crypt15 decrypts correctly but its compressed data is damaged \(zlib: /);
    const q = join(dir, 'plain.db.crypt15');
    await writeRawCrypt15(q, Buffer.from('SQLite format 3\0 stored without compression'), { rootKey });
    err = await failure(q, key);
    expect(err.message).toBe(`${q} decrypts, but to neither a zlib stream nor a ZIP: an unsupported kind of crypt15 backup`);
  });

  describe('damage', () => {
    let good: Buffer;
    let h: Awaited<ReturnType<typeof readCrypt15Header>>;
    const p = () => join(dir, 'damaged.db.crypt15');
    beforeAll(async () => {
      await writeCrypt15(join(dir, 'good.db.crypt15'), db, { rootKey, header: 'large' });
      good = await readFile(join(dir, 'good.db.crypt15'));
      h = await readCrypt15Header(join(dir, 'good.db.crypt15'));
    });
    const flipped = (at: number) => {
      const b = Buffer.from(good);
      b[at]! ^= 0x01;
      return b;
    };

    it('a truncated file is "corrupt or truncated"', async () => {
      for (const cut of [1, 17, 40, good.length - h.dataOffset - 10]) {
        await writeFile(p(), good.subarray(0, good.length - cut));
        const err = await failure(p(), key);
        expect(err.code, `cut ${cut}`).toBe(Exit.corrupt);
        expect(err.message).toMatch(/is corrupt or truncated/);
      }
    });

    it('a flipped byte in the body, the tag or the MD5 is "corrupt or truncated"', async () => {
      for (const at of [h.dataOffset + 5000, good.length - 20, good.length - 1]) {
        await writeFile(p(), flipped(at));
        const err = await failure(p(), key);
        expect(err.code, `byte ${at}`).toBe(Exit.corrupt);
        expect(err.message).toBe(`${p()} is corrupt or truncated (its MD5 checksum does not match and decryption fails)`);
      }
    });

    it('a flipped byte in the header (IV or structure) is corrupt, never "wrong key"', async () => {
      const ivAt = good.indexOf(h.iv);
      for (const at of [ivAt + 3, 2, 3]) {
        await writeFile(p(), flipped(at));
        let err: BackupctlError;
        try {
          err = await failure(p(), key);
        } catch {
          throw new Error(`flip at ${at} was not detected`);
        }
        expect(err.code, `byte ${at}`).toBe(Exit.corrupt);
      }
    });

    it('a file that ends inside or right after its header', async () => {
      await writeFile(p(), good.subarray(0, 60));
      expect((await failure(p(), key)).message).toMatch(/is not a WhatsApp crypt15 backup \(the file ends inside its header\)/);
      await writeFile(p(), good.subarray(0, h.dataOffset + 20));
      expect((await failure(p(), key)).message).toMatch(/is corrupt or truncated: it ends 20 bytes after its header/);
    });
  });

  it('refuses crypt14 with the reason (not protected by the 64-digit key)', async () => {
    const p = join(dir, 'msgstore.db.crypt14');
    await writeCrypt14(p);
    const err = await failure(p, key);
    expect(err.code).toBe(Exit.corrupt);
    expect(err.message).toMatch(/is a crypt14 backup, not crypt15: crypt14 backups are encrypted with a key kept on the phone .*not with the 64-digit key/);
  });

  it('refuses crypt12 and other files with a clear line', async () => {
    const p12 = join(dir, 'msgstore.db.crypt12');
    await writeFile(p12, Buffer.concat([Buffer.from([0, 1]), randomBytes(2000)]));
    expect((await failure(p12, key)).message).toMatch(/is a crypt12 backup, not crypt15/);
    const other = join(dir, 'notes.txt.crypt15');
    await writeFile(other, 'just some text that is not a backup');
    const err = await failure(other, key);
    expect(err.code).toBe(Exit.corrupt);
    expect(err.message).toMatch(/is not a WhatsApp crypt15 backup/);
    const empty = join(dir, 'empty.crypt15');
    await writeFile(empty, '');
    expect((await failure(empty, key)).message).toBe(`${empty} is not a WhatsApp crypt15 backup (it is empty)`);
  });

  it('a missing file is an I/O error', async () => {
    const err = await failure(join(dir, 'nope.crypt15'), key);
    expect(err.code).toBe(Exit.io);
    expect(err.message).toMatch(/no such file or directory/);
  });
});
