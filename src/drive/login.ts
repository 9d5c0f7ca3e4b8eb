// OAuth 2.0 for installed apps (developers.google.com/identity/protocols/oauth2/native-app):
// a loopback redirect on 127.0.0.1 with a random port, PKCE S256 (RFC 7636) and a random state
// checked in constant time. google-auth-library builds the URL and exchanges the code; the
// listener is ours. Logout revokes the refresh token at Google and deletes the token file.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { BackupctlError, Exit } from '../errors.js';
import { deleteTokenFile, newOAuthClient, readTokenFile, SCOPE_APPDATA, SCOPE_FILE, writeTokenFile, type OAuthClientInfo } from './auth.js';
import { driveEndpoints } from './endpoints.js';
import { classify, withRetry, type OnRetry } from './retry.js';

const LOGIN_TIMEOUT_MS = 5 * 60_000;

/**
 * Open `url` in the user's browser: BACKUPCTL_BROWSER (a command; the URL is its last argument,
 * no shell), else the desktop's opener. Resolves false when nothing could be started.
 */
export function openBrowser(url: string): Promise<boolean> {
  const custom = process.env.BACKUPCTL_BROWSER?.trim();
  let argv: string[];
  if (custom) argv = [...custom.split(/\s+/), url];
  else if (process.platform === 'darwin') argv = ['open', url];
  else if (process.platform === 'win32') argv = ['rundll32', 'url.dll,FileProtocolHandler', url];
  else if (process.env.DISPLAY || process.env.WAYLAND_DISPLAY) argv = ['xdg-open', url];
  else return Promise.resolve(false);
  return new Promise((resolve) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore', detached: !custom });
    child.once('error', () => resolve(false));
    child.once('spawn', () => {
      if (!custom) child.unref();
      resolve(true);
    });
  });
}

const page = (title: string, text: string) =>
  `<!doctype html><meta charset="utf-8"><title>${title}</title><body style="font-family:sans-serif"><h1>${title}</h1><p>${text}</p></body>`;

/** Wait for the one redirect that carries our state; anything else is answered and ignored. */
function awaitRedirect(server: http.Server, state: string, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new BackupctlError(Exit.unavailable, 'no answer from the browser within 5 minutes: run backupctl drive login again')), LOGIN_TIMEOUT_MS);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    const finish = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    };
    server.on('request', (req, res) => {
      const q = new URL(req.url ?? '/', 'http://127.0.0.1').searchParams;
      const got = Buffer.from(q.get('state') ?? '');
      const want = Buffer.from(state);
      if (got.length !== want.length || !timingSafeEqual(got, want)) {
        res.writeHead(400, { 'Content-Type': 'text/html; charset=utf-8' }).end(page('backupctl', 'This is not the sign-in this backupctl is waiting for.'));
        return;
      }
      const error = q.get('error');
      const code = q.get('code');
      if (error || !code) {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(page('backupctl: not signed in', 'Access was not granted. You can close this tab.'));
        finish();
        reject(new BackupctlError(Exit.refused, `Google sign-in did not grant access (${error ?? 'no code'})`));
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' }).end(page('backupctl: signed in', 'You can close this tab and return to the terminal.'));
      finish();
      resolve(code);
    });
  });
}

export interface LoginResult {
  scopes: string[];
  appDataGranted: boolean;
}

export async function login(client: OAuthClientInfo, signal: AbortSignal, showUrl: (url: string, opened: boolean) => void): Promise<LoginResult> {
  const ep = driveEndpoints();
  const oauth = await newOAuthClient(ep, client);
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  try {
    const redirectUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const { codeVerifier, codeChallenge } = await oauth.generateCodeVerifierAsync();
    const state = randomBytes(32).toString('base64url');
    const url = oauth.generateAuthUrl({
      access_type: 'offline', // a refresh token, so later runs need no browser
      prompt: 'consent',
      scope: [SCOPE_FILE, SCOPE_APPDATA],
      state,
      redirect_uri: redirectUri,
      code_challenge: codeChallenge,
      code_challenge_method: 'S256' as never, // the library's enum type, same string
    });
    const waiting = awaitRedirect(server, state, signal);
    showUrl(url, await openBrowser(url));
    const code = await waiting;
    let tokens;
    try {
      // Not retried: an authorization code is good for one exchange only.
      ({ tokens } = await oauth.getToken({ code, codeVerifier, redirect_uri: redirectUri }));
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      const v = classify(err, 'sign-in');
      throw v.kind === 'fatal' ? v.error : new BackupctlError(Exit.unavailable, 'the sign-in code could not be exchanged (network or Google unavailable): run backupctl drive login again');
    }
    if (!tokens.refresh_token) throw new BackupctlError(Exit.refused, 'Google returned no refresh token: remove backupctl at https://myaccount.google.com/permissions and log in again');
    const scopes = (tokens.scope ?? '').split(/\s+/).filter(Boolean);
    if (!scopes.includes(SCOPE_FILE)) throw new BackupctlError(Exit.refused, 'access to the files backupctl creates (drive.file) was not granted: log in again and allow it');
    await writeTokenFile({ version: 1, ...client, tokens, loggedIn: new Date().toISOString() });
    return { scopes, appDataGranted: scopes.includes(SCOPE_APPDATA) };
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

/** Revoke at Google (best effort: the local tokens go either way). Returns whether Google confirmed. */
export async function logout(signal: AbortSignal, onRetry?: OnRetry): Promise<{ wasLoggedIn: boolean; revoked: boolean; why?: string }> {
  const file = await readTokenFile();
  if (!file) return { wasLoggedIn: false, revoked: false };
  const token = file.tokens.refresh_token ?? file.tokens.access_token;
  let revoked = false;
  let why: string | undefined;
  if (token) {
    const oauth = await newOAuthClient(driveEndpoints(), file);
    try {
      await withRetry('token revocation', () => oauth.revokeToken(token), {
        signal,
        onRetry,
        auth: { refresh: async () => {} },
      });
      revoked = true;
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      why = err instanceof BackupctlError ? err.message : String(err);
    }
  }
  await deleteTokenFile();
  return { wasLoggedIn: true, revoked, why };
}
