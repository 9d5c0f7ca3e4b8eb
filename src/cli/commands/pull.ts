// `backupctl pull NAME|ID [-o FILE]`: download a backup from Google Drive, checked (size, MD5,
// archive header) and compared with what this machine pushed (see src/drive/pull.ts).
import type { Command } from 'commander';
import { usageError } from '../../errors.js';
import { action, emitJson, info, warn } from '../run.js';
import { startProgress } from '../progress.js';
import { termSafe } from '../../util/terminal-text.js';
import { addSpaceOption, fileJson, openDrive, spaceOf } from './drive.js';

interface PullOptions {
  output?: string;
  force?: boolean;
  allowForeign?: boolean;
  appData?: boolean;
}

export function register(program: Command): void {
  addSpaceOption(
    program
      .command('pull')
      .description('download a backup from Google Drive (a duplicated name means the newest copy)')
      .argument('<name-or-id>', 'the name on Drive or the file id (backupctl drive list)')
      .option('-o, --output <file>', "where to write it ('-' = standard output; default: the name, in the current directory)")
      .option('--force', 'replace FILE if it exists (once the download is complete and checked)')
      .option('--allow-foreign', 'a copy that differs from what this machine pushed is expected: warn and exit 0 instead of exit 11'),
  ).action(
    action(async (ctx, nameOrId: string, opts: PullOptions) => {
      const { checkOutput, pull } = await import('../../drive/pull.js');
      const toStdout = opts.output === '-';
      if (toStdout && ctx.json) throw usageError('--json and -o - both want standard output: give -o FILE');
      if (toStdout && process.stdout.isTTY) throw usageError('refusing to write an archive to a terminal: redirect it or give -o FILE');
      if (opts.output !== undefined && !toStdout) await checkOutput(opts.output, opts.force); // before the login and any request
      const drive = await openDrive(ctx);
      const progress = await startProgress('pull');
      try {
        const r = await pull(drive, {
          nameOrId,
          space: spaceOf(opts),
          output: toStdout ? null : opts.output,
          force: opts.force,
          allowForeign: opts.allowForeign,
          onProgress: (bytes, total) => progress.update({ bytes, total }),
          onWarning: (m) => {
            progress.stop();
            warn(m);
          },
        });
        progress.stop();
        await drive.auth.flush();
        if (ctx.json) emitJson({ ok: true, output: r.output, ...fileJson(r.file), sha256: r.sha256, differsFromPushed: r.differsFromPushed, olderSameName: r.others.map((f) => f.id) });
        else info(`Pulled ${termSafe(r.file.name)} (${r.file.id}) to ${r.output ?? 'standard output'}: ${(r.size / 1e6).toFixed(1)} MB, MD5 matches Drive.`);
      } catch (err) {
        progress.stop();
        if (ctx.signal.aborted && !toStdout) info('Pull interrupted: the partial download is kept as FILE.part; run the same command again to resume.');
        throw err;
      }
    }),
  );
}
