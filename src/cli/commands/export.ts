// `backupctl export --repo REPO SNAPSHOT -o FILE`: a repository snapshot as a single-file archive.
import type { Command } from 'commander';
import { openSink } from '../../archive/output.js';
import { acquireLock } from '../../util/lock.js';
import { RepoReader } from '../../repo/reader.js';
import { listSnapshots, pickSnapshot } from '../../repo/snapshot.js';
import { exportSnapshot } from '../../ops/export-snapshot.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info } from '../run.js';
import { addRecipientOptions, describeRecipient, resolveRecipients, type RecipientOptions } from '../recipients.js';
import { addUnlockOptions, type UnlockOptions } from '../unlock.js';
import { withRepositoryKeys } from '../repo-open.js';

export function register(program: Command): void {
  addUnlockOptions(
    addRecipientOptions(
      program
        .command('export')
        .description('write a snapshot of a repository as a single-file archive (unlocks the repository)')
        .argument('<snapshot>', "the snapshot: an id, a prefix of one, or 'latest'")
        .requiredOption('--repo <repo>', 'the repository')
        .requiredOption('-o, --output <file>', 'the archive to write')
        .option('--force', 'replace FILE if it exists (atomically, once the new archive is complete)'),
    ),
  ).action(
    action(async (ctx, which: string, opts: UnlockOptions & RecipientOptions & { repo: string; output: string; force?: boolean }) => {
      const recipients = await resolveRecipients(opts);
      await withRepositoryKeys(ctx, opts, async (store, keys) => {
        const reader = await RepoReader.open(store, keys);
        const snapshot = pickSnapshot(await listSnapshots(store, reader.dedup), which);
        const lock = await acquireLock(opts.output, opts.output);
        let res;
        try {
          res = await exportSnapshot({ reader, snapshot, recipients, sink: await openSink(opts.output, { force: opts.force }), signal: ctx.signal });
        } finally {
          lock.release();
        }
        if (ctx.json) emitJson({ ok: true, snapshot: snapshot.id, archive: opts.output, entries: res.entries, files: res.files, bytesIn: res.bytesIn, archiveSize: res.archiveSize });
        else {
          info(`Wrote ${termSafe(opts.output)}: snapshot ${snapshot.id}, ${res.entries} entries (${res.files} files), ${(res.archiveSize / 1e6).toFixed(1)} MB archive`);
          info(`Encrypted to ${recipients.map(describeRecipient).map(termSafe).join(', ')}`);
        }
      });
    }),
  );
}
