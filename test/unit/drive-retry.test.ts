// The one retry policy and the endpoint rule, without a network: what is retried, what is fatal
// with which exit code, how long backoff waits, and which URLs may carry a token.
import { describe, expect, it } from 'vitest';
import { Backoff, classify, parseRetryAfter, testableMs } from '../../src/drive/retry.js';
import { checkSameOrigin, checkUrl, driveEndpoints } from '../../src/drive/endpoints.js';
import { BackupctlError } from '../../src/errors.js';

/** The shape gaxios gives a failed request. */
const httpError = (status: number, body?: unknown, headers: Record<string, string> = {}) =>
  Object.assign(new Error(`status ${status}`), {
    status,
    response: { status, data: body, headers: new Headers(headers) },
  });
const driveBody = (reason: string) => ({ error: { code: 403, message: reason, errors: [{ reason, message: reason }] } });

describe('classify', () => {
  it.each([500, 502, 503, 504, 408])('retries HTTP %i', (s) => expect(classify(httpError(s), 'x').kind).toBe('retry'));
  it('retries 429 and keeps Retry-After', () => {
    expect(classify(httpError(429, undefined, { 'retry-after': '7' }), 'x')).toMatchObject({ kind: 'retry', retryAfterMs: 7000 });
  });
  it.each(['rateLimitExceeded', 'userRateLimitExceeded'])('retries 403 %s', (r) => expect(classify(httpError(403, driveBody(r)), 'x').kind).toBe('retry'));
  it.each(['storageQuotaExceeded', 'quotaExceeded', 'dailyLimitExceeded', 'insufficientPermissions', 'somethingNew'])('403 %s is fatal, exit 8', (r) => {
    const v = classify(httpError(403, driveBody(r)), 'x');
    expect(v.kind).toBe('fatal');
    expect((v as { error: BackupctlError }).error.code).toBe(8);
  });
  it('reads the reason from a stream error, whose body gaxios leaves in the message', () => {
    const e = Object.assign(new Error(JSON.stringify(driveBody('rateLimitExceeded'))), { status: 403, response: { status: 403, data: undefined, headers: new Headers() } });
    expect(classify(e, 'x').kind).toBe('retry');
  });
  it('401 asks for a token refresh, 404 is left to the caller', () => {
    expect(classify(httpError(401), 'x').kind).toBe('reauth');
    expect(classify(httpError(404), 'x').kind).toBe('notFound');
  });
  it('OAuth invalid_grant is fatal with the way out; a 5xx from the token endpoint is retried', () => {
    const v = classify(httpError(400, { error: 'invalid_grant', error_description: 'Token has been expired or revoked.' }), 'refresh');
    expect(v).toMatchObject({ kind: 'fatal' });
    expect((v as { error: BackupctlError }).error.message).toMatch(/drive login/);
    expect(classify(httpError(503, { error: 'internal_failure' }), 'refresh').kind).toBe('retry');
  });
  it('retries network failures, also when wrapped as a cause', () => {
    expect(classify(Object.assign(new Error('x'), { code: 'ECONNRESET' }), 'x').kind).toBe('retry');
    expect(classify(Object.assign(new Error('request failed'), { cause: Object.assign(new Error('y'), { code: 'ETIMEDOUT' }) }), 'x').kind).toBe('retry');
    expect(classify(new Error('socket hang up'), 'x').kind).toBe('retry');
  });
  it('passes our own errors through untouched', () => {
    const e = new BackupctlError(6, 'disk');
    expect(classify(e, 'x')).toEqual({ kind: 'fatal', error: e });
  });
});

describe('test-only time overrides', () => {
  it('take a number of milliseconds from the environment; unset, empty or not a number keeps the default', () => {
    const name = 'BACKUPCTL_TEST_ONLY_MS';
    try {
      for (const [value, want] of [[undefined, 60_000], ['', 60_000], ['  ', 60_000], ['soon', 60_000], ['-5', 60_000], ['1500', 1500], ['0', 0]] as const) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
        expect(testableMs(name, 60_000), JSON.stringify(value)).toBe(want);
      }
    } finally {
      delete process.env[name];
    }
  });
});

describe('Retry-After and backoff', () => {
  it('parses seconds and HTTP dates', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    expect(parseRetryAfter(new Date(Date.now() + 5000).toUTCString(), Date.now())).toBeGreaterThan(3000);
    expect(parseRetryAfter('soon')).toBeUndefined();
  });
  it('doubles with jitter, honours a longer Retry-After, and gives up with exit 7', async () => {
    process.env.BACKUPCTL_RETRY_BASE_MS = '1';
    const delays: number[] = [];
    const b = new Backoff(new AbortController().signal, (_why, ms) => delays.push(ms));
    await b.wait({ why: 'a' });
    await b.wait({ why: 'b' });
    await b.wait({ why: 'c' });
    expect(delays[0]).toBeGreaterThanOrEqual(1);
    expect(delays[0]).toBeLessThan(2);
    expect(delays[2]).toBeGreaterThanOrEqual(4);
    expect(delays[2]).toBeLessThan(5);
    await b.wait({ why: 'd', retryAfterMs: 50 });
    expect(delays[3]).toBe(50);
    const err = await (async () => {
      for (;;) await b.wait({ why: 'Drive answered 503' });
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 7 });
    expect((err as Error).message).toMatch(/giving up after 8 attempts: Drive answered 503/);
  });
  it('stops waiting at once on Ctrl-C', async () => {
    process.env.BACKUPCTL_RETRY_BASE_MS = '60000';
    const ac = new AbortController();
    const b = new Backoff(ac.signal);
    const p = b.wait({ why: 'x' });
    ac.abort(new BackupctlError(130, 'interrupted'));
    await expect(p).rejects.toMatchObject({ code: 130 });
  });
});

describe('endpoints', () => {
  it('allows https anywhere and http only to loopback', () => {
    expect(checkUrl('https://www.googleapis.com/', 'x').host).toBe('www.googleapis.com');
    expect(checkUrl('http://127.0.0.1:9/', 'x').port).toBe('9');
    expect(checkUrl('http://[::1]:9/', 'x').port).toBe('9');
    expect(() => checkUrl('http://10.0.0.1/', 'x')).toThrow(/only sent over https/);
    expect(() => checkUrl('http://127.0.0.1.evil.example/', 'x')).toThrow(/only sent over https/);
    expect(() => checkUrl('ftp://127.0.0.1/', 'x')).toThrow();
  });
  it("derives Google's revoke URL from the token URL and defaults to Google", () => {
    delete process.env.BACKUPCTL_DRIVE_ROOT_URL;
    delete process.env.BACKUPCTL_DRIVE_TOKEN_URL;
    delete process.env.BACKUPCTL_DRIVE_AUTH_URL;
    expect(driveEndpoints()).toEqual({
      rootUrl: 'https://www.googleapis.com/',
      tokenUrl: 'https://oauth2.googleapis.com/token',
      authUrl: 'https://accounts.google.com/o/oauth2/v2/auth',
      revokeUrl: 'https://oauth2.googleapis.com/revoke',
    });
  });
  it('refuses an upload session URL on another origin', () => {
    expect(() => checkSameOrigin('https://evil.example/upload?x', 'https://www.googleapis.com/')).toThrow(/refusing to send the token/);
    expect(() => checkSameOrigin('https://www.googleapis.com/upload/drive/v3/files?upload_id=1', 'https://www.googleapis.com/')).not.toThrow();
  });
});
