// The Drive fake itself, driven by the real googleapis client: the parts backupctl does not use
// day to day (multipart and media uploads, updates) must still behave as Drive documents, or the
// fake would let a future change pass that Google would reject.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { drive as driveApi } from '@googleapis/drive';
import { OAuth2Client } from 'google-auth-library';
import { DriveFake, SCOPE_FILE } from '../support/drive-fake/server.js';

let fake: DriveFake;
beforeAll(async () => {
  fake = await new DriveFake().start();
});
afterAll(() => fake.stop());

function client(scopes?: string[]) {
  const auth = new OAuth2Client();
  auth.setCredentials({ access_token: fake.issueAccessToken(scopes) });
  return driveApi({ version: 'v3', auth });
}
const o = () => ({ rootUrl: fake.rootUrl, retry: false });
const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

describe('Drive fake', () => {
  it('takes a multipart upload (metadata + media) and reports md5, size and appProperties', async () => {
    const body = Buffer.from('hello\r\n--not-a-boundary\r\nworld');
    const r = await client().files.create(
      { requestBody: { name: "it's.bkp", appProperties: { k: 'v' } }, media: { mimeType: 'application/octet-stream', body: Readable.from([body]) }, fields: 'id,name,size,md5Checksum,appProperties' },
      o(),
    );
    expect(r.data).toMatchObject({ name: "it's.bkp", size: String(body.length), md5Checksum: md5(body), appProperties: { k: 'v' } });
    expect(fake.content(r.data.id!)!.equals(body)).toBe(true);
    // A quote in a query string literal is escaped with a backslash.
    const l = await client().files.list({ q: "name = 'it\\'s.bkp' and trashed = false", fields: 'nextPageToken,files(id)' }, o());
    expect(l.data.files?.map((f) => f.id)).toEqual([]); // the first page is deliberately empty ...
    expect(l.data.nextPageToken).toBeTruthy(); // ... but says there is more
    const next = await client().files.list({ pageToken: l.data.nextPageToken!, fields: 'nextPageToken,files(id)' }, o());
    expect(next.data.files?.map((f) => f.id)).toEqual([r.data.id]);
  });

  it('applies updates: name, appProperties (null deletes), and refuses parents in the body', async () => {
    const f = fake.addFile({ name: 'a', appProperties: { x: '1', y: '2' } }, Buffer.from('a'));
    const r = await client().files.update({ fileId: f.id, requestBody: { name: 'b', appProperties: { x: null, z: '3' } }, fields: 'name,appProperties' }, o());
    expect(r.data).toEqual({ name: 'b', appProperties: { y: '2', z: '3' } });
    await expect(client().files.update({ fileId: f.id, requestBody: { parents: ['x'] } }, o())).rejects.toMatchObject({ status: 403 });
  });

  it('returns only the requested fields, and the documented defaults otherwise', async () => {
    const f = fake.addFile({ name: 'c' }, Buffer.from('c'));
    expect((await client().files.get({ fileId: f.id }, o())).data).toEqual({ kind: 'drive#file', id: f.id, name: 'c', mimeType: 'application/octet-stream' });
    expect((await client().files.get({ fileId: f.id, fields: 'size' }, o())).data).toEqual({ size: '1' });
  });

  it('rejects a chunk that is not a multiple of 256 KiB unless it is the last, and a gap', async () => {
    const s = await fetch(`${fake.rootUrl}upload/drive/v3/files?uploadType=resumable`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${fake.issueAccessToken()}`, 'Content-Type': 'application/json', 'X-Upload-Content-Length': String(600_000) },
      body: JSON.stringify({ name: 'r' }),
    });
    const uri = s.headers.get('location')!;
    const put = (range: string, body: Buffer) => fetch(uri, { method: 'PUT', headers: { 'Content-Range': range }, body });
    expect((await put('bytes 0-99999/600000', Buffer.alloc(100_000))).status).toBe(400);
    expect((await put('bytes 262144-524287/600000', Buffer.alloc(262_144))).status).toBe(400);
    const ok = await put('bytes 0-262143/600000', Buffer.alloc(262_144));
    expect(ok.status).toBe(308);
    expect(ok.headers.get('range')).toBe('bytes=0-262143');
    const probe = await put('bytes */600000', Buffer.alloc(0));
    expect(probe.status).toBe(308);
    expect(probe.headers.get('range')).toBe('bytes=0-262143');
    const last = await put('bytes 262144-599999/600000', Buffer.alloc(600_000 - 262_144));
    expect(last.status).toBe(200);
    expect((await put('bytes */600000', Buffer.alloc(0))).status).toBe(200); // a finished session says so
  });

  it('hides the app-data space from a token without drive.appdata', async () => {
    await expect(client([SCOPE_FILE]).files.list({ spaces: 'appDataFolder' }, o())).rejects.toMatchObject({ status: 403 });
  });
});
