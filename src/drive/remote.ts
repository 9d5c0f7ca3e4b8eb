// Where backups live on Drive and how names map to files. By default a visible folder
// "backupctl" in My Drive (scope drive.file: only files this app created are visible to it); with
// --app-data the hidden appDataFolder (scope drive.appdata). Drive allows several files with one
// name in a folder, so everything is addressed by id, and a name means, deterministically, the
// newest copy (latest createdTime, then the greatest id); listings show the others.
import { BackupctlError, Exit } from '../errors.js';
import type { DriveClient } from './client.js';
import { fileResource, listPage, malformed } from './replies.js';
import { FILE_FIELDS, type DriveFileResource } from './upload.js';

export type Space = 'drive' | 'appDataFolder';
export const FOLDER_NAME = 'backupctl';
export const FOLDER_MIME = 'application/vnd.google-apps.folder';
export const ARCHIVE_MIME = 'application/octet-stream';

/** appProperties push sets (key + value within Drive's 124-byte limit). */
export const PROP = { sha256: 'backupctlSha256', md5: 'backupctlMd5', size: 'backupctlSize' } as const;

export interface RemoteFile {
  id: string;
  name: string;
  size: number;
  md5: string | null;
  createdTime: string;
  revisionId: string | null;
  /** SHA-256 the pusher recorded (anyone with write access could change it: a hint, not proof). */
  sha256: string | null;
  /** Drive's md5 and size are what the pusher computed locally: the upload completed intact. */
  verified: boolean;
}

export function toRemote(f: DriveFileResource): RemoteFile {
  const p = f.appProperties ?? {};
  const size = Number(f.size ?? 0);
  return {
    id: f.id!,
    name: f.name ?? '',
    size,
    md5: f.md5Checksum ?? null,
    createdTime: f.createdTime ?? '',
    revisionId: f.headRevisionId ?? null,
    sha256: p[PROP.sha256] ?? null,
    verified: !!f.md5Checksum && p[PROP.md5] === f.md5Checksum && p[PROP.size] === String(size),
  };
}

/** Drive query string literal (search-files guide: escape ' and \ with a backslash). */
export const qstr = (s: string) => `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;

/** Newest first: createdTime descending, then id descending, so ties are still decided. */
export const newestFirst = (a: RemoteFile, b: RemoteFile) =>
  a.createdTime === b.createdTime ? (a.id < b.id ? 1 : a.id > b.id ? -1 : 0) : a.createdTime < b.createdTime ? 1 : -1;

/**
 * A listing ends within this many pages: a backup folder holds at most a few thousand files and
 * pages hold up to 1000, but a server may send short or empty pages, or (broken or hostile) a
 * nextPageToken that never ends. Past the bound, or on a token seen before, the listing fails (7).
 */
export const MAX_LIST_PAGES = 1000;

/** Every page of a files.list query (pages may be short or even empty and still go on). */
export async function listAll(drive: DriveClient, space: Space, q: string): Promise<DriveFileResource[]> {
  const out: DriveFileResource[] = [];
  const seen = new Set<string>();
  let pageToken: string | undefined;
  for (let pages = 1; ; pages++) {
    const page = listPage(
      await drive.call('list', (o) =>
        drive.api.files.list({ q, spaces: space, pageSize: 1000, pageToken, fields: `nextPageToken,files(${FILE_FIELDS})` }, o),
      ),
    );
    out.push(...page.files);
    if (!page.nextPageToken) return out;
    if (seen.has(page.nextPageToken)) throw malformed('list', `page ${pages} sends back to an earlier page`);
    if (pages >= MAX_LIST_PAGES) {
      throw new BackupctlError(Exit.unavailable, `Google Drive's listing did not end after ${MAX_LIST_PAGES} pages (${out.length} files so far): giving up; try again later`);
    }
    seen.add(page.nextPageToken);
    pageToken = page.nextPageToken;
  }
}

/**
 * The folder backups go into. appDataFolder is its own parent. In My Drive: the oldest folder
 * named "backupctl" at the top level that this app created (two racing first pushes could make
 * two; the oldest wins, always the same one), created when `create` and missing.
 */
export async function backupFolder(drive: DriveClient, space: Space, create: boolean): Promise<string | null> {
  if (space === 'appDataFolder') return 'appDataFolder';
  const found = await listAll(drive, 'drive', `name = ${qstr(FOLDER_NAME)} and mimeType = ${qstr(FOLDER_MIME)} and 'root' in parents and trashed = false`);
  const oldest = found.map(toRemote).sort(newestFirst).at(-1);
  if (oldest) return oldest.id;
  if (!create) return null;
  // Not idempotent, but a repeat after a lost reply only makes a second folder that the rule above ignores.
  const f = await drive.call('create folder', (o) =>
    drive.api.files.create({ requestBody: { name: FOLDER_NAME, mimeType: FOLDER_MIME, parents: ['root'] }, fields: 'id' }, o),
  );
  return fileResource(f, 'create folder').id!;
}

/** The backups in the folder, newest first. */
export async function listBackups(drive: DriveClient, space: Space, folder: string): Promise<RemoteFile[]> {
  const files = await listAll(drive, space, `${qstr(folder)} in parents and trashed = false and mimeType != ${qstr(FOLDER_MIME)}`);
  return files.map(toRemote).sort(newestFirst);
}

/** What NAME|ID means: an id wins; a name means its newest copy; `others` are the older same-named ones. */
export function resolve(files: RemoteFile[], nameOrId: string): { file: RemoteFile; others: RemoteFile[] } {
  const byId = files.find((f) => f.id === nameOrId);
  if (byId) return { file: byId, others: [] };
  const same = files.filter((f) => f.name === nameOrId).sort(newestFirst);
  if (!same.length) throw new BackupctlError(Exit.usage, `no backup named ${JSON.stringify(nameOrId)} on Google Drive (see backupctl drive list)`);
  return { file: same[0]!, others: same.slice(1) };
}

/** How many files share each name (listings mark duplicates). */
export function duplicateCounts(files: RemoteFile[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const f of files) m.set(f.name, (m.get(f.name) ?? 0) + 1);
  return m;
}

export interface PrunePlan {
  keep: RemoteFile[];
  remove: RemoteFile[];
}

/**
 * Keep the `keep` newest backups and delete the rest, except that the newest verified copy is
 * always kept even when it is not among them (unverified copies are incomplete or foreign uploads
 * and must not push the last good backup out).
 */
export function planPrune(files: RemoteFile[], keep: number): PrunePlan {
  if (!Number.isInteger(keep) || keep < 1) throw new BackupctlError(Exit.usage, '--keep must be a whole number of at least 1');
  const sorted = [...files].sort(newestFirst);
  const kept = new Set(sorted.slice(0, keep).map((f) => f.id));
  const newestVerified = sorted.find((f) => f.verified);
  if (newestVerified) kept.add(newestVerified.id);
  return { keep: sorted.filter((f) => kept.has(f.id)), remove: sorted.filter((f) => !kept.has(f.id)) };
}

export async function deleteFile(drive: DriveClient, f: RemoteFile): Promise<void> {
  // A repeated delete after a lost reply answers 404: the file is gone either way.
  await drive.call('delete', (o) => drive.api.files.delete({ fileId: f.id }, o), () => undefined);
}

