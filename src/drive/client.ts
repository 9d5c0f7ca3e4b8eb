// The Drive v3 client as backupctl uses it: googleapis' generated client for metadata calls, the
// auth client's transport for resumable uploads (googleapis has none) and ranged media downloads.
// Every call gets rootUrl (setting it on the client moves metadata calls but not uploads), gaxios'
// retries off, and the run's AbortSignal; retries are retry.ts's business.
import type { drive_v3 } from '@googleapis/drive';
import type { gaxios } from 'google-auth-library';
import { openAuth, type DriveAuth } from './auth.js';
import { checkSameOrigin } from './endpoints.js';
import { withRetry, type OnRetry } from './retry.js';

/** The per-call options googleapis needs so that nothing escapes to Google's hosts or retries by itself. */
export interface CallOptions {
  rootUrl: string;
  retry: false;
  signal: AbortSignal;
  timeout: number;
}

/** A metadata request or an upload status probe that takes longer than this is treated as lost. */
export const REQUEST_TIMEOUT_MS = 60_000;

export class DriveClient {
  private constructor(
    readonly api: drive_v3.Drive,
    readonly auth: DriveAuth,
    readonly signal: AbortSignal,
    /** Called before each retry wait (progress display, --json warnings). */
    readonly onRetry?: OnRetry,
  ) {}

  static async open(signal: AbortSignal, onRetry?: OnRetry): Promise<DriveClient> {
    const auth = await openAuth(signal, onRetry);
    const { drive } = await import('@googleapis/drive');
    return new DriveClient(drive({ version: 'v3', auth: auth.client }), auth, signal, onRetry);
  }

  get rootUrl(): string {
    return this.auth.endpoints.rootUrl;
  }

  /** One idempotent metadata call under the retry policy. */
  async call<T>(what: string, fn: (o: CallOptions) => Promise<{ data: T }>, onNotFound?: () => T): Promise<T> {
    const opts: CallOptions = { rootUrl: this.rootUrl, retry: false, signal: this.signal, timeout: REQUEST_TIMEOUT_MS };
    const res = await withRetry(what, () => fn(opts), {
      signal: this.signal,
      auth: this.auth,
      onRetry: this.onRetry,
      onNotFound: onNotFound && (() => ({ data: onNotFound() })),
    });
    return res.data;
  }

  /**
   * A raw request through the auth client's transport (resumable sessions and chunks). `url` is
   * either a path under the API root or a session URI Drive returned, which must stay on that origin.
   */
  async raw<T = unknown>(url: string, o: gaxios.GaxiosOptions): Promise<gaxios.GaxiosResponse<T>> {
    const full = /^https?:\/\//.test(url) ? url : new URL(url, this.rootUrl).href;
    checkSameOrigin(full, this.rootUrl);
    return this.auth.client.request<T>({
      ...o,
      url: full,
      retry: false,
      // The fetch layer would otherwise follow a 308 that happens to carry a Location header.
      redirect: 'manual',
      // The default redactor walks a Buffer body byte by byte on every failure (seconds per chunk).
      errorRedactor: false,
      signal: this.signal,
    });
  }
}
