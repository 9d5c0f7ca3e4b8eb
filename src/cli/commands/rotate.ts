// `backupctl rotate FILE` and `backupctl recovery-code rotate`: change who can open archives.
// Re-wrap (default): a new header for the same file key, the payload copied untouched. Re-key
// (--rekey, and implied when a slot is removed): a new file key and a re-encrypted payload, since
// a removed key still opens any older copy of the header (an earlier pull, a Drive revision).
// The result is written beside the target, verified, and only then renamed over it.
import type { Command } from 'commander';
import { lstat, mkdtemp, open, readdir, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackupctlError, Exit, ioError, usageError, type ExitCode } from '../../errors.js';
import { checkLabel, loadConfig, lockConfig, recipientFromEntry, updateConfig, type Config, type RecipientEntry } from '../../config.js';
import { RETIRED } from '../../config-schema.js';
import type { Slot } from '../../keys/types.js';
import { fingerprint, recipientTag } from '../../keys/x25519.js';
import { generateRecoveryCode, RECOVERY_SLOT_TYPE, recoveryRecipientEntry } from '../../keys/recovery-code.js';
import { b64decode, b64encode } from '../../util/base64.js';
import { acquireLock, type Lock } from '../../util/lock.js';
import { requireOutputDir } from '../../util/fsutil.js';
import { MAGIC, MAX_SLOTS } from '../../archive/format.js';
import { readArchiveHeader } from '../../archive/header.js';
import { ArchiveFile } from '../../archive/reader.js';
import { openVerifyingSink, placeVerified, rekeyArchive, rewrapArchive, verifyingName } from '../../archive/rewrap.js';
import { action, emitJson, info, print, warn, type RunContext } from '../run.js';
import { startProgress, type Progress } from '../progress.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';
import { defaultLabel, issueCode } from './recovery-code.js';
import { addSpaceOption, openDrive, spaceName, spaceOf } from './drive.js';
import { count } from '../../util/plural.js';

const tagOf = (e: RecipientEntry) => b64encode(recipientTag(e.type, b64decode(e.publicKey)));
const matches = (e: RecipientEntry, s: Slot) => e.type === s.type && tagOf(e) === s.tag;
const fingerprintOf = (e: RecipientEntry) => fingerprint(e.type, b64decode(e.publicKey));

/** One slot of the rotated archive: an existing slot kept as it is, and/or a config recipient. */
interface Member {
  slot?: Slot;
  entry?: RecipientEntry;
}
const typeOf = (m: Member) => (m.slot ?? m.entry)!.type;
const labelOf = (m: Member) => (m.slot ?? m.entry)!.label;

interface RotateOptions extends UnlockOptions {
  output?: string;
  addKey?: string[];
  removeKey?: string[];
  newRecoveryCode?: boolean;
  rekey?: boolean;
  force?: boolean;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** A new recovery code, not yet recorded anywhere: its config entry is written after the archive. */
function freshCode(taken: ReadonlySet<string>, label?: string) {
  const code = generateRecoveryCode();
  return { code, entry: recoveryRecipientEntry(code, label ?? defaultLabel(taken)) };
}

/** Make `entry` THE recovery code of `cfg`; earlier codes are retired (returned). */
function retireCodesFor(cfg: Config, entry: RecipientEntry): RecipientEntry[] {
  const retired = cfg.recipients.filter((r) => r.type === RECOVERY_SLOT_TYPE);
  cfg.recipients = [...cfg.recipients.filter((r) => r.type !== RECOVERY_SLOT_TYPE), entry];
  const before = Array.isArray(cfg[RETIRED]) ? (cfg[RETIRED] as RecipientEntry[]) : [];
  cfg[RETIRED] = [...before, ...retired.map((r) => ({ ...r, retired: new Date().toISOString() }))];
  return retired;
}

function showCode(code: string, entry: RecipientEntry, what: string): void {
  process.stdout.write(
    `New recovery code "${entry.label}" (fingerprint ${fingerprintOf(entry)}), ${what}:\n\n    ${code}\n\n` +
      `Write it down now and keep it somewhere safe: it is shown only this once and cannot be recovered.\n` +
      `Test your copy with: backupctl recovery-code check\n`,
  );
}

/** The slots FILE should have after the rotation, from the options; refuses what would lock the user out. */
function planMembers(file: string, slots: Slot[], cfg: RecipientEntry[], o: RotateOptions, newEntry: RecipientEntry | null) {
  const current: Member[] = slots.map((s) => ({ slot: s, entry: cfg.find((e) => matches(e, s)) }));
  let target: Member[];
  if (!o.addKey && !o.removeKey && !newEntry) {
    // Plain `rotate FILE`: exactly the recipients of the current config.
    target = cfg.map((e) => current.find((c) => c.entry === e) ?? { entry: e });
  } else {
    target = [...current];
    for (const label of o.addKey ?? []) {
      const e = cfg.find((r) => r.label === label);
      if (!e) throw usageError(`no key or code labelled "${label}" in the config (${cfg.map((r) => `"${r.label}"`).join(', ') || 'it is empty'})`);
      if (!target.some((m) => m.entry === e)) target.push({ entry: e });
      else info(`${file} already has a slot for "${label}"`);
    }
    for (const label of o.removeKey ?? []) {
      const hit = target.filter((m) => m.slot?.label === label || m.entry?.label === label);
      if (!hit.length) throw usageError(`${file} has no slot labelled "${label}" (its slots: ${target.map((m) => `"${labelOf(m)}"`).join(', ')})`);
      target = target.filter((m) => !hit.includes(m));
    }
    if (newEntry) target = [...target.filter((m) => typeOf(m) !== RECOVERY_SLOT_TYPE), { entry: newEntry }];
  }
  const removed = current.filter((c) => !target.includes(c));
  const added = target.filter((m) => !m.slot);
  if (target.length === 0) throw usageError(`refusing to leave ${file} with no slot at all: nobody could ever open it again`);
  if (!target.some((m) => m.entry)) {
    throw usageError(`refusing: none of the slots left in ${file} is for a key or code in your config, so you could not open it`);
  }
  if (current.some((c) => typeOf(c) === RECOVERY_SLOT_TYPE) && !target.some((m) => typeOf(m) === RECOVERY_SLOT_TYPE) && !o.force) {
    throw usageError(
      `refusing to remove the last recovery code of ${file}: it would then open only with ${target.map((m) => `"${labelOf(m)}"`).join(', ')}; add --force if that is what you want`,
    );
  }
  if (target.length > MAX_SLOTS) throw usageError(`too many slots (${target.length}); an archive holds at most ${MAX_SLOTS}`);
  return { target, removed, added };
}

interface RotateSummary {
  archive: string;
  changed: boolean;
  rekeyed: boolean;
  slots: string[];
  kept: string[];
  added: string[];
  removed: string[];
  seconds: number;
  /** A new code the archive opens with, not yet shown nor in the config (see adoptCode). */
  pendingCode?: NewCode;
  newCode?: { code: string; label: string; fingerprint: string; retiredFromConfig: string[] };
}
type NewCode = ReturnType<typeof freshCode>;

/**
 * Show the new code and make it the config's, once the archive that opens with it is in place
 * (for --remote: on Drive), so a failed rotation never leaves the config with a code nothing uses.
 * The caller holds the config lock since before the rotation, so only writing the file can fail
 * here; the code then still reaches the user: shown above, or in --json in the error object on
 * standard output (never on standard error).
 */
async function adoptCode(ctx: { json: boolean }, s: RotateSummary, where: string, configLock: Lock | null): Promise<RotateSummary> {
  const { pendingCode: p, ...rest } = s;
  if (!p) return rest;
  if (!ctx.json) showCode(p.code, p.entry, `now the recovery code of ${where}`);
  let retired: RecipientEntry[];
  try {
    retired = await updateConfig((cfg) => retireCodesFor(cfg, p.entry), configLock ?? undefined);
  } catch (err) {
    const why = err instanceof BackupctlError ? err.message : String(err);
    throw new BackupctlError(
      Exit.io,
      `${where} was rotated and opens with the new code ${ctx.json ? 'given in this JSON object' : 'shown above'}, but the config could not be updated: ${why}`,
      ctx.json ? { code: p.code, label: p.entry.label, fingerprint: fingerprintOf(p.entry) } : undefined,
    );
  }
  return { ...rest, newCode: { code: p.code, label: p.entry.label, fingerprint: fingerprintOf(p.entry), retiredFromConfig: retired.map((r) => r.label) } };
}

/** Rotate the archive FILE (into o.output, else in place); a new code is left to adoptCode. */
async function rotateLocal(ctx: { json: boolean; signal: AbortSignal }, file: string, o: RotateOptions): Promise<RotateSummary> {
  const t0 = Date.now();
  const dest = o.output ?? file;
  if (o.output) {
    await requireOutputDir(o.output);
    const exists = await lstat(o.output).then(() => true, () => false);
    if (exists) throw new BackupctlError(Exit.io, `${o.output} already exists; choose another --output (or leave it out to replace ${file})`);
  }
  const locks: Lock[] = [];
  const tmp = verifyingName(dest);
  let newCode: NewCode | null = null;
  let fileKey: Uint8Array | null = null;
  let newKey: Uint8Array | null = null;
  let progress: Progress | null = null;
  try {
    locks.push(await acquireLock(file, file));
    if (o.output) locks.push(await acquireLock(o.output, o.output));
    const cfg = (await loadConfig()).recipients;
    const source = await ArchiveFile.open(file);
    try {
      if (o.newRecoveryCode) newCode = freshCode(new Set(cfg.map((r) => r.label)));
      const plan = planMembers(file, source.header.slots, cfg, o, newCode?.entry ?? null);
      const rekey = o.rekey ?? plan.removed.length > 0;
      if (rekey) {
        const stray = plan.target.find((m) => !m.entry);
        if (stray) {
          throw usageError(
            `slot "${labelOf(stray)}" is not in your config, so it cannot be wrapped to a new file key: remove it with --remove-key "${labelOf(stray)}", or keep the key with --no-rekey`,
          );
        }
      } else if (!plan.added.length && !plan.removed.length) {
        const slots = plan.target.map(labelOf);
        return { archive: file, changed: false, rekeyed: false, slots, kept: slots, added: [], removed: [], seconds: (Date.now() - t0) / 1000 };
      }

      fileKey = await unlock(source.header, o, ctx.signal);
      progress = await startProgress(rekey ? 'rotate (re-key)' : 'rotate (re-wrap)');
      const onProgress = (p: { bytes: number; total: number }) => progress!.update(p);
      let slotTags: string[];
      if (rekey) {
        source.attachKey(fileKey);
        const recipients = plan.target.map((m) => recipientFromEntry(m.entry!));
        slotTags = plan.target.map((m) => tagOf(m.entry!));
        newKey = await rekeyArchive({ source, recipients, sink: await openVerifyingSink(dest), signal: ctx.signal, onProgress });
        await placeVerified({ tmp, dest, fileKey: newKey, expect: { slotTags }, replace: !o.output, signal: ctx.signal });
      } else {
        const slots = plan.target.map((m) => m.slot ?? recipientFromEntry(m.entry!).wrap(fileKey!));
        slotTags = slots.map((s) => s.tag);
        const { payloadSha256 } = await rewrapArchive({ source, fileKey, slots, sink: await openVerifyingSink(dest), signal: ctx.signal, onProgress });
        await placeVerified({ tmp, dest, fileKey, expect: { slotTags, payloadSha256 }, replace: !o.output, signal: ctx.signal });
      }
      progress.stop();
      if (plan.removed.length && !rekey) {
        warn(
          `the file key did not change (--no-rekey): anyone holding ${plan.removed.map((m) => `"${labelOf(m)}"`).join(', ')} can still open an older copy of this archive (an earlier pull, a Drive revision, a backup of the file)`,
        );
      }
      return {
        archive: dest,
        changed: true,
        rekeyed: rekey,
        slots: plan.target.map(labelOf),
        kept: plan.target.filter((m) => m.slot).map(labelOf),
        added: plan.added.map(labelOf),
        removed: plan.removed.map(labelOf),
        seconds: (Date.now() - t0) / 1000,
        ...(newCode ? { pendingCode: newCode } : {}),
      };
    } finally {
      await source.close();
    }
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  } finally {
    progress?.stop();
    fileKey?.fill(0);
    newKey?.fill(0);
    for (const l of locks.reverse()) l.release();
  }
}

function report(ctx: { json: boolean }, s: RotateSummary, what: string, extra: Record<string, unknown> = {}): ExitCode {
  const list = (l: string[]) => l.map((x) => `"${x}"`).join(', ');
  if (ctx.json) {
    const { newCode, ...rest } = s;
    emitJson({ ok: true, ...rest, payloadCopied: s.changed && !s.rekeyed, ...(newCode ?? {}), ...extra });
  } else if (!s.changed) {
    info(`${what} already has exactly these slots: ${list(s.slots)}; nothing to do (use --rekey for a new file key)`);
  } else {
    info(
      `${s.rekeyed ? 'Re-keyed' : 'Re-wrapped'} ${what} in ${s.seconds.toFixed(1)} s: slots ${list(s.slots)}` +
        `${s.added.length ? `; added ${list(s.added)}` : ''}${s.removed.length ? `; removed ${list(s.removed)}` : ''}` +
        (s.rekeyed ? '; new file key, payload re-encrypted' : '; payload copied unchanged'),
    );
    if (s.newCode?.retiredFromConfig.length) {
      info(`The config's recovery code is now "${s.newCode.label}"; other archives still open only with the old one until rotated (backupctl recovery-code rotate --check DIR lists them).`);
    }
  }
  return Exit.ok;
}

/**
 * `rotate --remote NAME`: pull the newest backup of that name into a private temporary folder,
 * rotate it there, push the result, and only once Drive has it (MD5 checked) delete the old file
 * (with its revisions, which would otherwise still open with a removed key).
 */
async function rotateRemote(ctx: RunContext, name: string, o: RotateOptions & { appData?: boolean }, configLock: Lock | null): Promise<ExitCode> {
  if (o.output) throw usageError('--remote rotates the backup on Google Drive itself: -o does not apply');
  const { pull } = await import('../../drive/pull.js');
  const { push } = await import('../../drive/push.js');
  const { deleteFile } = await import('../../drive/remote.js');
  const { DEFAULT_CHUNK } = await import('../../drive/upload.js');
  const space = spaceOf(o);
  const drive = await openDrive(ctx);
  const dir = await mkdtemp(join(tmpdir(), 'backupctl-rotate-'));
  try {
    const local = join(dir, 'archive.bctl');
    let progress = await startProgress('pull');
    const pulled = await pull(drive, {
      // A foreign copy is refused below (exit 8, before anything changes), not by pull's exit 11.
      nameOrId: name, space, output: local, allowForeign: true, onWarning: (m) => warn(m), onProgress: (bytes, total) => progress.update({ bytes, total }),
    }).finally(() => progress.stop());
    const what = `${pulled.file.name} on ${spaceName(space)}`;
    if (pulled.differsFromPushed) {
      throw new BackupctlError(Exit.refused, `refusing to rotate ${what}: it is not what this machine pushed (see the warning above); pull it and inspect it first`);
    }
    const rotated = await rotateLocal(ctx, local, o);
    if (!rotated.changed) return report(ctx, { ...rotated, archive: pulled.file.name }, what, { remote: { space, id: pulled.file.id } });
    progress = await startProgress('push');
    const pushed = await push(drive, {
      path: local, name: pulled.file.name, space, chunkSize: DEFAULT_CHUNK, onInfo: (m) => info(m),
      onProgress: (bytes, total) => progress.update({ bytes, total }),
    }).finally(() => progress.stop());
    const s = await adoptCode(ctx, rotated, what, configLock);
    await deleteFile(drive, pulled.file);
    await drive.auth.flush();
    if (s.removed.length && pulled.others.length) {
      warn(`${count(pulled.others.length, 'older backup')} named ${pulled.file.name} ${pulled.others.length === 1 ? 'is' : 'are'} still on Drive and still open${s.removed.length === 1 ? ' with the removed slot' : ' with the removed slots'} ${s.removed.map((l) => `"${l}"`).join(', ')}: delete ${pulled.others.length === 1 ? 'it' : 'them'} with backupctl drive rm ID or drive prune`);
    }
    return report(ctx, { ...s, archive: pulled.file.name }, what, { remote: { space, oldId: pulled.file.id, newId: pushed.file.id } });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function rotate(ctx: RunContext, file: string | undefined, o: RotateOptions & { remote?: string; appData?: boolean }): Promise<ExitCode> {
  if (o.remote !== undefined && file !== undefined) throw usageError('give either FILE or --remote NAME, not both');
  if (o.remote === undefined && file === undefined) throw usageError('give the archive FILE to rotate (or --remote NAME for one on Google Drive)');
  // A new code becomes the config's at the very end: the lock is taken first, so that last step
  // cannot fail for a run holding it meanwhile (the archive would open with a code no config names).
  const configLock = o.newRecoveryCode ? await lockConfig() : null;
  try {
    if (o.remote !== undefined) return await rotateRemote(ctx, o.remote, o, configLock);
    return report(ctx, await adoptCode(ctx, await rotateLocal(ctx, file!, o), o.output ?? file!, configLock), o.output ? `${file} into ${o.output}` : file!);
  } finally {
    configLock?.release();
  }
}

/** Files under `dir` (recursively) that start with the archive magic. */
async function* archivesIn(dir: string): AsyncGenerator<string> {
  let names;
  try {
    names = await readdir(dir, { withFileTypes: true });
  } catch (err) {
    throw ioError(err, dir, 'read');
  }
  for (const d of names.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = join(dir, d.name);
    if (d.isDirectory()) yield* archivesIn(p);
    else if (d.isFile()) {
      const head = Buffer.alloc(MAGIC.length);
      const fh = await open(p, 'r').catch(() => null);
      if (!fh) continue;
      try {
        const { bytesRead } = await fh.read(head, 0, head.length, 0);
        if (bytesRead === head.length && head.equals(MAGIC)) yield p;
      } finally {
        await fh.close();
      }
    }
  }
}

interface CodeRotateOptions {
  label?: string;
  output?: string;
  check?: string;
}

/** Archives under `dir` with a slot for an old code (one of `old`, or retired earlier) and none for another. */
async function staleArchives(dir: string, cfg: Config) {
  const old = cfg.recipients.filter((r) => r.type === RECOVERY_SLOT_TYPE);
  const everRetired = [...old, ...((cfg[RETIRED] as RecipientEntry[] | undefined) ?? [])];
  const stale: Array<{ file: string; oldCodes: string[]; otherSlots: string[] }> = [];
  for await (const file of archivesIn(dir)) {
    let slots: Slot[];
    try {
      slots = (await readArchiveHeader(file)).slots;
    } catch (err) {
      warn(`skipped ${file}: ${(err as Error).message}`);
      continue;
    }
    const oldCodes = slots.filter((s) => s.type === RECOVERY_SLOT_TYPE).map((s) => everRetired.find((e) => matches(e, s))?.label ?? s.label);
    if (oldCodes.length) stale.push({ file, oldCodes, otherSlots: slots.filter((s) => s.type !== RECOVERY_SLOT_TYPE).map((s) => s.label) });
  }
  return stale;
}

async function rotateRecoveryCode(ctx: { json: boolean }, o: CodeRotateOptions): Promise<ExitCode> {
  const label = o.label === undefined ? undefined : checkLabel(o.label);
  // Every input is checked, and --check DIR read, before a code is made or anything written: a
  // new code is shown (or written) first and the config changes last. The archives found need an
  // old code whatever the new one is (it is in none of them yet).
  const stale = o.check === undefined ? null : await staleArchives(o.check, await loadConfig());
  const { code, entry, retired } = await issueCode({
    json: ctx.json, output: o.output, label, record: retireCodesFor,
    show: (c, e) => showCode(c, e, 'for backups made from now on'),
  });
  const fp = fingerprintOf(entry);
  if (ctx.json) {
    emitJson({
      ok: true, label: entry.label, fingerprint: fp, ...(o.output ? { output: o.output } : { code }),
      retired: retired.map((r) => r.label), ...(stale ? { stale } : {}),
    });
    return Exit.ok;
  }
  if (o.output) process.stdout.write(`New recovery code "${entry.label}" (fingerprint ${fp}) written to ${o.output} (mode 0600).\n`);
  if (retired.length) process.stdout.write(`It replaces ${retired.map((r) => `"${r.label}"`).join(', ')} in the config; keep the old code until every archive made with it has been rotated.\n`);
  if (stale) {
    if (!stale.length) process.stdout.write(`No archive under ${o.check} still needs an old code.\n`);
    else {
      process.stdout.write(`Archives under ${o.check} that still open only with an old code (run backupctl rotate FILE on each):\n`);
      for (const s of stale) {
        print(`  ${s.file}: ${s.oldCodes.map((l) => `"${l}"`).join(', ')}${s.otherSlots.length ? ` (also opens with ${s.otherSlots.map((l) => `"${l}"`).join(', ')})` : ''}`); // names found under DIR
      }
    }
  }
  return Exit.ok;
}

/** `recovery-code rotate`, registered under the recovery-code command by recovery-code.ts. */
export function registerRecoveryCodeRotate(rc: Command): void {
  rc.command('rotate')
    .description('replace the recovery code of the config with a new one (shown once); --check DIR lists archives that still need the old one')
    .option('--label <label>', 'name of the new code (default "recovery code YYYY-MM-DD")')
    .option('--output <file>', 'write the new code to this new file (mode 0600) instead of showing it')
    .option('--check <dir>', 'list the archives under DIR that open only with an old code')
    .action(action(async (ctx, opts: CodeRotateOptions) => rotateRecoveryCode(ctx, opts)));
}

export function register(program: Command): void {
  addSpaceOption(addUnlockOptions(
    program
      .command('rotate')
      .description('change the keys and codes that open FILE (re-wrap; --rekey re-encrypts with a new file key)')
      .argument('[file]', 'the archive')
      .option('--remote <name>', 'rotate the newest backup of this name (or id) on Google Drive: pull, rotate, push, then delete the old copy')
      .option('-o, --output <file>', 'write the rotated archive to this new file and leave FILE as it is')
      .option('--add-key <label>', 'add a slot for the config key or code with this label (repeatable)', collect)
      .option('--remove-key <label>', 'remove the slot with this label (repeatable; implies --rekey)', collect)
      .option('--new-recovery-code', "replace the archive's recovery code with a new one (shown once; it also becomes the config's code; implies --rekey)")
      .option('--rekey', 'new file key and re-encrypted payload (what to do when a key or code may have leaked)')
      .option('--no-rekey', 'keep the file key even though a slot is removed (see backupctl-rotate(1))')
      .option('--force', 'allow removing the last recovery code'),
  )).action(action(async (ctx, file: string | undefined, opts: RotateOptions & { remote?: string; appData?: boolean }) => rotate(ctx, file, opts)));
}
