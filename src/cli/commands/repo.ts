// `backupctl repo init REPO` and `backupctl repo unlock REPO`: set up a snapshot repository
// (backupctl-repository(5)), and let this machine back up into one made elsewhere.
import type { Command } from 'commander';
import { openStore } from '../repo-open.js';
import { adoptRepository, createRepository, rotateRepository, type RotateResult } from '../../ops/repository.js';
import { breakLocks } from '../../ops/break-lock.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info } from '../run.js';
import { addRecipientOptions, describeRecipient, includesOwn, resolveRecipients, type RecipientOptions } from '../recipients.js';
import { BackupctlError, Exit } from '../../errors.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';

export function register(program: Command): void {
  const repo = program.command('repo').description('snapshot repositories: deduplicated, encrypted nightly backups (backupctl-repository(5))');
  addRecipientOptions(
    repo
      .command('init')
      .description('create a repository in REPO (a directory, or drive:NAME / drive-appdata:NAME on Google Drive); needs no secret: its keys are sealed to the recipients')
      .argument('<repo>', 'the repository directory or drive:NAME (created; must not be a repository already)'),
  ).action(
    action(async (ctx, dir: string, opts: RecipientOptions) => {
      const recipients = await resolveRecipients(opts);
      const id = await createRepository(await openStore(ctx, dir), recipients);
      if (ctx.json) emitJson({ ok: true, repository: dir, id, recipients: recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: r.fingerprint })) });
      else {
        info(`Created repository ${termSafe(dir)} (id ${id})`);
        info(`Its keys open with: ${recipients.map(describeRecipient).map(termSafe).join(', ')}; this machine can back up into it without a secret`);
      }
    }),
  );
  addUnlockOptions(
    repo
      .command('unlock')
      .description('unlock REPO once (recovery code or security key) so that this machine can back up into it without a secret')
      .argument('<repo>', 'the repository directory'),
  ).action(
    action(async (ctx, dir: string, opts: UnlockOptions) => {
      const id = await adoptRepository(await openStore(ctx, dir), (h) => unlock(h, opts, ctx.signal));
      if (ctx.json) emitJson({ ok: true, repository: dir, id });
      else info(`This machine can now back up into ${termSafe(dir)} (id ${id}) without a secret`);
    }),
  );
  addUnlockOptions(
    addRecipientOptions(
      repo
        .command('rotate')
        .description("seal REPO's keys to the recipients now in the config (and --recipients-file): add or remove who can open it")
        .argument('<repo>', 'the repository directory')
        .option('--new-read-key', 'also seal the data written from now on to a new read key, which no copy of the keys file made before opens')
        .option('--force', 'seal them even when none of the recipients is in the config (the repository is handed over)'),
    ),
  ).action(
    action(async (ctx, dir: string, opts: RecipientOptions & UnlockOptions & { newReadKey?: boolean; force?: boolean }) => {
      const recipients = await resolveRecipients(opts);
      if (!opts.force && !(await includesOwn(recipients))) {
        // This machine would go on backing up, every night, into a repository nobody here can restore from.
        throw new BackupctlError(
          Exit.refused,
          `refusing to seal the keys of ${dir} only to recipients that are not in your config: no key or code of yours would open it again, while this machine goes on backing up into it; add --force if it is meant for them alone`,
        );
      }
      const res = await rotateRepository(await openStore(ctx, dir), (h) => unlock(h, opts, ctx.signal), recipients, !!opts.newReadKey);
      if (ctx.json) {
        const { removed, added, generation, renewed, finished } = res;
        emitJson({ ok: true, repository: dir, recipients: recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: r.fingerprint })), removed, added, readKey: { generation, renewed, finished } });
      } else for (const line of rotateReport(dir, recipients.map(describeRecipient), res)) info(line); // info makes each line terminal-safe
    }),
  );
  repo
    .command('break-lock')
    .description("remove the locks of runs that are gone (stale ones; with --all every lock, for a machine you know is dead)")
    .argument('<repo>', 'the repository')
    .option('--all', 'also remove locks that look live: only when no other machine is using the repository')
    .action(
      action(async (ctx, dir: string, opts: { all?: boolean }) => {
        const res = await breakLocks(await openStore(ctx, dir), !!opts.all);
        const who = (l: { operation: string; host: string; pid: number; time: string } | null) => (l ? `${l.operation} on ${l.host}, pid ${l.pid}, last refreshed ${l.time}` : 'unreadable');
        if (ctx.json) return void emitJson({ ok: true, repository: dir, removed: res.removed, kept: res.kept });
        for (const l of res.removed) info(`Removed the lock of ${termSafe(who(l))}`);
        for (const l of res.kept) info(`Kept the live lock of ${termSafe(who(l))} (remove it with --all if that machine is gone for good)`);
        if (!res.removed.length && !res.kept.length) info(`${termSafe(dir)} holds no lock`);
      }),
    );
}

/** What a repository rotate changed, and exactly what it protects and what it cannot. */
function rotateReport(dir: string, now: string[], r: RotateResult): string[] {
  const out = [`The keys of ${dir} now open with: ${now.join(', ')}`];
  if (r.removed.length) out.push(`No longer with: ${r.removed.map(describeRecipient).join(', ')}`);
  if (r.added.length) out.push(`Added: ${r.added.map(describeRecipient).join(', ')}`);
  if (!r.renewed && !r.finished) {
    if (r.removed.length === 0) return [...out, 'The read key is unchanged (--new-read-key makes a new one for the data written from now on)'];
    return [
      ...out,
      `What removing protects: the keys file in ${dir} no longer opens with what was removed`,
      `What it cannot: the read key is unchanged, so a copy of the keys file made before now still opens every snapshot, old and new; to keep such a copy out of the snapshots written from now on, run: backupctl repo rotate ${dir} --new-read-key`,
    ];
  }
  const older = r.generation === 1 ? 'the earlier one' : `the ${r.generation} earlier ones`;
  return [
    ...out,
    `${r.finished ? 'Finished an interrupted rotation: new' : 'New'} data is sealed to a new read key (generation ${r.generation}); the keys file keeps ${older}, so every snapshot still restores. Other backup machines switch to it at their next backup, and say so`,
    'What this protects: a copy of the keys file made before now (a removed recipient may have one) reads no data stored from now on',
    'What it cannot: that copy still opens every snapshot written before now, and the chunks that newer snapshots share with them (files and parts of the file list that did not change). ' +
      'Its dedup key, kept so that nothing is stored twice, still shows whoever can read the repository the list of snapshots (times, hosts, directories, sizes) and which chunks are equal, and confirms a guessed chunk; ' +
      'whoever can also write to the repository can add or forget snapshots, and mislead a machine that has not backed up since into sealing to a key of their own: take away their access to the storage too',
  ];
}
