// push: a checked archive into the backup folder, resumably, verified against Drive's MD5 and size.
// The same content already there (and intact) is not uploaded again; an interrupted push resumes
// from its persisted session.
import { basename } from 'node:path';
import { readArchiveHeader } from '../archive/header.js';
import { BackupctlError, Exit } from '../errors.js';
import type { DriveClient } from './client.js';
import { digestFile } from './hash.js';
import { recordPush } from './pushed-log.js';
import { ARCHIVE_MIME, PROP, backupFolder, deleteFile, listBackups, toRemote, type RemoteFile, type Space } from './remote.js';
import { SessionStore } from './session-store.js';
import { resumableUpload } from './upload.js';

export interface PushRequest {
  path: string;
  name?: string;
  space: Space;
  chunkSize: number;
  /** Called once hashing and the listing are done and bytes are about to move. */
  beforeUpload?(): Promise<void>;
  onProgress?(acked: number, total: number, sent: number): void;
  onInfo?(message: string): void;
}

export interface PushResult {
  file: RemoteFile;
  sha256: string;
  /** The same content was already on Drive: nothing was uploaded. */
  alreadyPresent: boolean;
  /** Bytes this run sent (a resumed push sends only what Drive lacked). */
  bytesSent: number;
  /** Other files on Drive with the same name (kept; a name means the newest). */
  sameName: RemoteFile[];
}

/**
 * The local checks, which need no login and no network: the file is an archive (6 when it cannot
 * be read, 5 when it is not an archive) and its name can be a Drive name (2). Returns the name.
 */
export async function checkPushable(req: Pick<PushRequest, 'path' | 'name'>): Promise<string> {
  await readArchiveHeader(req.path);
  const name = req.name ?? basename(req.path);
  if (!name || name.includes('/')) throw new BackupctlError(Exit.usage, `bad name ${JSON.stringify(name)} for Drive: give --name`);
  return name;
}

export async function push(drive: DriveClient, req: PushRequest): Promise<PushResult> {
  const name = await checkPushable(req);
  const digest = await digestFile(req.path, drive.signal);
  const folder = (await backupFolder(drive, req.space, true))!;
  const files = await listBackups(drive, req.space, folder);

  const same = files.find((f) => f.verified && f.sha256 === digest.sha256 && f.md5 === digest.md5 && f.size === digest.size);
  if (same) {
    await recordPush({ name: same.name, id: same.id, space: req.space, size: digest.size, md5: digest.md5, sha256: digest.sha256, pushed: new Date().toISOString() });
    return { file: same, sha256: digest.sha256, alreadyPresent: true, bytesSent: 0, sameName: [] };
  }
  const sameName = files.filter((f) => f.name === name);

  const store = new SessionStore(digest);
  const lock = await store.lock();
  await req.beforeUpload?.();
  let sent = 0;
  try {
    const saved = await store.load();
    const session = saved && saved.name === name && saved.space === req.space ? saved.uri : null;
    const uploaded = await resumableUpload(drive, {
      path: req.path,
      digest,
      metadata: {
        name,
        parents: [folder],
        mimeType: ARCHIVE_MIME,
        appProperties: { [PROP.sha256]: digest.sha256, [PROP.md5]: digest.md5, [PROP.size]: String(digest.size) },
      },
      chunkSize: req.chunkSize,
      session,
      saveSession: (uri) => (uri ? store.save({ uri, name, space: req.space, created: new Date().toISOString() }) : store.clear()),
      onProgress: (acked, s) => {
        sent = s;
        req.onProgress?.(acked, digest.size, s);
      },
      onInfo: req.onInfo,
    });
    const file = toRemote(uploaded);
    await store.clear(); // the session is spent either way
    if (file.size !== digest.size || file.md5 !== digest.md5) {
      await deleteFile(drive, file).catch(() => {});
      throw new BackupctlError(
        Exit.corrupt,
        `Drive's copy of ${name} does not match the local file (Drive: ${file.size} bytes, md5 ${file.md5}; local: ${digest.size} bytes, md5 ${digest.md5}): ` +
          'the file changed while uploading or was damaged in transit; the bad copy was deleted, push again',
      );
    }
    await recordPush({ name, id: file.id, space: req.space, size: digest.size, md5: digest.md5, sha256: digest.sha256, pushed: new Date().toISOString() });
    return { file, sha256: digest.sha256, alreadyPresent: false, bytesSent: sent, sameName };
  } finally {
    lock.release();
  }
}
