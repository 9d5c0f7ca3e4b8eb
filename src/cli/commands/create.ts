// `backupctl create DIR -o FILE`: pack a directory into an archive wrapped to the recipients.
import type { Command } from 'commander';
import { Exit, usageError } from '../../errors.js';
import { basename, dirname, join } from 'node:path';
import { writeArchive } from '../../archive/pack.js';
import { checkSourceDir, entryPathInside, exceptEntries, treeBytes, walkDirectory } from '../../archive/walk.js';
import { openSink } from '../../archive/output.js';
import { DEFAULT_SEGMENT_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE } from '../../archive/format.js';
import { acquireLock } from '../../util/lock.js';
import { requireOutputDir } from '../../util/fsutil.js';
import { action, emitJson, info, warn } from '../run.js';
import { startProgress } from '../progress.js';
import { addRecipientOptions, describeRecipient, resolveRecipients, type RecipientOptions } from '../recipients.js';
import { count } from '../../util/plural.js';

export function parseSize(v: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(v.trim());
  if (!m) throw usageError(`bad size ${JSON.stringify(v)} (examples: 65536, 64K, 1M)`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[(m[2] ?? '').charAt(0).toUpperCase()] ?? 1;
  return Number(m[1]) * mult;
}

/**
 * When the archive is written inside DIR, its own files — the archive itself, its temporary file
 * (tempNameFor) and its lock (util/lock.ts) — are not part of the export: never archive them.
 */
async function ownFiles(dir: string, output: string): Promise<(path: string) => boolean> {
  if (output === '-') return () => false;
  const self = await entryPathInside(dir, join(dirname(output), basename(output)));
  if (self === null) return () => false;
  const slash = self.lastIndexOf('/');
  const tempPrefix = `${self.slice(0, slash + 1)}.${self.slice(slash + 1)}.backupctl-tmp-`;
  return (p) => p === self || p === `${self}.lock` || p === `${self}.lock.break` || p.startsWith(tempPrefix);
}

interface CreateOptions extends RecipientOptions {
  output: string;
  force?: boolean;
  segmentSize?: string;
}

export function register(program: Command): void {
  addRecipientOptions(
    program
      .command('create')
      .description('pack DIR into an encrypted archive (needs no secret and no device: safe for cron)')
      .argument('<dir>', 'the chat export directory')
      .requiredOption('-o, --output <file>', "the archive to write ('-' for standard output)")
      .option('--force', 'replace FILE if it exists (atomically, once the new archive is complete)')
      .option('--segment-size <size>', 'plaintext bytes per encrypted segment, a power of two from 4K to 16M', '1M'),
  ).action(
    action(async (ctx, dir: string, opts: CreateOptions) => {
      const segmentSize = parseSize(opts.segmentSize ?? String(DEFAULT_SEGMENT_SIZE));
      if (segmentSize < MIN_SEGMENT_SIZE || segmentSize > MAX_SEGMENT_SIZE || (segmentSize & (segmentSize - 1)) !== 0) {
        throw usageError('--segment-size must be a power of two from 4K to 16M');
      }
      if (opts.output !== '-') await requireOutputDir(opts.output);
      const recipients = await resolveRecipients(opts);
      checkSourceDir(dir); // before the lock and the output: not even a header goes to stdout
      const lock = opts.output === '-' ? null : await acquireLock(opts.output, opts.output);
      const warnings: string[] = [];
      const onWarning = (m: string) => {
        warnings.push(m);
        warn(m);
      };
      const skipped = { count: 0 };
      const progress = await startProgress('create');
      const total = progress.shown ? treeBytes(dir) : undefined; // only for the ETA: not paid in cron
      const t0 = Date.now();
      try {
        const sink = await openSink(opts.output, { force: opts.force });
        const res = await writeArchive({
          recipients,
          entries: exceptEntries(walkDirectory(dir, onWarning, skipped), await ownFiles(dir, opts.output)),
          sink,
          segmentSize,
          signal: ctx.signal,
          onWarning,
          onProgress: (p) => progress.update({ ...p, total }),
        });
        progress.stop();
        const seconds = (Date.now() - t0) / 1000;
        const skippedTotal = skipped.count + res.skipped;
        const summary = {
          ok: true,
          archive: opts.output,
          entries: res.entries,
          files: res.files,
          bytesIn: res.bytesIn,
          archiveSize: res.archiveSize,
          seconds,
          skipped: skippedTotal,
          changedWhileRead: res.changed,
          warnings,
          recipients: recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: r.fingerprint })),
        };
        if (ctx.json) emitJson(summary);
        else {
          const where = opts.output === '-' ? 'standard output' : opts.output;
          info(`Wrote ${where}: ${count(res.entries, 'entry', 'entries')} (${count(res.files, 'file')}), ${(res.bytesIn / 1e6).toFixed(1)} MB in, ${(res.archiveSize / 1e6).toFixed(1)} MB archive, ${seconds.toFixed(1)} s`);
          info(`Encrypted to ${count(recipients.length, 'recipient')}: ${recipients.map(describeRecipient).join(', ')}`);
          if (skippedTotal || res.changed) info(`Done, but ${skippedTotal} skipped and ${res.changed} changed while read (see warnings above): exit 3`);
        }
        return skippedTotal || res.changed ? Exit.partial : Exit.ok;
      } finally {
        progress.stop();
        lock?.release();
      }
    }),
  );
}
