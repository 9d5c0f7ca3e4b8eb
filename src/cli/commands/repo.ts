// `backupctl repo init REPO` and `backupctl repo unlock REPO`: set up a snapshot repository
// (backupctl-repository(5)), and let this machine back up into one made elsewhere.
import type { Command } from 'commander';
import { openStore } from '../../repo/repository.js';
import { adoptRepository, createRepository, resealRepository } from '../../ops/repository.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info } from '../run.js';
import { addRecipientOptions, describeRecipient, resolveRecipients, type RecipientOptions } from '../recipients.js';
import { addUnlockOptions, unlock, type UnlockOptions } from '../unlock.js';

export function register(program: Command): void {
  const repo = program.command('repo').description('snapshot repositories: deduplicated, encrypted nightly backups (backupctl-repository(5))');
  addRecipientOptions(
    repo
      .command('init')
      .description('create a repository in REPO (a directory); needs no secret: its keys are sealed to the recipients')
      .argument('<repo>', 'the repository directory (created; must not be a repository already)'),
  ).action(
    action(async (ctx, dir: string, opts: RecipientOptions) => {
      const recipients = await resolveRecipients(opts);
      const id = await createRepository(openStore(dir), recipients);
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
      const id = await adoptRepository(openStore(dir), (h) => unlock(h, opts, ctx.signal));
      if (ctx.json) emitJson({ ok: true, repository: dir, id });
      else info(`This machine can now back up into ${termSafe(dir)} (id ${id}) without a secret`);
    }),
  );
  addUnlockOptions(
    addRecipientOptions(
      repo
        .command('rotate')
        .description("seal REPO's keys to the recipients now in the config (and --recipients-file): add or remove who can open it")
        .argument('<repo>', 'the repository directory'),
    ),
  ).action(
    action(async (ctx, dir: string, opts: RecipientOptions & UnlockOptions) => {
      const recipients = await resolveRecipients(opts);
      await resealRepository(openStore(dir), (h) => unlock(h, opts, ctx.signal), recipients);
      if (ctx.json) emitJson({ ok: true, repository: dir, recipients: recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: r.fingerprint })) });
      else {
        info(`The keys of ${termSafe(dir)} now open with: ${recipients.map(describeRecipient).map(termSafe).join(', ')}`);
        info('A recipient removed now cannot open them from here on; one who kept a copy of the old keys file can still read every snapshot, old and new (the keys themselves are unchanged)');
      }
    }),
  );
}
