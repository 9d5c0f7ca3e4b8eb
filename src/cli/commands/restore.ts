// `backupctl restore FILE -d DIR`: unlock, then extract safely (see archive/restore.ts).
import type { Command } from 'commander';
import { ArchiveFile, ArchiveStream } from '../../archive/reader.js';
import { restoreArchive } from '../../archive/restore.js';
import { describeDamage, describeLoss, damageJson, isDamaged } from '../../archive/damage.js';
import { BackupctlError, Exit, usageError } from '../../errors.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info, warn } from '../run.js';
import { startProgress } from '../progress.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';
import { count } from '../../util/plural.js';
import { restoreFromRepository } from '../repo-restore.js';

/** Open FILE, or standard input for '-' (refused when stdin is a terminal). */
export async function openArchive(file: string): Promise<ArchiveFile | ArchiveStream> {
  if (file !== '-') return ArchiveFile.open(file);
  if (process.stdin.isTTY) throw new BackupctlError(Exit.usage, "refusing to read an archive from a terminal; pipe one in or give a file name instead of '-'");
  return ArchiveStream.open(process.stdin);
}

export function register(program: Command): void {
  addUnlockOptions(
    program
      .command('restore')
      .description('restore an archive into DIR (created if missing); nothing is moved into DIR until everything read has been authenticated')
      .argument('<file>', "the archive ('-' for standard input); with --repo, the snapshot (an id, a prefix of one, or 'latest')")
      .option('--repo <repo>', 'restore a snapshot of this repository (backupctl-repository(5))')
      .requiredOption('-d, --dir <dir>', 'where to restore')
      .option('--only <path...>', 'restore only these paths (and everything under them)')
      .option('--force', 'replace existing files, links and empty directories in DIR, never a non-empty directory (the originals are kept until the restore has succeeded)')
      .option('--salvage', 'from a damaged archive, restore every entry that is intact and name the others (exit 10 if any is lost)'),
  ).action(
    action(async (ctx, file: string, opts: UnlockOptions & { dir: string; only?: string[]; force?: boolean; repo?: string; salvage?: boolean }) => {
      if (opts.dir === '') throw usageError('--dir needs a directory'); // '' would resolve to the current one
      if (opts.repo !== undefined) return restoreFromRepository(ctx, file, { ...opts, repo: opts.repo });
      const archive = await openArchive(file);
      const progress = await startProgress('restore');
      const t0 = Date.now();
      try {
        archive.attachKey(await unlock(archive.header, opts, ctx.signal));
        const res = await restoreArchive({
          archive, dest: opts.dir, only: opts.only, force: opts.force, salvage: opts.salvage, signal: ctx.signal,
          onProgress: (p) => progress.update(p),
        });
        progress.stop();
        const seconds = (Date.now() - t0) / 1000;
        const { damage, ...counts } = res;
        const lost = damage?.lost ?? [];
        if (ctx.json) emitJson({ ok: lost.length === 0, dir: opts.dir, ...counts, seconds, ...(damage ? { damaged: isDamaged(damage), ...damageJson(damage) } : {}) });
        else {
          for (const l of lost) {
            const what = l.path === null ? `${l.count ?? 'the'} entries in segments ${l.segments[0]}..${l.segments[1]} (names unknown)` : `${termSafe(l.path)}${l.size === null ? '' : ` (${l.size} bytes)`}`;
            info(`lost: ${what}: ${l.why}`);
          }
          info(`Restored ${count(res.entries, 'entry', 'entries')} (${count(res.files, 'file')}, ${(res.bytes / 1e6).toFixed(1)} MB) into ${opts.dir} in ${seconds.toFixed(1)} s${res.replaced ? `; replaced ${res.replaced} existing` : ''}`);
          if (damage && isDamaged(damage)) warn(`${describeDamage(damage)}; ${describeLoss(damage)}`);
        }
        return lost.length ? Exit.salvaged : Exit.ok;
      } finally {
        progress.stop();
        await archive.close();
      }
    }),
  );
}
