// Where Drive and Google's OAuth live, and the rule that a bearer token never travels in clear:
// https everywhere, plain http only to a loopback address (the test fake, a local proxy).
// The BACKUPCTL_DRIVE_* variables move the endpoints (for scripts and tests).
import { isIP } from 'node:net';
import { BackupctlError, Exit } from '../errors.js';

const DEFAULTS = {
  BACKUPCTL_DRIVE_ROOT_URL: 'https://www.googleapis.com/',
  BACKUPCTL_DRIVE_TOKEN_URL: 'https://oauth2.googleapis.com/token',
  BACKUPCTL_DRIVE_AUTH_URL: 'https://accounts.google.com/o/oauth2/v2/auth',
} as const;

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));
}

/** Refuse, before any token is sent, a URL that would carry it over plain http to another host. */
export function checkUrl(value: string, what: string): URL {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new BackupctlError(Exit.usage, `${what} is not a URL: ${value}`);
  }
  if (u.protocol === 'https:') return u;
  if (u.protocol === 'http:' && isLoopbackHost(u.hostname)) return u;
  throw new BackupctlError(Exit.usage, `refusing ${what} ${u.origin}: tokens are only sent over https, or over http to a loopback address`);
}

function endpoint(name: keyof typeof DEFAULTS): URL {
  return checkUrl(process.env[name] || DEFAULTS[name], name);
}

export interface DriveEndpoints {
  /** The API root every googleapis call gets as rootUrl (ends with a slash). */
  rootUrl: string;
  tokenUrl: string;
  authUrl: string;
  /** Google's revoke endpoint sits beside its token endpoint (/token -> /revoke). */
  revokeUrl: string;
}

export function driveEndpoints(): DriveEndpoints {
  const root = endpoint('BACKUPCTL_DRIVE_ROOT_URL');
  const token = endpoint('BACKUPCTL_DRIVE_TOKEN_URL');
  return {
    rootUrl: root.href.endsWith('/') ? root.href : `${root.href}/`,
    tokenUrl: token.href,
    authUrl: endpoint('BACKUPCTL_DRIVE_AUTH_URL').href,
    revokeUrl: new URL('revoke', token).href,
  };
}

/** A URL Drive handed back (an upload session) must stay on the API's origin. */
export function checkSameOrigin(url: string, rootUrl: string): void {
  const u = checkUrl(url, 'the upload session URL');
  if (u.origin !== new URL(rootUrl).origin) {
    throw new BackupctlError(Exit.refused, `Drive returned an upload session on ${u.origin}, not on ${new URL(rootUrl).origin}: refusing to send the token there`);
  }
}
