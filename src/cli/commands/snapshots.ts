// `backupctl snapshots --repo REPO`: list the snapshots (the machine's dedup key opens the list;
// a fresh machine unlocks once).
import type { Command } from 'commander';
import { openStore } from '../repo-open.js';
import { DedupKeys } from '../../repo/keys.js';
import { listSnapshots } from '../../repo/snapshot.js';
import { listingKeys } from '../../ops/repository.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info } from '../run.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';

export function register(program: Command): void {
  addUnlockOptions(
    program
      .command('snapshots')
      .description("list a repository's snapshots, oldest first")
      .requiredOption('--repo <repo>', 'the repository'),
  ).action(
    action(async (ctx, opts: UnlockOptions & { repo: string }) => {
      const store = await openStore(ctx, opts.repo);
      const keys = await listingKeys(store, (h) => unlock(h, opts, ctx.signal));
      const all = await listSnapshots(store, new DedupKeys(keys.dedupKey));
      if (ctx.json) {
        emitJson({ ok: true, repository: opts.repo, snapshots: all.map(({ tree: _tree, ...s }) => s) });
        return;
      }
      for (const s of all) {
        process.stdout.write(`${s.id}  ${s.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z')}  ${termSafe(s.host)}  ${termSafe(s.source)}  ${s.stats.files} files  ${(s.stats.bytes / 1e6).toFixed(1)} MB\n`);
      }
      info(`${all.length} snapshot${all.length === 1 ? '' : 's'} in ${termSafe(opts.repo)}`);
    }),
  );
}
