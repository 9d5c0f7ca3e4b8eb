// The resumable upload engine against the Drive fake, fault by fault: every run must end with
// Drive holding exactly the local bytes, and resumes must not resend what Drive acknowledged.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { DriveFake, type Fault } from '../support/drive-fake/server.js';
import { DriveClient } from '../../src/drive/client.js';
import { digestFile, type FileDigest } from '../../src/drive/hash.js';
import { resumableUpload, CHUNK_UNIT } from '../../src/drive/upload.js';
import { BackupctlError } from '../../src/errors.js';

const CHUNK = 4 * CHUNK_UNIT; // 1 MiB chunks keep the tests quick
const SIZE = 5 * CHUNK + 12345; // not a multiple of anything: the last chunk is short

let fake: DriveFake;
let dir: string;
let file: string;
let content: Buffer;
let digest: FileDigest;

beforeAll(async () => {
  fake = await new DriveFake().start();
  dir = await mkdtemp(join(tmpdir(), 'drive-upload-'));
  file = join(dir, 'a.bkp');
  content = randomBytes(SIZE);
  await writeFile(file, content);
  digest = await digestFile(file, new AbortController().signal);
});
afterAll(async () => {
  await fake.stop();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => fake.useInThisProcess());
afterEach(() => {
  expect(fake.pendingFaults()).toEqual([]);
});

async function upload(opts: { session?: string | null; signal?: AbortSignal; saved?: (string | null)[] } = {}) {
  const drive = await DriveClient.open(opts.signal ?? new AbortController().signal);
  const saved = opts.saved ?? [];
  const f = await resumableUpload(drive, {
    path: file,
    digest,
    metadata: { name: 'a.bkp', parents: ['root'], mimeType: 'application/octet-stream', appProperties: { backupctlSha256: digest.sha256 } },
    chunkSize: CHUNK,
    session: opts.session ?? null,
    saveSession: async (u) => void saved.push(u),
  });
  return f;
}

function expectStored(id: string | null | undefined) {
  expect(id).toBeTruthy();
  const got = fake.content(id!)!;
  expect(got.length).toBe(SIZE);
  expect(got.equals(content)).toBe(true);
}

describe('resumable upload', () => {
  it('uploads in 256 KiB-multiple chunks and returns the file with md5 and size', async () => {
    const saved: (string | null)[] = [];
    const f = await upload({ saved });
    expectStored(f.id);
    expect(f.md5Checksum).toBe(digest.md5);
    expect(f.size).toBe(String(SIZE));
    expect(f.appProperties?.backupctlSha256).toBe(digest.sha256);
    expect(saved).toHaveLength(1);
    const chunks = fake.requests.filter((r) => r.on === 'chunk');
    expect(chunks).toHaveLength(6);
    expect(chunks[1]!.contentRange).toBe(`bytes ${CHUNK}-${2 * CHUNK - 1}/${SIZE}`);
    expect(fake.uploadBytesReceived).toBe(SIZE);
  });

  const faults: Array<[string, Fault[], number]> = [
    ['503 on a chunk', [{ on: 'chunk', skip: 1, action: { status: 503 } }], CHUNK],
    ['500 twice then 502', [{ on: 'chunk', skip: 2, times: 2, action: { status: 500 } }, { on: 'chunk', skip: 2, action: { status: 502 } }], 3 * CHUNK],
    ['429 with Retry-After', [{ on: 'chunk', skip: 1, action: { status: 429, retryAfter: 0 } }], CHUNK],
    ['403 rateLimitExceeded', [{ on: 'chunk', skip: 3, action: { status: 403, reason: 'rateLimitExceeded' } }], CHUNK],
    ['403 userRateLimitExceeded', [{ on: 'chunk', action: { status: 403, reason: 'userRateLimitExceeded' } }], CHUNK],
    ['connection cut mid-chunk', [{ on: 'chunk', skip: 2, action: { drop: true } }], CHUNK / 2],
    ['final chunk stored, reply lost', [{ on: 'chunk', skip: 5, action: { loseResponse: true } }], 0],
    ['308 acknowledging fewer bytes than sent', [{ on: 'chunk', skip: 1, action: { partialAck: CHUNK_UNIT } }], CHUNK - CHUNK_UNIT],
    ['503 on the status probe too', [{ on: 'chunk', skip: 2, action: { status: 503 } }, { on: 'probe', action: { status: 503 } }], CHUNK],
    ['503 when opening the session', [{ on: 'session', action: { status: 503 } }], 0],
  ];
  for (const [name, fs, resent] of faults) {
    it(`survives ${name}, resending at most what Drive did not keep`, async () => {
      fake.inject(...fs);
      const f = await upload();
      expectStored(f.id);
      expect(f.md5Checksum).toBe(digest.md5);
      // Rejected chunk bodies reach the server too; resending beyond that is what must not happen.
      const rejected = fake.requests.filter((r) => r.on === 'chunk' && r.status !== undefined && r.status >= 400).length;
      expect(fake.uploadBytesReceived).toBeLessThanOrEqual(SIZE + resent + rejected * CHUNK);
      expect(fake.findByName('a.bkp').filter((x) => x.id === f.id)).toHaveLength(1);
    });
  }

  it('restarts from byte 0 when the session expired (404)', async () => {
    fake.inject({ on: 'chunk', skip: 2, action: { expireSession: true } });
    const saved: (string | null)[] = [];
    const f = await upload({ saved });
    expectStored(f.id);
    expect(saved).toEqual([expect.any(String), null, expect.any(String)]);
  });

  it('resumes a persisted session from what Drive has, without resending it', async () => {
    // First run: cut after three chunks by expiring nothing but aborting the run.
    const ac = new AbortController();
    const saved: (string | null)[] = [];
    fake.inject({ on: 'chunk', skip: 3, action: { status: 503 } });
    process.env.BACKUPCTL_RETRY_BASE_MS = '2000';
    const first = upload({ signal: ac.signal, saved });
    while (!fake.requests.some((r) => r.on === 'chunk' && r.status === 503)) await new Promise((r) => setTimeout(r, 10));
    ac.abort(new Error('stop'));
    await expect(first).rejects.toThrow('stop');
    process.env.BACKUPCTL_RETRY_BASE_MS = '5';
    const before = fake.uploadBytesReceived;
    expect(before).toBe(4 * CHUNK);
    const f = await upload({ session: saved[0]! });
    expectStored(f.id);
    expect(fake.uploadBytesReceived - before).toBe(SIZE - 3 * CHUNK);
    expect(fake.requests.filter((r) => r.on === 'probe')).toHaveLength(1);
  });

  it('refreshes nothing and fails clearly (exit 8) when a bare access token is refused', async () => {
    fake.inject({ on: 'session', action: { expireToken: true } });
    await expect(upload()).rejects.toMatchObject({ code: 8 });
  });

  const fatal: Array<[string, number]> = [['storageQuotaExceeded', 8], ['dailyLimitExceeded', 8], ['insufficientPermissions', 8]];
  for (const [reason, code] of fatal) {
    it(`stops at once on 403 ${reason} with exit ${code}`, async () => {
      fake.inject({ on: 'chunk', skip: 1, action: { status: 403, reason } });
      const err = await upload().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(BackupctlError);
      expect((err as BackupctlError).code).toBe(code);
      expect(fake.requests.filter((r) => r.on === 'chunk')).toHaveLength(2);
    });
  }

  it('gives up with exit 7 after bounded retries of 5xx', async () => {
    fake.inject({ on: 'chunk', times: 100, action: { status: 503 } }, { on: 'probe', times: 100, action: { status: 503 } });
    await expect(upload()).rejects.toMatchObject({ code: 7 });
    fake.pendingFaults().length = 0;
  });
});
