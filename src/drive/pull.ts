// pull: the newest backup of a name (or one id) from Drive into a file or standard output,
// compared with what this machine pushed under that name.
import { basename } from 'node:path';
import { access } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { BackupctlError, Exit } from '../errors.js';
import { termSafe } from '../util/terminal-text.js';
import { requireOutputDir } from '../util/fsutil.js';
import { acquireLock } from '../util/lock.js';
import type { DriveClient } from './client.js';
import { downloadToFile, downloadToStream, type DownloadResult, type PinnedFile } from './download.js';
import { lastPushOf, readPushedLog } from './pushed-log.js';
import { backupFolder, listBackups, resolve, type RemoteFile, type Space } from './remote.js';

export interface PullRequest {
  nameOrId: string;
  space: Space;
  /** A path; null for standard output; undefined for the name on Drive in the current directory. */
  output: string | null | undefined;
  stdout?: Writable;
  force?: boolean;
  /** The copy on Drive may differ from what this machine pushed (exit 0 with a warning, not 11). */
  allowForeign?: boolean;
  onProgress?(bytes: number, total: number): void;
  onWarning(message: string): void;
}

export interface PullResult extends DownloadResult {
  file: RemoteFile;
  output: string | null;
  /** Older files with the same name that were not pulled. */
  others: RemoteFile[];
  /** The content is not what this machine last pushed under that name. */
  differsFromPushed: boolean;
}

/** Default output: the name on Drive, in the current directory, if it is a plain file name. */
export function defaultOutput(name: string): string {
  if (!name || name !== basename(name) || name === '.' || name === '..' || name.startsWith('-') || termSafe(name) !== name) {
    throw new BackupctlError(Exit.usage, `the name ${JSON.stringify(termSafe(name))} is not a safe local file name: give -o FILE`);
  }
  return name;
}

/**
 * The output file can be written (exit 6 if not): its directory exists (it is never created: an
 * unmounted disk must not turn into a folder on the local one), and it does not exist unless
 * `force`. Checked before the login and any request when -o FILE is given, and again once the
 * name is known.
 */
export async function checkOutput(output: string, force?: boolean): Promise<void> {
  await requireOutputDir(output);
  if (!force && (await access(output).then(() => true, () => false))) {
    throw new BackupctlError(Exit.io, `${output} already exists (use --force to replace it)`);
  }
}

export async function pull(drive: DriveClient, req: PullRequest): Promise<PullResult> {
  const folder = await backupFolder(drive, req.space, false);
  if (!folder) throw new BackupctlError(Exit.usage, 'there are no backups on Google Drive yet (no backupctl folder)');
  const { file, others } = resolve(await listBackups(drive, req.space, folder), req.nameOrId);
  if (others.length) {
    req.onWarning(`${others.length + 1} files on Drive are named ${termSafe(file.name)}: pulling the newest (id ${file.id}, created ${termSafe(file.createdTime)}); pass an id to choose another (backupctl drive list)`);
  }
  if (!file.md5 || !file.revisionId) throw new BackupctlError(Exit.corrupt, `${termSafe(file.name)} on Drive has no content checksum: it is not a backupctl upload`);
  const pinned: PinnedFile = { id: file.id, name: file.name, revisionId: file.revisionId, size: file.size, md5: file.md5 };
  const output = req.output === undefined ? defaultOutput(file.name) : req.output;
  // One run at a time writes OUTPUT and OUTPUT.part (a second pull into it would write the same
  // .part): taken before the check, so a file another run finished meanwhile counts as existing.
  const lock = output ? await acquireLock(output, output) : null;
  try {
    if (output) await checkOutput(output, req.force);
    return await download(drive, req, pinned, file, others, output);
  } finally {
    lock?.release();
  }
}

/** Download `pinned` (the newest `file`) to `output` or standard output, and compare it with what was pushed. */
async function download(drive: DriveClient, req: PullRequest, pinned: PinnedFile, file: RemoteFile, others: RemoteFile[], output: string | null): Promise<PullResult> {
  const pushed = lastPushOf(await readPushedLog(), file.name, file.id, req.space);
  const before = pushed && (pushed.md5 !== file.md5 || pushed.size !== file.size)
    ? `${termSafe(file.name)} was pushed on ${pushed.pushed} with ${pushed.size} bytes, md5 ${pushed.md5}; Drive now has ${file.size} bytes, md5 ${file.md5}`
    : null;
  // Known before the download: a reader of standard output (| restore -) gets nothing at all.
  if (before && output === null && !req.allowForeign) throw foreign(before, file, null, null);

  const progress = (b: number) => req.onProgress?.(b, file.size);
  const result = output ? await downloadToFile(drive, pinned, output, !!req.force, progress) : await downloadToStream(drive, pinned, req.stdout ?? process.stdout, progress);

  const why =
    before ??
    (pushed && pushed.sha256 !== result.sha256 ? `its SHA-256 is ${result.sha256}, this machine pushed ${pushed.sha256}` : null) ??
    (file.sha256 && file.sha256 !== result.sha256 ? `its SHA-256 is ${result.sha256} but the upload recorded ${file.sha256}` : null);
  if (why && !req.allowForeign) throw foreign(why, file, output, result.sha256);
  if (why) {
    req.onWarning(
      `THE BACKUP ON DRIVE IS NOT WHAT THIS MACHINE PUSHED: ${why}. Someone with access to your Drive (or to this app) may have replaced it; ` +
        'an archive that decrypts proves nothing, since anyone with your public recipients can make one. Inspect it before trusting it.',
    );
  }
  return { ...result, file, output, others, differsFromPushed: !!why };
}

/**
 * Exit 11: the copy on Drive is not what this machine pushed. A file output is still written
 * completely (the bytes are what Drive holds, checked against its MD5) so that it can be inspected.
 */
function foreign(why: string, file: RemoteFile, output: string | null, sha256: string | null): BackupctlError {
  const where = output ? `it was written to ${output} for inspection` : sha256 ? 'its bytes went to standard output before the check' : 'nothing was written to standard output';
  return new BackupctlError(
    Exit.foreign,
    `the backup on Drive is not what this machine pushed: ${why}; ${where}. An archive that decrypts proves nothing (anyone with your public recipients can make one); if this copy is expected, pull again with --allow-foreign`,
    { id: file.id, name: file.name, output, sha256 },
  );
}
