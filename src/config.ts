// The config directory: who every future backup is encrypted to. Treated like ~/.ssh (trusted
// only as ssh's StrictModes would), checked entry by entry on every load, written atomically under
// its lock.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { homedir } from 'node:os';
import { BackupctlError, Exit, ioError, usageError } from './errors.js';
import { writeFileAtomic } from './util/fsutil.js';
import { acquireLock, type Lock } from './util/lock.js';
import { checkAncestors, checkOwnPath } from './util/strict-modes.js';
import { checkConfig, labelProblem } from './config-schema.js';
import { b64decode } from './util/base64.js';
import { fingerprint, isUsablePublicKey, wrapX25519 } from './keys/x25519.js';
import type { Recipient } from './keys/types.js';

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

/**
 * Trusted as ~/.ssh is (util/strict-modes.ts); exit 8 with the reason otherwise. Returns whether
 * the config file exists.
 */
async function checkTrust(): Promise<boolean> {
  const dir = configDir();
  await checkAncestors(dir);
  if (!(await checkOwnPath(dir, 'directory'))) return false;
  return checkOwnPath(configPath(), 'file');
}

/** The config directory (or `sub` inside it), created 0700 if missing, once the directories above it are trusted. */
export async function ensureConfigDir(sub?: string): Promise<string> {
  await checkTrust();
  const dir = sub ? join(configDir(), sub) : configDir();
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw ioError(err, dir, 'create');
  }
  // Again, now that it exists: a directory someone else made in between is refused.
  await checkAncestors(dir);
  await checkOwnPath(configDir(), 'directory');
  return dir;
}

/** The config, checked (config-schema.ts); an empty one if there is none yet. */
export async function loadConfig(): Promise<Config> {
  const path = configPath();
  if (!(await checkTrust())) return { version: 1, recipients: [] };
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    if (err instanceof SyntaxError) throw new BackupctlError(Exit.io, `cannot parse ${path}: ${err.message}`);
    throw ioError(err, path, 'read');
  }
  return checkConfig(parsed, path);
}

/** The config lock: held for the few milliseconds of an update, so a second run waits for it a while. */
export async function lockConfig(): Promise<Lock> {
  await ensureConfigDir();
  return acquireLock(configPath(), 'the config', { waitMs: 5000 });
}

/**
 * Read-modify-write the config under its lock (`held`: a lock the caller took with lockConfig
 * and releases itself). `change` runs after the config was read and checked; the file is written
 * only once it returns.
 */
export async function updateConfig<T>(change: (cfg: Config) => T | Promise<T>, held?: Lock): Promise<T> {
  const lock = held ?? (await lockConfig());
  try {
    const cfg = await loadConfig();
    const result = await change(cfg);
    checkConfig(cfg, configPath());
    await writeFileAtomic(configPath(), JSON.stringify(cfg, null, 2) + '\n', 0o600);
    return result;
  } finally {
    if (!held) lock.release();
  }
}

export const entryFingerprint = (e: RecipientEntry) => fingerprint(e.type, b64decode(e.publicKey));

/** The entry of `type` (`noun` in messages) with this label or fingerprint; exit 2 when none or several match. */
export function findRecipient(entries: RecipientEntry[], type: string, which: string, noun: string, listCmd: string): RecipientEntry {
  const hits = entries.filter((e) => e.type === type && (e.label === which || entryFingerprint(e) === which));
  if (hits.length === 0) throw usageError(`no ${noun} is labelled or has the fingerprint "${which}" (see: ${listCmd})`);
  if (hits.length > 1) throw usageError(`"${which}" matches ${hits.length} ${noun}s: use the fingerprint`);
  return hits[0]!;
}

/**
 * Remove the `type` entry `which` from the config. With `refuseLast`, refused (exit 8) when no
 * recipient would be left: create would have nobody to encrypt new archives to, so nightly
 * backups would fail from then on.
 */
export function removeRecipient(type: string, which: string, noun: string, listCmd: string, refuseLast: boolean): Promise<RecipientEntry> {
  return updateConfig((cfg) => {
    const e = findRecipient(cfg.recipients, type, which, noun, listCmd);
    if (cfg.recipients.length === 1 && refuseLast) {
      throw new BackupctlError(
        Exit.refused,
        `refusing to remove "${e.label}": it is the last recipient in the config, so create would have nobody to encrypt new archives to; add another first (backupctl recovery-code new, backupctl key enroll), or add --force if that is what you want`,
      );
    }
    cfg.recipients = cfg.recipients.filter((r) => r !== e);
    return e;
  });
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

/** A label as given on the command line, trimmed; exit 2 unless it is one short line of visible text. */
export function checkLabel(label: string): string {
  const l = label.trim();
  const why = labelProblem(l);
  if (why) throw usageError(`--label must be ${why}`);
  return l;
}
