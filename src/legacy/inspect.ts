// What `backupctl inspect` shows for a WhatsApp crypt15 backup, without any key: the header
// fields and whether the MD5 footer matches (which tells an intact file from a damaged one, or
// from the multi-file variant that has no footer).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { BackupctlError, ioError } from '../errors.js';
import { parseCrypt15Header, readCrypt15Header } from './crypt15.js';
import { MAGIC } from '../archive/format.js';

const PROBE = 4099;

export interface Crypt15Inspection {
  file: string;
  size: number;
  format: 'crypt15';
  keyType: number;
  headerLength: number;
  iv: string;
  appVersion: string | null;
  jidSuffix: string | null;
  backupVersion: number | null;
  /** Feature flags by field number, as serialised. */
  features: Record<string, boolean>;
  /** true: MD5 footer matches; false: it does not (damaged, or the multi-file variant). */
  md5Matches: boolean;
}

/** MD5 of all but the last 16 bytes, compared with them. */
async function md5FooterMatches(path: string, size: number): Promise<boolean> {
  if (size < 16) return false;
  const md5 = createHash('md5');
  try {
    for await (const c of createReadStream(path, { start: 0, end: size - 17, highWaterMark: 1 << 20 })) md5.update(c as Buffer);
  } catch (err) {
    throw ioError(err, path, 'read');
  }
  const fh = await open(path, 'r');
  try {
    const footer = Buffer.alloc(16);
    await fh.read(footer, 0, 16, size - 16);
    return md5.digest().equals(footer);
  } finally {
    await fh.close();
  }
}

/**
 * The inspection of `path` if it is a crypt15 backup; throws for a crypt14 or older WhatsApp
 * backup (exit 5, saying why it is not migratable); else null (not ours: the caller handles it).
 */
export async function inspectCrypt15(path: string): Promise<Crypt15Inspection | null> {
  let head: Buffer;
  try {
    const fh = await open(path, 'r');
    try {
      head = Buffer.alloc(PROBE);
      const { bytesRead } = await fh.read(head, 0, PROBE, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch {
    return null; // the caller reports the I/O problem in its own words
  }
  if (head.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  let h;
  try {
    parseCrypt15Header(head, path);
    h = await readCrypt15Header(path);
  } catch (err) {
    // A crypt14 or older WhatsApp backup is named as such, with the reason it cannot be migrated.
    if (err instanceof BackupctlError && err.detail?.format) throw err;
    if (err instanceof BackupctlError) return null;
    throw err;
  }
  return {
    file: path,
    size: h.size,
    format: 'crypt15',
    keyType: h.keyType,
    headerLength: h.prefixLength,
    iv: h.iv.toString('hex'),
    appVersion: h.appVersion ?? null,
    jidSuffix: h.jidSuffix ?? null,
    backupVersion: h.backupVersion ?? null,
    features: { ...h.features },
    md5Matches: await md5FooterMatches(path, h.size),
  };
}

/** The human form of an inspection, one fact per line. */
export function formatCrypt15Inspection(i: Crypt15Inspection): string[] {
  const on = Object.entries(i.features).filter(([, v]) => v).map(([k]) => k);
  const off = Object.entries(i.features).filter(([, v]) => !v).map(([k]) => k);
  return [
    `WhatsApp crypt15 backup ${i.file} (protected by the 64-digit key; not a backupctl archive)`,
    `  size:           ${i.size} bytes`,
    `  key type:       ${i.keyType} (end-to-end encrypted backup)`,
    `  header:         ${i.headerLength} bytes`,
    `  IV:             ${i.iv}`,
    `  app version:    ${i.appVersion ?? '(none)'}`,
    `  phone suffix:   ${i.jidSuffix ?? '(none)'}  (last two digits of the account's number)`,
    `  backup version: ${i.backupVersion ?? '(none)'}`,
    `  feature flags:  ${on.length ? `set ${on.join(',')}` : 'none set'}${off.length ? `; clear ${off.join(',')}` : ''}`,
    `  MD5 footer:     ${i.md5Matches ? 'matches (the file is intact)' : 'does not match (damaged or truncated, or a multi-file backup, which has none)'}`,
    `Migrate it with: backupctl migrate-from-64-digit-key ${i.file} -o FILE`,
  ];
}
