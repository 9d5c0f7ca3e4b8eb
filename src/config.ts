// The config directory: who every future backup is encrypted to. Treated like ~/.ssh: a
// config file or directory writable by group or others is refused, writes are atomic and locked.
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { homedir } from 'node:os';
import { BackupctlError, Exit, ioError, usageError } from './errors.js';
import { acquireLock, writeFileAtomic } from './util/fsutil.js';
import { b64decode } from './util/base64.js';
import { fingerprint, isUsablePublicKey, wrapX25519 } from './keys/x25519.js';
import type { Recipient } from './keys/types.js';
import { MAX_LABEL, isValidLabel } from './keys/label.js';

/** One recipient as kept in config.json. Only public material, never a secret. */
export interface RecipientEntry {
  type: string; // "recovery" | "fido2"
  label: string;
  /** base64 (no padding) X25519 public key. */
  publicKey: string;
  created: string; // ISO 8601
  /** Type-specific public parameters copied into every slot made for this recipient. */
  params?: Record<string, unknown>;
}

export interface Config {
  version: 1;
  recipients: RecipientEntry[];
  /** Other modules' settings (drive client, ...), kept as they are. */
  [key: string]: unknown;
}

export function configDir(): string {
  if (process.env.BACKUPCTL_CONFIG_DIR) return process.env.BACKUPCTL_CONFIG_DIR;
  const base = process.env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(base, 'backupctl');
}

export const configPath = () => join(configDir(), 'config.json');

async function refuseLoosePermissions(path: string): Promise<boolean> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw ioError(err, path, 'read');
  }
  if (process.platform !== 'win32' && (st.mode & 0o022) !== 0) {
    throw new BackupctlError(
      Exit.refused,
      `refusing to use ${path}: it is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod go-w ${path}`,
    );
  }
  return true;
}

export async function loadConfig(): Promise<Config> {
  const dir = configDir();
  await refuseLoosePermissions(dir);
  const path = configPath();
  if (!(await refuseLoosePermissions(path))) return { version: 1, recipients: [] };
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    if (err instanceof SyntaxError) throw new BackupctlError(Exit.io, `cannot parse ${path}: ${err.message}`);
    throw ioError(err, path, 'read');
  }
  const cfg = parsed as Config;
  if (cfg?.version !== 1 || !Array.isArray(cfg.recipients)) {
    throw new BackupctlError(Exit.io, `${path} is not a backupctl version 1 config`);
  }
  return cfg;
}

/** Read-modify-write the config under its lock. */
export async function updateConfig<T>(change: (cfg: Config) => T | Promise<T>): Promise<T> {
  const lock = await acquireLock(configPath(), 'the config');
  try {
    const cfg = await loadConfig();
    const result = await change(cfg);
    await writeFileAtomic(configPath(), JSON.stringify(cfg, null, 2) + '\n', 0o600);
    return result;
  } finally {
    lock.release();
  }
}

/**
 * The recipient a config entry describes: every slot type wraps the same way (x25519.ts).
 * Exit 2 for a key that is not 32 bytes of base64 or is a low-order point (nothing it opens).
 */
export function recipientFromEntry(entry: RecipientEntry): Recipient & { fingerprint: string } {
  let pub: Uint8Array | null = null;
  try {
    pub = b64decode(entry.publicKey);
  } catch {
    /* reported below */
  }
  if (!pub || !isUsablePublicKey(pub)) throw usageError(`recipient "${entry.label}" has an invalid public key`);
  return {
    type: entry.type,
    label: entry.label,
    fingerprint: fingerprint(entry.type, pub),
    wrap: (fileKey: Uint8Array) => wrapX25519(entry.type, entry.label, pub, fileKey, entry.params),
  };
}

/** A typed label, trimmed, if it keeps the label rule (keys/label.ts); exit 2 otherwise. */
export function checkLabel(label: string): string {
  const l = label.trim();
  if (!isValidLabel(l)) throw usageError(`--label must be 1 to ${MAX_LABEL} visible characters on one line`);
  return l;
}
