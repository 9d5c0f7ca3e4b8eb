// `backupctl migrate-from-64-digit-key SOURCE -o FILE`: a WhatsApp crypt15 backup (one file or a
// backup folder) into a normal archive wrapped to the current recipients. The decrypted data
// goes straight into the archive writer; the archive is verified under a temporary name and only
// then given its name. The legacy files are left alone unless --remove-legacy is given AND the
// new archive opens through one of its own slots (not merely with the file key still in memory,
// which would not catch a broken slot): they may be the only copy of someone's chats.
import type { Command } from 'commander';
import { stat, unlink } from 'node:fs/promises';
import { BackupctlError, Exit, ioError, usageError, type ExitCode } from '../../errors.js';
import { writeArchive } from '../../archive/pack.js';
import { ArchiveFile } from '../../archive/reader.js';
import { readIndex } from '../../archive/records.js';
import { openVerifyingSink, placeVerified, verifyingName } from '../../archive/rewrap.js';
import { requireOutputDir, syncDir } from '../../util/fsutil.js';
import { acquireLock } from '../../util/lock.js';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { backupEncryptionKey, parseLegacyKeyFile, parseLegacyKeyText } from '../../legacy/legacy-key.js';
import { checkLegacyKey, legacyEntries, scanLegacySource, type LegacySource } from '../../legacy/folder.js';
import { treeBytes } from '../../archive/walk.js';
import { action, emitJson, info, warn } from '../run.js';
import { readSecret, readSecretFileBytes } from '../secrets.js';
import { startProgress } from '../progress.js';
import { addRecipientOptions, describeRecipient, resolveRecipients, type RecipientOptions, type ResolvedRecipient } from '../recipients.js';
import { addUnlockOptions, canUnlock, unlock, type UnlockOptions } from '../unlock.js';
import { count } from '../../util/plural.js';

interface MigrateOptions extends RecipientOptions, UnlockOptions {
  output: string;
  keyFile?: string;
  force?: boolean;
  removeLegacy?: boolean;
}

/** Key files are tiny (59 bytes or 64 digits); anything big is the wrong file. */
const MAX_KEY_FILE = 4096;

/** Read --key-file as bytes: encrypted_backup.key is binary and must not go through a text decoder. */
async function readKeyFile(path: string): Promise<Buffer> {
  const raw = await readSecretFileBytes(path, '64-digit key', MAX_KEY_FILE);
  try {
    return parseLegacyKeyFile(raw, path);
  } finally {
    raw.fill(0);
  }
}

/** The 32-byte root key from --key-file, $BACKUPCTL_LEGACY_KEY or a hidden prompt. */
async function readRootKey(keyFile: string | undefined, signal: AbortSignal): Promise<Buffer> {
  if (keyFile !== undefined) return readKeyFile(keyFile);
  const text = await readSecret({
    what: '64-digit key', env: 'BACKUPCTL_LEGACY_KEY', fileFlag: '--key-file',
    prompt: 'WhatsApp 64-digit key (spaces and dashes are ignored):', signal,
  });
  return parseLegacyKeyText(text);
}

/** Recipients that also hand this process a copy of the file key, to verify the written archive. */
function capturingFileKey(recipients: ResolvedRecipient[]) {
  let fileKey: Uint8Array | null = null;
  const wrapped = recipients.map((r, i) =>
    i === 0 ? { ...r, wrap: (k: Uint8Array) => ((fileKey = Uint8Array.from(k)), r.wrap(k)) } : r,
  );
  return { recipients: wrapped, fileKey: () => fileKey };
}

async function removeLegacy(src: LegacySource, sizes: Map<string, { size: bigint; mtimeNs: bigint }>): Promise<string[]> {
  const removed: string[] = [];
  for (const f of src.files) {
    const before = sizes.get(f.abs)!;
    const now = await stat(f.abs, { bigint: true }).catch(() => null);
    if (!now || now.size !== before.size || now.mtimeNs !== before.mtimeNs) {
      warn(`kept ${f.abs}: it changed or vanished during the migration, so the archive may not hold what it holds now`);
      continue;
    }
    try {
      await unlink(f.abs);
      removed.push(f.abs);
    } catch (err) {
      warn(ioError(err, f.abs, 'remove').message);
    }
  }
  for (const d of new Set(removed.map((p) => dirname(p)))) await syncDir(d);
  return removed;
}

async function migrate(ctx: { json: boolean; signal: AbortSignal }, source: string, opts: MigrateOptions): Promise<ExitCode> {
  if (opts.output === '-') throw usageError('migrate writes to a file (-o FILE): it verifies the archive before reporting success');
  const warnings: string[] = [];
  const onWarning = (m: string) => {
    warnings.push(m);
    warn(m);
  };
  const inside = relative(resolve(source), resolve(opts.output));
  if (!inside.startsWith('..') && !isAbsolute(inside)) {
    throw usageError(inside ? `the archive ${opts.output} would be inside ${source}, which is being read: write it elsewhere` : `-o ${opts.output} is the source itself: write the archive elsewhere`);
  }
  await requireOutputDir(opts.output);
  const src = await scanLegacySource(source);
  const existing = await stat(opts.output).catch(() => null);
  if (existing?.isDirectory()) throw new BackupctlError(Exit.io, `${opts.output} is a directory; give a file name with -o`);
  if (existing && !opts.force) throw new BackupctlError(Exit.io, `${opts.output} already exists; use --force to replace it`);
  const recipients = await resolveRecipients(opts);
  // --remove-legacy opens the new archive before removing anything: when nothing could open it
  // here (no code given, no terminal to ask for it, no security key), refuse before writing it.
  if (opts.removeLegacy && !canUnlock(recipients.map((r) => r.type), opts)) {
    throw usageError('--remove-legacy must open the new archive before it removes anything, and there is no terminal to ask for the recovery code: use --recovery-code-file FILE or BACKUPCTL_RECOVERY_CODE (nothing was written)');
  }

  const rootKey = await readRootKey(opts.keyFile, ctx.signal);
  const aesKey = backupEncryptionKey(rootKey);
  rootKey.fill(0);
  const lock = await acquireLock(opts.output, opts.output);
  const tmp = verifyingName(opts.output);
  const capture = capturingFileKey(recipients);
  const progress = await startProgress('migrate');
  // The source's size: decrypted databases come out larger than their .crypt15 (zlib inside), so
  // the total is an estimate, and grows to what was done if that passes it.
  const total = progress.shown ? treeBytes(source) : undefined;
  const t0 = Date.now();
  let placed = false;
  try {
    await checkLegacyKey(src, aesKey, ctx.signal);
    const sizes = new Map<string, { size: bigint; mtimeNs: bigint }>();
    for (const f of src.files) {
      const st = await stat(f.abs, { bigint: true });
      sizes.set(f.abs, { size: st.size, mtimeNs: st.mtimeNs });
    }
    const skipped = { count: 0 };
    const res = await writeArchive({
      recipients: capture.recipients,
      entries: legacyEntries(src, aesKey, onWarning, skipped, ctx.signal),
      sink: await openVerifyingSink(opts.output),
      signal: ctx.signal,
      onWarning,
      onProgress: (p) => progress.update({ ...p, total }),
    });
    const fileKey = capture.fileKey()!;
    try {
      await placeVerified({ tmp, dest: opts.output, fileKey, expect: { paths: src.files.map((f) => f.entryPath) }, replace: Boolean(opts.force), signal: ctx.signal });
      placed = true;
    } finally {
      fileKey.fill(0);
    }
    progress.stop();
    const skippedTotal = skipped.count + res.skipped;
    const seconds = (Date.now() - t0) / 1000;
    if (!ctx.json) {
      info(`Wrote and verified ${opts.output}: ${count(src.files.length, 'WhatsApp backup file')} decrypted, ${count(res.entries, 'entry', 'entries')} (${count(res.files, 'file')}), ${(res.bytesIn / 1e6).toFixed(1)} MB in, ${(res.archiveSize / 1e6).toFixed(1)} MB archive, ${seconds.toFixed(1)} s`);
      info(`Encrypted to ${count(recipients.length, 'recipient')}: ${recipients.map(describeRecipient).join(', ')}`);
    }

    let removed: string[] = [];
    if (opts.removeLegacy) {
      // Open the new archive the way a restore will: through one of its slots.
      if (!ctx.json) info('To remove the WhatsApp files, first open the new archive with one of its own keys:');
      const a = await ArchiveFile.open(opts.output);
      let key: Uint8Array;
      try {
        key = await unlock(a.header, opts, ctx.signal);
      } catch (err) {
        await a.close();
        if (err instanceof BackupctlError && err.code !== Exit.interrupted) {
          throw new BackupctlError(err.code, `${opts.output} was written and verified, but the WhatsApp files were kept: ${err.message}`);
        }
        throw err;
      }
      try {
        // The slot gave the key the header MAC (and so the verified payload) was made with; the
        // index read with it must list every migrated file.
        a.attachKey(key);
        const listed = new Set((await readIndex(a)).map((e) => e.path));
        const missing = src.files.filter((f) => !listed.has(f.entryPath));
        if (missing.length) throw new Error(`the archive opened but does not list ${missing.map((f) => f.entryPath).join(', ')}`);
      } finally {
        key.fill(0);
        await a.close();
      }
      removed = await removeLegacy(src, sizes);
      if (!ctx.json) info(`Removed ${count(removed.length, 'WhatsApp backup file')}: ${removed.join(', ')}`);
    } else if (!ctx.json) {
      info(`The WhatsApp files were left as they are${src.isFolder ? ` in ${source}` : ''}; --remove-legacy removes them once the archive opens with one of its keys.`);
    }
    if (ctx.json) {
      emitJson({
        ok: true,
        archive: opts.output,
        source,
        decrypted: src.files.map((f) => ({ from: f.abs, to: f.entryPath })),
        entries: res.entries,
        files: res.files,
        bytesIn: res.bytesIn,
        archiveSize: res.archiveSize,
        seconds,
        verified: true,
        skipped: skippedTotal,
        removedLegacy: removed,
        warnings,
        recipients: recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: r.fingerprint })),
      });
    } else if (skippedTotal) info(`Done, but ${skippedTotal} skipped (see warnings above): exit 3`);
    return skippedTotal || removed.length < (opts.removeLegacy ? src.files.length : 0) ? Exit.partial : Exit.ok;
  } catch (err) {
    if (!placed) await unlink(tmp).catch(() => {});
    throw err;
  } finally {
    progress.stop();
    aesKey.fill(0);
    capture.fileKey()?.fill(0);
    lock.release();
  }
}

export function register(program: Command): void {
  addUnlockOptions(
    addRecipientOptions(
      program
        .command('migrate-from-64-digit-key')
        .description('turn a WhatsApp backup protected by the 64-digit key (.crypt15 file or backup folder) into an archive')
        .argument('<source>', 'a .crypt15 file, or a WhatsApp backup folder (Databases/, Backups/, Media/)')
        .requiredOption('-o, --output <file>', 'the archive to write')
        .option('--key-file <file>', 'the 64-digit key: a text file with the 64 hex digits, or WhatsApp\'s encrypted_backup.key (else $BACKUPCTL_LEGACY_KEY, else a hidden prompt)')
        .option('--force', 'replace FILE if it exists (once the new archive is complete and verified)')
        .option('--remove-legacy', 'delete the .crypt15 files afterwards, only once the new archive has opened with one of its own keys'),
    ),
  ).action(action(async (ctx, source: string, opts: MigrateOptions) => migrate(ctx, source, opts)));
}
