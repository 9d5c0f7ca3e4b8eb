// `backupctl push ARCHIVE [--name NAME] [--app-data]`: upload a checked archive to Google Drive,
// resumably and verified (see src/drive/push.ts).
import type { Command } from 'commander';
import { usageError } from '../../errors.js';
import { action, emitJson, info, warn } from '../run.js';
import { startProgress, type Progress } from '../progress.js';
import { termSafe } from '../../util/terminal-text.js';
import { parseSize } from './create.js';
import { addSpaceOption, fileJson, openDrive, spaceName, spaceOf } from './drive.js';
import { count } from '../../util/plural.js';

interface PushOptions {
  name?: string;
  appData?: boolean;
  chunkSize: string;
}

export function register(program: Command): void {
  addSpaceOption(
    program
      .command('push')
      .description('upload an archive to Google Drive (resumable: run it again after an interruption)')
      .argument('<archive>', 'the archive file')
      .option('--name <name>', 'the name on Drive (default: the file name)')
      .option('--chunk-size <size>', 'upload chunk, a multiple of 256K', '8M'),
  ).action(
    action(async (ctx, archive: string, opts: PushOptions) => {
      const { checkPushable, push } = await import('../../drive/push.js');
      const { CHUNK_UNIT } = await import('../../drive/upload.js');
      const chunkSize = parseSize(opts.chunkSize);
      if (chunkSize < CHUNK_UNIT || chunkSize % CHUNK_UNIT !== 0) throw usageError('--chunk-size must be a multiple of 256K');
      const space = spaceOf(opts);
      await checkPushable({ path: archive, name: opts.name }); // before the login check and any request
      const drive = await openDrive(ctx);
      let progress: Progress | undefined;
      const t0 = Date.now();
      try {
        const r = await push(drive, {
          path: archive,
          name: opts.name,
          space,
          chunkSize,
          beforeUpload: async () => {
            progress = await startProgress('push');
          },
          // Counted from this run's start, so rate and ETA stay right when a push resumes:
          // `total - (acked - sent)` is what this run has to send.
          onProgress: (acked, total, sent) => progress?.update({ bytes: sent, total: total - Math.max(0, acked - sent) }),
          onInfo: (m) => info(m),
        });
        progress?.stop();
        await drive.auth.flush();
        if (r.sameName.length) {
          warn(`${count(r.sameName.length, 'other backup')} named ${termSafe(r.file.name)} already on Drive ${r.sameName.length === 1 ? 'is' : 'are'} kept; the name now means this newest one (see backupctl drive list)`);
        }
        const seconds = (Date.now() - t0) / 1000;
        if (ctx.json) {
          emitJson({ ok: true, space, ...fileJson(r.file), sha256: r.sha256, alreadyPresent: r.alreadyPresent, bytesSent: r.bytesSent, seconds });
        } else if (r.alreadyPresent) {
          info(`Already on Google Drive as ${termSafe(r.file.name)} (${r.file.id}), same content: nothing uploaded.`);
        } else {
          info(`Pushed ${termSafe(r.file.name)} to ${spaceName(space)}: ${(r.file.size / 1e6).toFixed(1)} MB, MD5 checked by Drive, id ${r.file.id} (${seconds.toFixed(1)} s).`);
        }
      } catch (err) {
        progress?.stop();
        if (ctx.signal.aborted) info('Push interrupted: run the same command again to resume where Drive stopped.');
        throw err;
      }
    }),
  );
}
