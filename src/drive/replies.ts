// Drive's JSON replies are checked for the shape backupctl relies on before anything uses them: a
// broken proxy or a hostile server (the API root is configurable) must end in one clear line and
// exit 7, not in a TypeError ("internal error") or an endless loop. googleapis types say what
// Drive promises; nothing checks that the bytes keep the promise.
import { BackupctlError, Exit } from '../errors.js';
import { termSafe } from '../util/terminal-text.js';
import type { DriveFileResource } from './upload.js';

/** A reply that is not what Drive documents (exit 7: the remote is not usable right now). */
export const malformed = (what: string, why: string) =>
  new BackupctlError(Exit.unavailable, `Google Drive's reply to the ${what} request is malformed (${why}): not retried; try again later`);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const optString = (v: unknown) => v === undefined || v === null || typeof v === 'string';

/** Drive file ids are base64url-like; anything else is not used in a URL or a message. */
const ID = /^[A-Za-z0-9_-]{1,256}$/;

/** One file resource, as files.list / files.create / an upload's final reply hold it. */
export function fileResource(v: unknown, what: string): DriveFileResource {
  if (!isObject(v)) return bad(what, `a file entry is ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  if (typeof v.id !== 'string' || !ID.test(v.id)) return bad(what, `a file id is ${typeof v.id === 'string' ? JSON.stringify(termSafe(v.id.slice(0, 40))) : 'missing'}`);
  for (const k of ['name', 'md5Checksum', 'createdTime', 'modifiedTime', 'headRevisionId'] as const) {
    if (!optString(v[k])) return bad(what, `${k} of ${v.id} is not a string`);
  }
  if (v.size !== undefined && v.size !== null && !(typeof v.size === 'string' && /^\d{1,15}$/.test(v.size))) return bad(what, `size of ${v.id} is not a byte count`);
  if (typeof v.md5Checksum === 'string' && !/^[0-9a-f]{32}$/.test(v.md5Checksum)) return bad(what, `md5Checksum of ${v.id} is not an MD5`);
  if (v.appProperties !== undefined && v.appProperties !== null && !(isObject(v.appProperties) && Object.values(v.appProperties).every((x) => typeof x === 'string'))) {
    return bad(what, `appProperties of ${v.id} are not strings`);
  }
  if (v.parents !== undefined && v.parents !== null && !(Array.isArray(v.parents) && v.parents.every((x) => typeof x === 'string'))) return bad(what, `parents of ${v.id} are not ids`);
  return v as DriveFileResource;
}

/** One files.list page: `files` an array of file resources, `nextPageToken` absent or a non-empty string. */
export function listPage(v: unknown): { files: DriveFileResource[]; nextPageToken: string | null } {
  if (!isObject(v)) return bad('list', 'not a JSON object');
  if (v.files !== undefined && !Array.isArray(v.files)) return bad('list', '"files" is not an array');
  const token = v.nextPageToken;
  if (token !== undefined && token !== null && (typeof token !== 'string' || token === '')) return bad('list', 'nextPageToken is not a string');
  return { files: ((v.files as unknown[] | undefined) ?? []).map((f) => fileResource(f, 'list')), nextPageToken: (token as string | undefined) ?? null };
}

/** about.get's user: display name and address are strings when present. */
export function aboutUser(v: unknown): { displayName: string | null; emailAddress: string | null } {
  const user = isObject(v) ? v.user : undefined;
  if (user !== undefined && !isObject(user)) return bad('about', '"user" is not an object');
  if (user && (!optString(user.displayName) || !optString(user.emailAddress))) return bad('about', 'the user name or address is not a string');
  return { displayName: (user?.displayName as string | undefined) ?? null, emailAddress: (user?.emailAddress as string | undefined) ?? null };
}

function bad(what: string, why: string): never {
  throw malformed(what, why);
}
