// A WhatsApp backup (one .crypt15 file, or a folder with Databases/, Backups/, Media/) as archive
// entries: every .crypt15 decrypted on the fly and stored without its suffix, everything else
// as it is, the folder structure kept. Checked in full (headers, key) before anything is written.
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { EntryType } from '../archive/format.js';
import { chunkedContent, type SourceEntry } from '../archive/pack.js';
import { walkDirectory } from '../archive/walk.js';
import { decryptCrypt15, probeCrypt15, readCrypt15Header } from './crypt15.js';

const CRYPT15 = /\.crypt15$/i;
const OLDER = /\.crypt(\d+)$/i;

export interface LegacyFile {
  /** Absolute (or as given) path of the .crypt15 file. */
  abs: string;
  /** Path inside the archive: relative, '/'-separated, without the .crypt15 suffix. */
  entryPath: string;
}

export interface LegacySource {
  source: string;
  isFolder: boolean;
  files: LegacyFile[];
}

export const archivePathOf = (rel: string) => rel.replace(CRYPT15, '');

/**
 * Find the .crypt15 files of SOURCE and read their headers (no key needed): a crypt14 or a
 * non-backup under a .crypt15 name fails here, before the key is asked for.
 */
export async function scanLegacySource(source: string): Promise<LegacySource> {
  let st;
  try {
    st = await stat(source);
  } catch (err) {
    throw ioError(err, source, 'read');
  }
  if (st.isFile()) {
    await readCrypt15Header(source);
    const name = archivePathOf(basename(source));
    return { source, isFolder: false, files: [{ abs: source, entryPath: name || basename(source) }] };
  }
  if (!st.isDirectory()) throw new BackupctlError(Exit.io, `${source} is neither a file nor a folder`);
  const files: LegacyFile[] = [];
  const older: string[] = [];
  const skipped = { count: 0 };
  for await (const e of walkDirectory(source, () => {}, skipped)) {
    if (e.type !== EntryType.File) continue;
    if (CRYPT15.test(e.path)) {
      const abs = `${source}/${e.path}`;
      await readCrypt15Header(abs);
      files.push({ abs, entryPath: archivePathOf(e.path) });
    } else if (OLDER.test(e.path)) older.push(e.path);
  }
  if (files.length === 0) {
    const why = older.length
      ? `only older backups (${older.slice(0, 3).join(', ')}${older.length > 3 ? ', ...' : ''}), which the 64-digit key does not protect`
      : 'no .crypt15 backup';
    throw new BackupctlError(Exit.io, `${source} holds ${why}: nothing to migrate (to archive a plain folder, use backupctl create)`);
  }
  return { source, isFolder: true, files };
}

/**
 * Check the key against every file before writing: each must decrypt to the start of a zlib
 * stream or a ZIP. The first file that does not is fully diagnosed (MD5 vs tag); when none does,
 * the key is wrong.
 */
export async function checkLegacyKey(src: LegacySource, aesKey: Uint8Array, signal?: AbortSignal): Promise<void> {
  const failing: LegacyFile[] = [];
  for (const f of src.files) if (!(await probeCrypt15(f.abs, aesKey))) failing.push(f);
  if (failing.length === 0) return;
  const cause = await whyNotOpened(failing[0]!, aesKey, signal);
  // A wrong key makes a file's first block look like zlib about once in 2,000 files: before
  // saying "none", authenticate those that only passed the probe.
  if (cause?.code !== Exit.interrupted && failing.length < src.files.length) {
    for (const f of src.files) {
      if (failing.includes(f)) continue;
      const why = await whyNotOpened(f, aesKey, signal);
      if (why?.code === Exit.interrupted) throw why;
      if (why) failing.push(f);
    }
  }
  if (failing.length === src.files.length && src.files.length > 1 && cause?.code !== Exit.interrupted) {
    throw new BackupctlError(Exit.noKey, `this key does not open any of the ${src.files.length} .crypt15 backups in ${src.source}`);
  }
  throw cause ?? new BackupctlError(Exit.corrupt, `${failing[0]!.abs} does not start like any known crypt15 payload`);
}

/** Decrypt one file to its end: null when it authenticates, else the error that says why not. */
async function whyNotOpened(f: LegacyFile, aesKey: Uint8Array, signal?: AbortSignal): Promise<BackupctlError | null> {
  try {
    const r = await decryptCrypt15(f.abs, aesKey, signal);
    for await (const _ of r.chunks);
    return null;
  } catch (err) {
    if (!(err instanceof BackupctlError)) throw err;
    return err;
  }
}

/** The entries of SOURCE for the archive writer; .crypt15 content is decrypted as it is read. */
export async function* legacyEntries(
  src: LegacySource,
  aesKey: Uint8Array,
  warn: (m: string) => void,
  skipped: { count: number },
  signal?: AbortSignal,
): AsyncGenerator<SourceEntry> {
  const byPath = new Map(src.files.map((f) => [f.abs, f]));
  const seen = new Set<string>();
  const decrypted = (abs: string) => async () => {
    const r = await decryptCrypt15(abs, aesKey, signal);
    return chunkedContent(r.chunks, r.kind === 'zlib');
  };
  const unique = (path: string, from: string) => {
    if (seen.has(path)) {
      throw new BackupctlError(Exit.io, `${from} would be stored as ${path}, which is also in ${src.source}; rename one of them first`);
    }
    seen.add(path);
    return path;
  };
  if (!src.isFolder) {
    const f = src.files[0]!;
    const st = await stat(f.abs, { bigint: true }).catch((err) => {
      throw ioError(err, f.abs, 'read');
    });
    yield { path: f.entryPath, type: EntryType.File, mode: Number(st.mode & 0o7777n), mtimeNs: st.mtimeNs, open: decrypted(f.abs) };
    return;
  }
  for await (const e of walkDirectory(src.source, warn, skipped)) {
    const abs = `${src.source}/${e.path}`;
    const legacy = e.type === EntryType.File ? byPath.get(abs) : undefined;
    if (legacy) yield { ...e, path: unique(legacy.entryPath, e.path), open: decrypted(abs) };
    else {
      if (e.type === EntryType.File && OLDER.test(e.path)) {
        warn(`${e.path} is an older WhatsApp backup (not crypt15): it is copied into the archive as it is, still encrypted`);
      }
      yield { ...e, path: unique(e.path, e.path) };
    }
  }
}
