// `backupctl inspect FILE`: the envelope without any key (like age-inspect), and with --list the
// entries (which needs an unlock).
import type { Command } from 'commander';
import { stat } from 'node:fs/promises';
import { loadConfig } from '../../config.js';
import { b64decode } from '../../util/base64.js';
import { fingerprint, slotFingerprint } from '../../keys/x25519.js';
import type { Slot } from '../../keys/types.js';
import { ArchiveFile } from '../../archive/reader.js';
import { indexBatches, readIndex } from '../../archive/records.js';
import { EntryType, TAG_LEN } from '../../archive/format.js';
import type { IndexEntry } from '../../archive/entries.js';
import type { ParsedHeader } from '../../archive/header.js';
import { Exit, exitName, type ExitCode } from '../../errors.js';
import { damageError, damageJson, isDamaged } from '../../archive/damage.js';
import { salvageArchive } from '../../archive/salvage.js';
import { indexIntact } from '../../archive/salvage-index.js';
import { action, emitJson, print, reportFailure, type RunContext } from '../run.js';
import { termSafe } from '../../util/terminal-text.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';
import { formatCrypt15Inspection, inspectCrypt15 } from '../../legacy/inspect.js';
import { plainRepositoryFile, sealedRepositoryFile } from '../../repo/inspect.js';
import { usageError } from '../../errors.js';

/** Slots with their public metadata, marked by whether the local config knows their recipient. */
export async function describeSlots(slots: readonly Slot[]) {
  let known: Array<{ type: string; label: string; fingerprint: string }> = [];
  try {
    known = (await loadConfig()).recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: fingerprint(r.type, b64decode(r.publicKey)) }));
  } catch {
    /* no usable config: every slot is simply "not in config" */
  }
  return slots.map((s) => {
    const fp = slotFingerprint(s);
    const match = known.find((k) => k.type === s.type && k.fingerprint === fp);
    return { type: s.type, label: s.label, fingerprint: fp, inConfig: match ? match.label : null, params: s.params ?? {} };
  });
}

const typeName = ['file', 'dir', 'symlink'] as const;
const modeString = (e: IndexEntry) => (e.type === EntryType.Dir ? 'd' : e.type === EntryType.Symlink ? 'l' : '-') +
  [6, 3, 0].map((s) => ['r', 'w', 'x'].map((c, i) => ((e.mode >> s) & (4 >> i) ? c : '-')).join('')).join('');

const isoTime = (e: IndexEntry) => new Date(Number(e.mtimeNs / 1000000n)).toISOString();

function entryJson(e: IndexEntry) {
  return {
    path: e.path, type: typeName[e.type], mode: e.mode.toString(8).padStart(4, '0'), size: Number(e.size),
    mtime: isoTime(e), sha256: e.type === EntryType.File ? e.sha256.toString('hex') : undefined,
    target: e.type === EntryType.Symlink ? e.target : undefined, changedWhileRead: (e.flags & 1) === 1 || undefined,
  };
}

/** `first`, one line per entry, then `last`, on stdout in pieces of about 64 KB, waiting for a slow reader. */
async function writeLines(first: string, batches: AsyncIterable<IndexEntry[]> | IndexEntry[][], line: (e: IndexEntry, i: number) => string, last: string): Promise<void> {
  let out = first;
  let i = 0;
  const flush = async () => {
    if (!process.stdout.write(out)) await new Promise((resolve) => process.stdout.once('drain', resolve));
    out = '';
  };
  for await (const batch of batches) {
    for (const e of batch) {
      out += line(e, i++);
      if (out.length >= 1 << 16) await flush();
    }
  }
  out += last + (last ? '\n' : '');
  await flush();
}

export function envelope(path: string, size: number, h: ParsedHeader) {
  const sealed = h.segmentSize + TAG_LEN;
  return {
    file: path, size, format: h.version, created: h.created, cipher: 'AES-256-GCM', segmentSize: h.segmentSize,
    headerSize: h.headerLength, payloadSize: size - h.headerLength, segments: Math.ceil((size - h.headerLength) / sealed),
  };
}

export function register(program: Command): void {
  addUnlockOptions(
    program
      .command('inspect')
      .description("show an archive's envelope (format, creation time, slots) without any key; --list unlocks and lists the entries")
      .argument('<file>', 'the archive')
      .option('--list', 'unlock and list the entries'),
  ).action(action(inspect));
  // The name restic, borg and tar users reach for.
  addUnlockOptions(
    program
      .command('ls')
      .alias('list')
      .description("unlock an archive and list its entries (the same as inspect --list)")
      .argument('<file>', 'the archive'),
  ).action(action((ctx, file: string, opts: UnlockOptions) => inspect(ctx, file, { ...opts, list: true })));
}

async function inspect(ctx: RunContext, file: string, opts: UnlockOptions & { list?: boolean }): Promise<ExitCode | void> {
  const legacy = await inspectCrypt15(file); // a WhatsApp 64-digit-key backup: its header, no key
  if (legacy) {
    if (ctx.json) emitJson({ ok: true, ...legacy });
    else print(...formatCrypt15Inspection(legacy)); // its strings come from the file
    return;
  }
  const plain = await plainRepositoryFile(file); // a repository's marker or lock: plain JSON
  if (plain) {
    if (ctx.json) emitJson({ ok: true, file, repository: plain.kind, content: plain.content });
    else print(`backupctl repository ${plain.kind}: ${file}`, ...JSON.stringify(plain.content, null, 2).split('\n'));
    return;
  }
  const archive = await ArchiveFile.open(file);
  try {
    const size = (await stat(file)).size;
    const env = envelope(file, size, archive.header);
    const slots = await describeSlots(archive.header.slots);
    const repository = await sealedRepositoryFile(file, archive.header.slots);
    if (repository && opts.list) throw usageError(`${file} is a repository ${repository.replace(/ \(.*/, '')}: list a snapshot with backupctl restore --repo or backupctl snapshots --repo`);
    if (repository) {
      if (ctx.json) return emitJson({ ok: true, ...env, repository, authenticated: false, slots });
      print(
        `backupctl repository ${repository}: ${file} (header NOT authenticated: no key was used)`,
        `  created:  ${env.created}`,
        `  payload:  ${env.payloadSize} bytes in ${env.segments} segments of ${env.segmentSize} bytes`,
        `  slots:    ${slots.map((s) => `${s.type} "${s.label}"`).join(', ')}`,
      );
      return;
    }
    if (opts.list) archive.attachKey(await unlock(archive.header, opts, ctx.signal));
    // A damaged footer or index: list the entries a salvage walk proves intact, and end with
    // the account of what is damaged and lost (exit 5).
    const walked = opts.list && !(await indexIntact(archive)) ? await salvageArchive(archive) : null;
    const damage = walked && isDamaged(walked.report) ? walked : null;
    const intact: IndexEntry[] = damage ? damage.found.map((f) => ({ ...f.meta, offset: f.offset, length: f.length })) : [];
    const damageMessage = damage ? damageError(damage.report, '; listed the entries that are intact').message : '';
    if (ctx.json) {
      const result = { ok: true, ...env, authenticated: !!opts.list, slots };
      if (!opts.list) return emitJson(result);
      if (damage) {
        const error = { exitCode: Exit.corrupt, kind: exitName[Exit.corrupt], message: damageMessage };
        const failed = { ...result, ok: false, damage: damageJson(damage.report), error };
        await writeLines(JSON.stringify(failed).slice(0, -1) + ',"entries":[', [intact], (e, i) => (i ? ',' : '') + JSON.stringify(entryJson(e)), ']}');
        process.stderr.write(JSON.stringify({ type: 'error', ...error }) + '\n');
        return Exit.corrupt;
      }
      // The whole index is read first (one JSON object, even when it turns out damaged),
      // then the same object emitJson would print is written in pieces: one string of
      // 100,000 entries would be tens of MB.
      const entries = await readIndex(archive);
      await writeLines(JSON.stringify(result).slice(0, -1) + ',"entries":[', [entries], (e, i) => (i ? ',' : '') + JSON.stringify(entryJson(e)), ']}');
      return;
    }
    const head: string[] = [
      `backupctl archive ${file}${opts.list ? ' (header authenticated)' : ' (header NOT authenticated: no key was used)'}`,
      `  format:   ${env.format}`,
      `  created:  ${env.created}`,
      `  payload:  ${env.payloadSize} bytes in ${env.segments} AES-256-GCM segments of ${env.segmentSize} bytes (header ${env.headerSize} bytes)`,
      `  slots (${slots.length}):`,
      ...slots.map((s, i) => {
        const p = s.params as Record<string, unknown>;
        const extra = s.type === 'fido2' ? `  rp ${p.rp} uv ${p.uv ? 'yes' : 'no'} aaguid ${p.aaguid} credential ${String(p.credential).slice(0, 16)}…` : '';
        return `    ${i + 1}. ${s.type.padEnd(9)} "${s.label}"  fingerprint ${s.fingerprint}  ${s.inConfig !== null ? `[in config: ${s.inConfig}]` : '[not in local config]'}${extra}`;
      }),
    ];
    if (!opts.list) {
      print(...head);
      return;
    }
    // Labels, parameters, paths and link targets are the archive's: each line is made
    // terminal-safe whole, so none can break out of its line (backupctl(1) OUTPUT).
    const line = (e: IndexEntry) =>
      termSafe(`    ${modeString(e)} ${String(e.size).padStart(12)} ${isoTime(e).slice(0, 19).replace('T', ' ')} ${e.path}${e.type === EntryType.Symlink ? ` -> ${e.target}` : ''}`) + '\n';
    if (damage) {
      const total = damage.report.entries;
      head.push(`  entries (${intact.length} intact${total !== null ? ` of ${total}` : ''}):`);
      await writeLines(head.map(termSafe).join('\n') + '\n', [intact], line, '');
      reportFailure(Exit.corrupt, damageMessage, false);
      return Exit.corrupt;
    }
    // Listed as the index is decrypted, like tar -t: no entry is kept, so memory does not
    // grow with the entries.
    head.push(`  entries (${(await archive.footer()).entryCount}):`);
    await writeLines(head.map(termSafe).join('\n') + '\n', indexBatches(archive), line, '');
  } finally {
    await archive.close();
  }
}
