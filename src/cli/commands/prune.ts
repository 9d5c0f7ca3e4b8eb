// `backupctl forget --repo REPO --keep-…` and `backupctl prune --repo REPO`.
import type { Command } from 'commander';
import { usageError } from '../../errors.js';
import { openStore } from '../repo-open.js';
import { forget, prune, type PruneResult } from '../../ops/prune.js';
import { listingKeys } from '../../ops/repository.js';
import { withRepositoryKeys } from '../repo-open.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info, type RunContext } from '../run.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';

const count = (v: string) => {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw usageError(`expected a whole number of snapshots, at least 1, not ${JSON.stringify(v)}`);
  return Number(v);
};

const runPrune = (ctx: RunContext, repo: string, opts: UnlockOptions, dryRun: boolean): Promise<PruneResult> =>
  withRepositoryKeys(ctx, { ...opts, repo }, (store, keys) => prune(store, keys, dryRun, ctx.signal));

const describePrune = (r: PruneResult, dryRun: boolean) =>
  `${dryRun ? 'Would delete' : 'Deleted'} ${r.packsDeleted} pack(s) and repack ${r.packsRepacked}, keeping ${r.packsKept}: ${(r.bytesFreed / 1e6).toFixed(2)} MB freed, ${(r.bytesWritten / 1e6).toFixed(2)} MB written${r.leftoversRemoved ? `, ${r.leftoversRemoved} leftover(s) of interrupted runs removed` : ''}`;

export function register(program: Command): void {
  addUnlockOptions(
    program
      .command('forget')
      .description("forget snapshots that no --keep rule keeps (per directory and host); needs no secret unless --prune")
      .requiredOption('--repo <repo>', 'the repository')
      .option('--keep-last <n>', 'keep the newest N snapshots', count)
      .option('--keep-daily <n>', 'keep the newest snapshot of each of the last N days that have one', count)
      .option('--keep-weekly <n>', 'keep the newest snapshot of each of the last N weeks that have one', count)
      .option('--keep-monthly <n>', 'keep the newest snapshot of each of the last N months that have one', count)
      .option('--prune', 'then delete the data no snapshot needs (see prune)')
      .option('--dry-run', 'only say what would be forgotten (and pruned)'),
  ).action(
    action(async (ctx, opts: UnlockOptions & { repo: string; keepLast?: number; keepDaily?: number; keepWeekly?: number; keepMonthly?: number; prune?: boolean; dryRun?: boolean }) => {
      const policy = { last: opts.keepLast, daily: opts.keepDaily, weekly: opts.keepWeekly, monthly: opts.keepMonthly };
      if (!Object.values(policy).some(Boolean)) throw usageError('give at least one of --keep-last, --keep-daily, --keep-weekly, --keep-monthly (forget never removes every snapshot)');
      const store = await openStore(ctx, opts.repo);
      const keys = await listingKeys(store, (h) => unlock(h, opts, ctx.signal));
      const dryRun = !!opts.dryRun;
      const res = await forget(store, keys, policy, dryRun);
      const pruned = opts.prune ? await runPrune(ctx, opts.repo, opts, dryRun) : undefined;
      if (ctx.json) {
        emitJson({ ok: true, dryRun, keep: res.keep.map((k) => ({ id: k.snapshot.id, time: k.snapshot.time, reasons: k.reasons })), remove: res.remove.map((s) => ({ id: s.id, time: s.time })), prune: pruned });
        return;
      }
      for (const k of res.keep) process.stdout.write(`keep    ${k.snapshot.id}  ${k.snapshot.time}  ${termSafe(k.snapshot.source)}  (${k.reasons.join(', ')})\n`);
      for (const s of res.remove) process.stdout.write(`${dryRun ? 'would forget' : 'forget'}  ${s.id}  ${s.time}  ${termSafe(s.source)}\n`);
      info(`${dryRun ? 'Would forget' : 'Forgot'} ${res.remove.length} snapshot(s), keeping ${res.keep.length}`);
      if (pruned) info(describePrune(pruned, dryRun));
    }),
  );
  addUnlockOptions(
    program
      .command('prune')
      .description('delete the data no snapshot needs (unlocks the repository: it reads every tree; holds the exclusive lock)')
      .requiredOption('--repo <repo>', 'the repository')
      .option('--dry-run', 'only say what would be deleted'),
  ).action(
    action(async (ctx, opts: UnlockOptions & { repo: string; dryRun?: boolean }) => {
      const res = await runPrune(ctx, opts.repo, opts, !!opts.dryRun);
      if (ctx.json) emitJson({ ok: true, dryRun: !!opts.dryRun, ...res });
      else info(describePrune(res, !!opts.dryRun));
    }),
  );
}
