// Downloads, listings, name resolution and prune planning against the Drive fake.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { DriveFake } from '../support/drive-fake/server.js';
import { archiveLikeBytes } from '../support/drive-fake/archive-bytes.js';
import { DriveClient } from '../../src/drive/client.js';
import { downloadToFile, downloadToStream, type PinnedFile } from '../../src/drive/download.js';
import { backupFolder, listBackups, planPrune, resolve, PROP, type RemoteFile } from '../../src/drive/remote.js';

let fake: DriveFake;
let dir: string;
const SIZE = 3 * 1024 * 1024 + 7;
let content: Buffer;

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

beforeAll(async () => {
  fake = await new DriveFake().start();
  dir = await mkdtemp(join(tmpdir(), 'drive-download-'));
  content = archiveLikeBytes(SIZE);
});
afterAll(async () => {
  await fake.stop();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(() => fake.useInThisProcess());

const open = () => DriveClient.open(new AbortController().signal);
function pinned(id: string): PinnedFile {
  const f = fake.files.get(id)!;
  const rev = f.revisions.at(-1)!;
  return { id, name: f.name, revisionId: rev.id, size: rev.content.length, md5: rev.md5 };
}

describe('download', () => {
  it('streams a file to FILE via FILE.part and checks it', async () => {
    const f = fake.addFile({ name: 'a.bkp' }, content);
    const out = join(dir, 'a1.bkp');
    const r = await downloadToFile(await open(), pinned(f.id), out, false);
    expect((await readFile(out)).equals(content)).toBe(true);
    expect(r.sha256).toBe(sha(content));
    await expect(stat(`${out}.part`)).rejects.toThrow();
  });

  it('resumes with Range after connections are cut mid-download, sending each byte about once', async () => {
    const f = fake.addFile({ name: 'b.bkp' }, content);
    fake.inject({ on: 'media', times: 3, action: { drop: true } });
    const out = join(dir, 'b.bkp');
    await downloadToFile(await open(), pinned(f.id), out, false);
    expect((await readFile(out)).equals(content)).toBe(true);
    const media = fake.requests.filter((r) => r.on === 'media');
    expect(media).toHaveLength(4);
    expect(media[1]!.range).toMatch(/^bytes=\d+-$/);
    // Each resume starts where the received bytes end; only what was in flight when a connection
    // was cut (written by the server, lost in the socket) is fetched twice.
    expect(fake.downloadBytesSent).toBeGreaterThanOrEqual(SIZE);
    expect(fake.downloadBytesSent).toBeLessThan(SIZE + 3 * 256 * 1024);
  });

  it('retries 5xx, 429 and 403 rate limits on the media request', async () => {
    const f = fake.addFile({ name: 'c.bkp' }, content);
    fake.inject(
      { on: 'media', action: { status: 500 } },
      { on: 'media', action: { status: 429, retryAfter: 0 } },
      { on: 'media', action: { status: 403, reason: 'userRateLimitExceeded' } },
    );
    const out = join(dir, 'c.bkp');
    await downloadToFile(await open(), pinned(f.id), out, false);
    expect((await readFile(out)).equals(content)).toBe(true);
  });

  it('never splices two revisions: a replaced file keeps serving the pinned one', async () => {
    const f = fake.addFile({ name: 'd.bkp' }, content);
    const pin = pinned(f.id);
    fake.inject({ on: 'media', action: { drop: true } });
    const drive = await open();
    const sink = new PassThrough();
    const got: Buffer[] = [];
    sink.on('data', (c: Buffer) => {
      got.push(c);
      if (got.length === 1) fake.replaceContent(f.id, archiveLikeBytes(SIZE)); // changes while we read
    });
    await downloadToStream(drive, pin, sink);
    expect(Buffer.concat(got).equals(content)).toBe(true);
  });

  it('fails with exit 5 and removes the part when the bytes do not match the checksum', async () => {
    const f = fake.addFile({ name: 'e.bkp' }, content);
    const out = join(dir, 'e.bkp');
    await expect(downloadToFile(await open(), { ...pinned(f.id), md5: md5(randomBytes(8)) }, out, false)).rejects.toMatchObject({ code: 5 });
    await expect(stat(`${out}.part`)).rejects.toThrow();
    await expect(stat(out)).rejects.toThrow();
  });

  it('fails with exit 5 when the file is not an archive', async () => {
    const junk = randomBytes(100_000);
    const f = fake.addFile({ name: 'junk' }, junk);
    const out = join(dir, 'junk');
    await expect(downloadToFile(await open(), pinned(f.id), out, false)).rejects.toMatchObject({ code: 5 });
    await expect(stat(out)).rejects.toThrow();
  });

  it('resumes a .part left by an earlier run of the same revision', async () => {
    const f = fake.addFile({ name: 'g.bkp' }, content);
    const out = join(dir, 'g.bkp');
    const pin = pinned(f.id);
    await writeFile(`${out}.part`, content.subarray(0, 1_000_000));
    await writeFile(`${out}.part.json`, JSON.stringify({ id: pin.id, revisionId: pin.revisionId, md5: pin.md5, size: pin.size }));
    await downloadToFile(await open(), pin, out, false);
    expect((await readFile(out)).equals(content)).toBe(true);
    expect(fake.downloadBytesSent).toBe(SIZE - 1_000_000);
  });
});

describe('listing, names and prune', () => {
  const prop = (b: Buffer) => ({ [PROP.sha256]: sha(b), [PROP.md5]: md5(b), [PROP.size]: String(b.length) });

  it('finds or creates one folder and pages through short and empty pages', async () => {
    const drive = await open();
    const folder = (await backupFolder(drive, 'drive', true))!;
    expect(await backupFolder(drive, 'drive', false)).toBe(folder);
    for (let i = 0; i < 7; i++) {
      const b = randomBytes(10);
      fake.addFile({ name: `n${i}`, parents: [folder], appProperties: prop(b) }, b);
    }
    const files = await listBackups(drive, 'drive', folder);
    expect(files.map((f) => f.name)).toEqual(['n6', 'n5', 'n4', 'n3', 'n2', 'n1', 'n0']);
    expect(files.every((f) => f.verified)).toBe(true);
    expect(fake.requests.filter((r) => r.on === 'list').length).toBeGreaterThan(4);
  });

  it('keeps the app-data space apart', async () => {
    const drive = await open();
    const b = randomBytes(10);
    fake.addFile({ name: 'hidden', parents: ['appDataFolder'], space: 'appDataFolder', appProperties: prop(b) }, b);
    const folder = (await backupFolder(drive, 'appDataFolder', true))!;
    const names = (await listBackups(drive, 'appDataFolder', folder)).map((f) => f.name);
    expect(names).toEqual(['hidden']);
    const visible = (await listBackups(drive, 'drive', (await backupFolder(drive, 'drive', false))!)).map((f) => f.name);
    expect(visible).not.toContain('hidden');
  });

  const rf = (id: string, name: string, t: number, verified = true): RemoteFile => ({
    id, name, size: 1, md5: 'x', createdTime: new Date(Date.UTC(2026, 0, t)).toISOString(), revisionId: 'r', sha256: null, verified,
  });

  it('resolves a duplicated name to its newest copy, deterministically, and an id to itself', () => {
    const files = [rf('a', 'x', 1), rf('c', 'x', 3), rf('b', 'x', 3), rf('d', 'y', 2)];
    expect(resolve(files, 'x').file.id).toBe('c');
    expect(resolve(files, 'x').others.map((f) => f.id)).toEqual(['b', 'a']);
    expect(resolve(files, 'a').file.id).toBe('a');
    expect(() => resolve(files, 'zzz')).toThrow(/no backup named/);
  });

  it('prunes to the N newest and never deletes the newest verified copy', () => {
    const files = [rf('1', 'a', 1), rf('2', 'b', 2), rf('3', 'c', 3, false), rf('4', 'd', 4, false)];
    const p = planPrune(files, 2);
    expect(p.keep.map((f) => f.id)).toEqual(['4', '3', '2']);
    expect(p.remove.map((f) => f.id)).toEqual(['1']);
    expect(planPrune(files, 10).remove).toEqual([]);
    expect(() => planPrune(files, 0)).toThrow(/at least 1/);
  });
});
