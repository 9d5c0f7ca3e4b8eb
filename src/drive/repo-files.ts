// The Drive calls of a repository on Drive (backupctl-repository(5) "ON GOOGLE DRIVE"): its folder
// NAME inside the backup folder, files tagged with appProperties (which repository, which path,
// which kind), so that one query lists every small file of a repository across its folders and
// another every pack, without one call per folder. Uploads of small files are multipart (one
// call); a retried create may leave two files with one path, which the store resolves.
import { randomBytes } from 'node:crypto';
import { BackupctlError, Exit } from '../errors.js';
import type { DriveClient } from './client.js';
import { fileResource } from './replies.js';
import { FOLDER_MIME, backupFolder, listAll, qstr, type Space } from './remote.js';
import { FILE_FIELDS, type DriveFileResource } from './upload.js';

/** appProperties every repository file and folder carries (key + value within 124 bytes). */
export const RPROP = { repo: 'backupctlRepo', path: 'backupctlPath', kind: 'backupctlKind' } as const;
/** The repository's own folder is marked so that `drive list` tells it from an archive. */
export const REPO_FOLDER_PROP = 'backupctlRepository';

/** 'meta': folders and small files (marker, keys, index, snapshots, locks); 'pack': data/. */
export type RepoKind = 'meta' | 'pack';

export interface RepoFile {
  id: string;
  /** The repository path (e.g. "index/3f9a..."), from appProperties, not from the Drive name. */
  path: string;
  size: number;
  md5: string | null;
  createdTime: string;
  modifiedTime: string;
  revisionId: string | null;
}

/** A folder's path ends with '/' ("index/", "data/3/"). */
export const isFolderPath = (path: string) => path.endsWith('/');

const toRepoFile = (f: DriveFileResource): RepoFile | null => {
  const path = f.appProperties?.[RPROP.path];
  if (path === undefined) return null;
  return { id: f.id!, path, size: Number(f.size ?? 0), md5: f.md5Checksum ?? null, createdTime: f.createdTime ?? '', modifiedTime: f.modifiedTime ?? f.createdTime ?? '', revisionId: f.headRevisionId ?? null };
};

/** The repository folder NAME in the backup folder (the oldest, should a race have made two). */
export async function findRepoFolder(drive: DriveClient, space: Space, name: string): Promise<string | null> {
  const parent = await backupFolder(drive, space, false);
  if (!parent) return null;
  const q = `name = ${qstr(name)} and mimeType = ${qstr(FOLDER_MIME)} and ${qstr(parent)} in parents and trashed = false and appProperties has { key='${REPO_FOLDER_PROP}' and value='1' }`;
  const found = (await listAll(drive, space, q)).sort((a, b) => (a.createdTime ?? '').localeCompare(b.createdTime ?? '') || (a.id! < b.id! ? -1 : 1));
  return found[0]?.id ?? null;
}

/** Every repository folder in the backup folder, by name (for `drive list`). */
export async function listRepoFolders(drive: DriveClient, space: Space, parent: string): Promise<DriveFileResource[]> {
  const q = `${qstr(parent)} in parents and mimeType = ${qstr(FOLDER_MIME)} and trashed = false and appProperties has { key='${REPO_FOLDER_PROP}' and value='1' }`;
  return listAll(drive, space, q);
}

export async function createRepoFolder(drive: DriveClient, space: Space, name: string): Promise<string> {
  const parent = (await backupFolder(drive, space, true))!;
  return createFolder(drive, parent, name, { [REPO_FOLDER_PROP]: '1' });
}

/** A folder (not idempotent: a repeat after a lost reply makes a second one, which is harmless). */
export async function createFolder(drive: DriveClient, parent: string, name: string, props: Record<string, string>): Promise<string> {
  const f = await drive.call('create folder', (o) =>
    drive.api.files.create({ requestBody: { name, mimeType: FOLDER_MIME, parents: [parent], appProperties: props }, fields: FILE_FIELDS }, o),
  );
  return fileResource(f, 'create folder').id!;
}

/** Every file of `kind` in repository `root`, with duplicates (one query, 1000 a page). */
export async function listRepo(drive: DriveClient, space: Space, root: string, kind: RepoKind): Promise<RepoFile[]> {
  const q = `appProperties has { key='${RPROP.repo}' and value=${qstr(root)} } and appProperties has { key='${RPROP.kind}' and value='${kind}' } and trashed = false`;
  return (await listAll(drive, space, q)).map(toRepoFile).filter((f): f is RepoFile => f !== null);
}

/** The copies of one repository path (a lookup that does not rely on a listing taken earlier). */
export async function findRepoPath(drive: DriveClient, space: Space, root: string, path: string): Promise<RepoFile[]> {
  const q = `appProperties has { key='${RPROP.repo}' and value=${qstr(root)} } and appProperties has { key='${RPROP.path}' and value=${qstr(path)} } and trashed = false`;
  return (await listAll(drive, space, q)).map(toRepoFile).filter((f): f is RepoFile => f !== null);
}

/**
 * Create a file (or, with `fileId`, a new revision of one) in one multipart request: Drive makes
 * it appear whole or not at all. Retried like any call: a lost reply can leave a duplicate.
 * null: a 404 (the file, or the folder it was to go into, is gone).
 */
export async function uploadSmall(
  drive: DriveClient,
  req: { fileId?: string; parent: string; name: string; props: Record<string, string>; data: Buffer },
): Promise<RepoFile | null> {
  const boundary = `backupctl${randomBytes(16).toString('hex')}`;
  const meta = req.fileId ? { name: req.name, appProperties: req.props } : { name: req.name, parents: [req.parent], mimeType: 'application/octet-stream', appProperties: req.props };
  const body = Buffer.concat([
    Buffer.from(`--${boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n${JSON.stringify(meta)}\r\n--${boundary}\r\nContent-Type: application/octet-stream\r\n\r\n`),
    req.data,
    Buffer.from(`\r\n--${boundary}--\r\n`),
  ]);
  const url = `upload/drive/v3/files${req.fileId ? `/${encodeURIComponent(req.fileId)}` : ''}?uploadType=multipart&fields=${encodeURIComponent(FILE_FIELDS)}`;
  const res = await drive.call(
    'upload',
    () => drive.raw(url, { method: req.fileId ? 'PATCH' : 'POST', headers: { 'Content-Type': `multipart/related; boundary=${boundary}` }, data: body, timeout: 120_000 }),
    () => null,
  );
  if (res === null) return null;
  const f = toRepoFile(fileResource(res, 'upload'));
  if (!f) throw new BackupctlError(Exit.unavailable, `Drive's reply to the upload of ${req.name} lacks its appProperties`);
  return f;
}

/** Delete permanently (not to the trash: backupctl-repository(5) says why); gone already is fine. */
export async function deleteRepoFile(drive: DriveClient, id: string): Promise<void> {
  await drive.call('delete', (o) => drive.api.files.delete({ fileId: id }, o), () => undefined);
}
