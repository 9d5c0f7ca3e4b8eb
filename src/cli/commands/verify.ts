// `backupctl verify FILE [--against DIR]`: authenticate everything; name damaged files.
import type { Command } from 'commander';
import { ArchiveFile } from '../../archive/reader.js';
import { checkComparisonDir, compareWithDirectory, verifyArchive } from '../../archive/verify.js';
import { readIndex } from '../../archive/records.js';
import { Exit, usageError } from '../../errors.js';
import { action, emitJson, info, print } from '../run.js';
import { startProgress } from '../progress.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';
import { describeSlots } from './inspect.js';
import { count } from '../../util/plural.js';
import { verifyRepositoryCommand } from '../repo-verify.js';

export function register(program: Command): void {
  addUnlockOptions(
    program
      .command('verify')
      .description('authenticate every segment, the index and every file hash; with --against, compare with a directory')
      .argument('[file]', 'the archive; with --repo, the snapshot to verify (default: all)')
      .option('--against <dir>', 'also compare the entries with this directory')
      .option('--repo <repo>', 'verify a repository (backupctl-repository(5)): every snapshot has all its data')
      .option('--read-data', 'with --repo: also read and authenticate every pack'),
  ).action(
    action(async (ctx, file: string | undefined, opts: UnlockOptions & { against?: string; repo?: string; readData?: boolean }) => {
      if (opts.repo !== undefined) return verifyRepositoryCommand(ctx, file, { ...opts, repo: opts.repo });
      if (file === undefined) throw usageError("missing required argument 'file'");
      if (opts.against) await checkComparisonDir(opts.against); // before the unlock and the full pass
      const archive = await ArchiveFile.open(file);
      const progress = await startProgress('verify');
      const t0 = Date.now();
      try {
        archive.attachKey(await unlock(archive.header, opts, ctx.signal));
        // The index is decoded only to compare with a directory.
        const res = await verifyArchive(archive, (p) => progress.update({ ...p, total: archive.plainSize }), ctx.signal, false);
        progress.stop();
        const differences = opts.against ? await compareWithDirectory(await readIndex(archive), opts.against) : [];
        const slots = await describeSlots(archive.header.slots);
        const seconds = (Date.now() - t0) / 1000;
        if (ctx.json) {
          emitJson({ ok: differences.length === 0, ...res, seconds, slots, against: opts.against, differences });
        } else {
          info(`OK: ${file}: ${count(res.entries, 'entry', 'entries')} (${count(res.files, 'file')}, ${(res.bytes / 1e6).toFixed(1)} MB), ${count(res.segments, 'segment')} authenticated, every file hash matches (${seconds.toFixed(1)} s)`);
          for (const s of slots.filter((x) => x.inConfig === null)) info(`note: slot ${s.type} "${s.label}" is for a recipient that is not in the local config`);
          for (const p of res.changedWhileRead) info(`note: ${p} changed while it was being backed up`);
          if (opts.against) {
            // Decided before the listing: a reader that stops early (| head) keeps this status.
            if (differences.length) process.exitCode = Exit.partial;
            for (const d of differences) print(`${d.path}: ${d.problem}`);
            info(differences.length ? `${count(differences.length, 'difference')} from ${opts.against}: exit 3` : `No differences from ${opts.against}`);
          }
        }
        return differences.length ? Exit.partial : Exit.ok;
      } finally {
        progress.stop();
        await archive.close();
      }
    }),
  );
}
