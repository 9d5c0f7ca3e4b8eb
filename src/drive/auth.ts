// Who we are to Google: the user's own OAuth client and the tokens `drive login` obtained, kept in
// 0600 files under the config directory, or a bare access token from BACKUPCTL_DRIVE_ACCESS_TOKEN.
// google-auth-library refreshes an expiring access token by itself; each refresh is merged into
// the token file (Google's refresh replies omit refresh_token). A 401 from Drive forces one
// refresh (retry.ts); only a failed refresh is fatal.
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Credentials, OAuth2Client } from 'google-auth-library';
import { configDir, ensureConfigDir } from '../config.js';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { writeFileAtomic } from '../util/fsutil.js';
import { driveEndpoints, type DriveEndpoints } from './endpoints.js';
import { withRetry, type OnRetry, type Reauthenticator } from './retry.js';

export const SCOPE_FILE = 'https://www.googleapis.com/auth/drive.file';
export const SCOPE_APPDATA = 'https://www.googleapis.com/auth/drive.appdata';

export interface OAuthClientInfo {
  clientId: string;
  clientSecret: string;
}

export interface TokenFile extends OAuthClientInfo {
  version: 1;
  tokens: Credentials;
  loggedIn: string;
}

export const tokenPath = () => join(configDir(), 'drive-token.json');
export const clientPath = () => join(configDir(), 'drive-client.json');

async function readJson<T>(path: string): Promise<T | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError(err, path, 'read');
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new BackupctlError(Exit.io, `cannot parse ${path}: delete it and run backupctl drive login`);
  }
}

export const readTokenFile = () => readJson<TokenFile>(tokenPath());
/** A 0600 JSON file in the config directory (created, once trusted, if missing). */
async function writePrivate(path: string, value: unknown): Promise<void> {
  await ensureConfigDir();
  await writeFileAtomic(path, JSON.stringify(value, null, 2) + '\n', 0o600);
}

export const writeTokenFile = (t: TokenFile) => writePrivate(tokenPath(), t);
export const deleteTokenFile = () =>
  unlink(tokenPath()).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw ioError(err, tokenPath(), 'delete');
  });

/** The OAuth client a Google Cloud console download describes ({"installed": {...}}). */
export async function readClientSecretFile(path: string): Promise<OAuthClientInfo> {
  const j = await readJson<{ installed?: { client_id?: string; client_secret?: string }; web?: unknown }>(path);
  if (!j) throw new BackupctlError(Exit.io, `cannot read ${path}: no such file`);
  const c = j.installed;
  if (!c?.client_id || !c.client_secret) {
    throw new BackupctlError(Exit.usage, `${path} is not an OAuth client for a desktop app (expected {"installed": {"client_id", "client_secret"}}; create one of type "Desktop app" in the Google Cloud console)`);
  }
  return { clientId: c.client_id, clientSecret: c.client_secret };
}

export const readSavedClient = () => readJson<OAuthClientInfo>(clientPath());
export const saveClient = (c: OAuthClientInfo) => writePrivate(clientPath(), c);

/** An OAuth2Client on the configured endpoints with gaxios' own retries off (retry.ts decides). */
export async function newOAuthClient(ep: DriveEndpoints, client?: OAuthClientInfo): Promise<OAuth2Client> {
  const { OAuth2Client } = await import('google-auth-library');
  const c = new OAuth2Client({
    clientId: client?.clientId,
    clientSecret: client?.clientSecret,
    endpoints: { oauth2TokenUrl: ep.tokenUrl, oauth2AuthBaseUrl: ep.authUrl, oauth2RevokeUrl: ep.revokeUrl },
  });
  // Token requests come with their own retry config: switch it off for every request this client sends.
  c.transporter.interceptors.request.add({
    resolved: async (opts) => {
      opts.retry = false;
      return opts;
    },
  });
  return c;
}

export interface DriveAuth extends Reauthenticator {
  client: OAuth2Client;
  endpoints: DriveEndpoints;
  source: 'env' | 'login';
  /** Waits for token-file writes that refreshes started. */
  flush(): Promise<void>;
}

export async function openAuth(signal: AbortSignal, onRetry?: OnRetry): Promise<DriveAuth> {
  const endpoints = driveEndpoints();
  const envToken = process.env.BACKUPCTL_DRIVE_ACCESS_TOKEN;
  if (envToken) {
    const client = await newOAuthClient(endpoints);
    client.setCredentials({ access_token: envToken });
    return {
      client,
      endpoints,
      source: 'env',
      flush: async () => {},
      refresh: async () => {
        throw new BackupctlError(Exit.refused, 'Google Drive refused BACKUPCTL_DRIVE_ACCESS_TOKEN (expired or revoked): set a fresh token');
      },
    };
  }
  const file = await readTokenFile();
  if (!file?.tokens?.refresh_token && !file?.tokens?.access_token) {
    throw new BackupctlError(Exit.refused, 'not logged in to Google Drive: run backupctl drive login');
  }
  const client = await newOAuthClient(endpoints, file);
  client.setCredentials(file.tokens);
  let saving: Promise<void> = Promise.resolve();
  client.on('tokens', (t: Credentials) => {
    // Merge: a refresh reply carries a new access token and expiry, usually not the refresh token.
    file.tokens = { ...file.tokens, ...t };
    saving = saving.then(() => writeTokenFile(file));
  });
  return {
    client,
    endpoints,
    source: 'login',
    flush: () => saving,
    refresh: async () => {
      if (!file.tokens.refresh_token) throw new BackupctlError(Exit.refused, 'the Google Drive access token expired and there is no refresh token: run backupctl drive login');
      await withRetry('token refresh', () => client.refreshAccessToken(), {
        signal,
        onRetry,
        auth: { refresh: async () => { throw new BackupctlError(Exit.refused, 'Google Drive access has expired or was revoked: run backupctl drive login'); } },
      });
      await saving;
    },
  };
}
