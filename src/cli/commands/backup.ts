// `backupctl backup DIR --repo REPO`: add one snapshot (needs no secret and no device: cron-safe).
import type { Command } from 'commander';
import { Exit } from '../../errors.js';
import { checkSourceDir } from '../../archive/walk.js';
import { openStore } from '../repo-open.js';
import { machineKeysFor } from '../../ops/repository.js';
import { backup } from '../../ops/backup.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info, warn } from '../run.js';
import { startProgress } from '../progress.js';

export function register(program: Command): void {
  program
    .command('backup')
    .description('add a snapshot of DIR to a repository, storing only what changed (needs no secret: safe for cron)')
    .argument('<dir>', 'the chat export directory')
    .requiredOption('--repo <repo>', 'the repository (see: backupctl repo init)')
    .action(
      action(async (ctx, dir: string, opts: { repo: string }) => {
        checkSourceDir(dir); // before the repository is locked or read
        const store = await openStore(ctx, opts.repo);
        const keys = await machineKeysFor(store);
        const warnings: string[] = [];
        const onWarning = (m: string) => {
          warnings.push(m);
          warn(termSafe(m));
        };
        const skipped = { count: 0 };
        const progress = await startProgress('backup');
        const t0 = Date.now();
        try {
          const res = await backup({ store, keys, dir, skipped, signal: ctx.signal, onWarning, onProgress: (p) => progress.update(p) });
          progress.stop();
          const seconds = (Date.now() - t0) / 1000;
          const skippedTotal = skipped.count + res.skipped;
          const { snapshot, ...counts } = res;
          if (ctx.json) emitJson({ ok: true, repository: opts.repo, snapshot: snapshot.id, time: snapshot.time, ...counts, skipped: skippedTotal, seconds, warnings });
          else {
            info(`Snapshot ${snapshot.id} of ${termSafe(snapshot.source)}: ${res.entries} entries (${res.files} files, ${(res.bytes / 1e6).toFixed(1)} MB), ${(res.bytesRead / 1e6).toFixed(1)} MB read, ${res.newChunks} new chunks, ${(res.storedBytes / 1e6).toFixed(2)} MB stored, ${seconds.toFixed(1)} s`);
            if (skippedTotal || res.changed) info(`Done, but ${skippedTotal} skipped and ${res.changed} changed while read (see warnings above): exit 3`);
          }
          return skippedTotal || res.changed ? Exit.partial : Exit.ok;
        } finally {
          progress.stop();
        }
      }),
    );
}
