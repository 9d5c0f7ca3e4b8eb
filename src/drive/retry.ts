// The one retry policy for every Drive and OAuth request (gaxios' own retries are off
// everywhere). Drive's guidance (developers.google.com/drive/api/guides/limits,
// .../handle-errors): exponential backoff with jitter for 5xx, 429 and the 403 rate-limit
// reasons, honouring Retry-After; everything else is fatal and explained. A 401 means the access
// token expired: refresh once and go on. A 404 is left to the caller (an expired upload session
// restarts; a missing file is the user's problem).
import { BackupctlError, Exit } from '../errors.js';
import { termSafe } from '../util/terminal-text.js';

/** Told before each retry wait: why, how long, and which attempt comes next (of MAX_ATTEMPTS). */
export type OnRetry = (why: string, delayMs: number, attempt: number) => void;

export type Verdict =
  | { kind: 'retry'; why: string; retryAfterMs?: number }
  | { kind: 'reauth' }
  | { kind: 'notFound' }
  | { kind: 'fatal'; error: BackupctlError };

/** Retried with backoff: per-user and per-project rate limits (403/429). */
const RATE_LIMIT_REASONS = new Set(['rateLimitExceeded', 'userRateLimitExceeded', 'sharingRateLimitExceeded']);

/** Fatal 403 reasons, each with what the user can do. */
const REFUSALS: Record<string, string> = {
  storageQuotaExceeded: 'your Google Drive storage is full: free space or buy more, then push again',
  quotaExceeded: 'a Google Drive quota is exhausted: try again tomorrow or ask your administrator',
  dailyLimitExceeded: 'the daily Google Drive limit is reached (750 GB of uploads per user per day): try again after 24 hours',
  uploadLimitExceeded: 'the daily Google Drive upload cap is reached (750 GB per user per day): try again after 24 hours',
  dailyLimitExceededUnreg: 'the daily Google Drive limit for unregistered use is reached: use your own OAuth client (backupctl drive login)',
  insufficientPermissions: 'this login lacks the needed Drive scope: run backupctl drive login again',
  insufficientFilePermissions: 'no permission for this Drive file',
  appNotAuthorizedToFile: 'backupctl may only touch files it created (drive.file scope)',
  domainPolicy: 'your Google Workspace administrator does not allow this app',
  forbidden: 'Google Drive refused the request (permission)',
};

const NETWORK_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN',
  'EAI_AGAIN', 'ENOTFOUND', 'TimeoutError', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET', 'ERR_SOCKET_TIMEOUT',
]);

interface HttpishError {
  status?: number;
  code?: string | number;
  message?: string;
  type?: string;
  cause?: unknown;
  error?: unknown;
  response?: { status?: number; data?: unknown; headers?: { get?(name: string): string | null } };
}

/** Server text for a message: strings only, made inert for a terminal, and not endless. */
const serverText = (v: unknown): string | undefined => (typeof v === 'string' && v ? termSafe(v.length > 300 ? `${v.slice(0, 300)}…` : v) : undefined);

/**
 * Drive's error body: `{error: {code, message, errors: [{reason}]}}`; OAuth's: `{error, error_description}`.
 * What the server says is untrusted: any shape, any characters.
 */
function errorBody(e: HttpishError): { reason?: string; message?: string; oauthError?: string } {
  // For responseType 'stream' gaxios drops the error body from `response.data` but keeps its text
  // as the error message.
  let data = e.response?.data ?? (e.message?.startsWith('{') ? e.message : undefined);
  if (typeof data === 'string') {
    try {
      data = JSON.parse(data);
    } catch {
      return {};
    }
  }
  const err = (data as { error?: unknown; error_description?: string } | undefined)?.error;
  if (typeof err === 'string') return { oauthError: serverText(err), message: serverText((data as { error_description?: unknown }).error_description) };
  const d = err as { message?: unknown; errors?: Array<{ reason?: unknown; message?: unknown }> } | undefined;
  const first = Array.isArray(d?.errors) ? d.errors[0] : undefined;
  return { reason: serverText(first?.reason), message: serverText(first?.message) ?? serverText(d?.message) };
}

/** Retry-After is seconds or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(v: string | null | undefined, now = Date.now()): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

function isNetworkError(e: HttpishError): boolean {
  for (let x: HttpishError | undefined = e; x; x = (x.cause ?? x.error) as HttpishError | undefined) {
    if (typeof x.code === 'string' && NETWORK_CODES.has(x.code)) return true;
    if (x.type === 'system' || x.type === 'request-timeout' || x.type === 'body-timeout') return true;
    if (x === x.cause) break;
  }
  return /socket hang up|premature close|network|terminated|aborted due to timeout|other side closed/i.test(e.message ?? '');
}

/** Decide what to do about a failed request. `what` names it for messages ("upload", "list"). */
export function classify(err: unknown, what: string): Verdict {
  if (err instanceof BackupctlError) return { kind: 'fatal', error: err };
  const e = (err ?? {}) as HttpishError;
  const status = e.response?.status ?? (typeof e.status === 'number' ? e.status : undefined);
  if (status === undefined) {
    if (isNetworkError(e)) return { kind: 'retry', why: `network error during ${what} (${e.code ?? e.message})` };
    return { kind: 'fatal', error: new BackupctlError(Exit.internal, `${what} failed: ${e.message ?? String(err)}`) };
  }
  const { reason, message, oauthError } = errorBody(e);
  const retryAfterMs = parseRetryAfter(e.response?.headers?.get?.('retry-after'));
  if (oauthError) {
    if (status >= 500) return { kind: 'retry', why: `Google's token endpoint answered ${status}` };
    if (oauthError === 'invalid_grant')
      return { kind: 'fatal', error: new BackupctlError(Exit.refused, 'Google Drive access has expired or was revoked: run backupctl drive login') };
    if (oauthError === 'invalid_client')
      return { kind: 'fatal', error: new BackupctlError(Exit.refused, 'Google no longer accepts the OAuth client this login used (deleted or its secret changed): run backupctl drive login --client-secret-file FILE') };
    return { kind: 'fatal', error: new BackupctlError(Exit.refused, `Google refused the token request: ${oauthError}${message ? ` (${message})` : ''}`) };
  }
  if (status >= 500 || status === 408) return { kind: 'retry', why: `Drive answered ${status} during ${what}`, retryAfterMs };
  if (status === 429) return { kind: 'retry', why: `Drive rate limit (429) during ${what}`, retryAfterMs };
  if (status === 401) return { kind: 'reauth' };
  if (status === 404) return { kind: 'notFound' };
  if (status === 403 && reason && RATE_LIMIT_REASONS.has(reason)) return { kind: 'retry', why: `Drive rate limit (${reason}) during ${what}`, retryAfterMs };
  if (status === 403) {
    const advice = (reason && REFUSALS[reason]) ?? `Google Drive refused the ${what}${reason ? ` (${reason})` : ''}${message ? `: ${message}` : ''}`;
    return { kind: 'fatal', error: new BackupctlError(Exit.refused, advice, reason ? { reason } : undefined) };
  }
  return {
    kind: 'fatal',
    error: new BackupctlError(Exit.refused, `Google Drive rejected the ${what} (${status}${reason ? ` ${reason}` : ''})${message ? `: ${message}` : ''}`),
  };
}

/** `ms`, unless the environment variable `name` gives another number of milliseconds (for tests only). */
export function testableMs(name: string, ms: number): number {
  const raw = process.env[name]?.trim();
  const v = Number(raw);
  return raw && Number.isFinite(v) && v >= 0 ? v : ms;
}

/** Base delay: 1 s as Drive recommends; BACKUPCTL_RETRY_BASE_MS shortens it. */
const baseMs = () => testableMs('BACKUPCTL_RETRY_BASE_MS', 1000);

export const MAX_ATTEMPTS = 8;
const MAX_DELAY_FACTOR = 64; // 1, 2, 4 ... 64 s
const MAX_RETRY_AFTER_MS = 10 * 60_000;

export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Consecutive failures of one operation. `wait` sleeps 2^(n-1) x base plus up to one base of
 * random jitter (or Retry-After when the server gave a longer one), and gives up after
 * MAX_ATTEMPTS with exit 7; `reset` after progress (an upload that moves forward is not failing).
 */
export class Backoff {
  private failures = 0;
  constructor(
    private readonly signal: AbortSignal,
    private readonly onRetry?: OnRetry,
  ) {}

  reset(): void {
    this.failures = 0;
  }

  async wait(v: { why: string; retryAfterMs?: number }): Promise<void> {
    this.failures++;
    if (this.failures >= MAX_ATTEMPTS) {
      const hint = /userRateLimitExceeded/.test(v.why) ? ' (a long run of userRateLimitExceeded can also mean the 750 GB/day upload cap)' : '';
      throw new BackupctlError(Exit.unavailable, `giving up after ${MAX_ATTEMPTS} attempts: ${v.why}${hint}; try again later`);
    }
    const base = baseMs();
    const exp = base * Math.min(2 ** (this.failures - 1), MAX_DELAY_FACTOR) + Math.random() * base;
    const delay = Math.max(exp, Math.min(v.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS));
    this.onRetry?.(v.why, delay, this.failures + 1);
    await sleep(delay, this.signal);
  }
}

/** What a request needs to recover from a 401: a fresh access token, or a clear fatal error. */
export interface Reauthenticator {
  refresh(): Promise<void>;
}

/**
 * The recovery state of one operation (a metadata call, an upload, a download): consecutive
 * failures for the backoff, and whether the token was just refreshed (a second 401 right after a
 * refresh is fatal, not a loop).
 */
export class Recovery {
  private readonly backoff: Backoff;
  private reauthed = false;
  constructor(
    private readonly signal: AbortSignal,
    private readonly auth: Reauthenticator,
    onRetry?: OnRetry,
  ) {
    this.backoff = new Backoff(signal, onRetry);
  }

  /** A request went through. */
  succeeded(): void {
    this.reauthed = false;
  }

  /** The operation moved forward: earlier failures no longer count towards giving up. */
  progressed(): void {
    this.backoff.reset();
  }

  /** A reply that is not an error but is no progress either (counts like a failure). */
  stalled(why: string): Promise<void> {
    return this.backoff.wait({ why });
  }

  /**
   * After a failed request: throws when it is fatal (or interrupted); returns 'notFound' for the
   * caller to decide; otherwise refreshes the token or waits out the backoff and returns 'again'.
   */
  async recover(err: unknown, what: string): Promise<'again' | 'notFound'> {
    if (this.signal.aborted) throw this.signal.reason;
    const v = classify(err, what);
    if (v.kind === 'fatal') throw v.error;
    if (v.kind === 'notFound') return 'notFound';
    if (v.kind === 'reauth') {
      if (this.reauthed) throw new BackupctlError(Exit.refused, 'Google Drive keeps refusing the access token: run backupctl drive login');
      this.reauthed = true;
      await this.auth.refresh();
      return 'again';
    }
    await this.backoff.wait(v);
    return 'again';
  }
}

/**
 * Run one idempotent request under the policy. 404 returns `onNotFound()` (a usage error by
 * default: nothing by that id). Non-idempotent requests must not come here unless a repeat is harmless.
 */
export async function withRetry<T>(
  what: string,
  fn: () => Promise<T>,
  opts: { signal: AbortSignal; auth: Reauthenticator; onRetry?: OnRetry; onNotFound?: () => T },
): Promise<T> {
  const recovery = new Recovery(opts.signal, opts.auth, opts.onRetry);
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if ((await recovery.recover(err, what)) === 'notFound') {
        if (opts.onNotFound) return opts.onNotFound();
        throw new BackupctlError(Exit.usage, `not found on Google Drive (${what})`);
      }
    }
  }
}
