// The shape checks on Drive's JSON replies (src/drive/replies.ts) and what classify makes of a
// hostile error body: every malformed reply is one BackupctlError with exit 7 (never a TypeError),
// and server text in messages is made inert and bounded.
import { describe, expect, it } from 'vitest';
import { aboutUser, fileResource, listPage } from '../../src/drive/replies.js';
import { classify } from '../../src/drive/retry.js';
import { BackupctlError } from '../../src/errors.js';

const good = { id: '1AbC_d-9', name: 'a.bctl', size: '123', md5Checksum: '0123456789abcdef0123456789abcdef', createdTime: '2026-11-30T10:00:00.000Z', appProperties: { k: 'v' }, parents: ['p1'] };

function rejects(f: () => unknown, why: string): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(BackupctlError);
  expect((err as BackupctlError).code).toBe(7);
  expect((err as BackupctlError).message).toContain(`(${why})`);
}

describe('listPage and fileResource', () => {
  it('accepts what Drive documents: files absent or an array, a token absent or a string', () => {
    expect(listPage({})).toEqual({ files: [], nextPageToken: null });
    expect(listPage({ files: [good], nextPageToken: 't' })).toEqual({ files: [good], nextPageToken: 't' });
    expect(fileResource({ id: 'x' }, 'list')).toEqual({ id: 'x' });
  });

  it.each<[string, unknown, string]>([
    ['null', null, 'not a JSON object'],
    ['files a string', { files: 'x' }, '"files" is not an array'],
    ['files an object', { files: { 0: good } }, '"files" is not an array'],
    ['an empty token', { files: [], nextPageToken: '' }, 'nextPageToken is not a string'],
    ['a numeric token', { files: [], nextPageToken: 7 }, 'nextPageToken is not a string'],
    ['a null entry', { files: [good, null] }, 'a file entry is null'],
    ['an array entry', { files: [[good]] }, 'a file entry is an array'],
    ['an id with a slash', { files: [{ ...good, id: '../x' }] }, 'a file id is "../x"'],
    ['an id with an escape', { files: [{ ...good, id: 'a\u001b[2J' }] }, 'a file id is "a\\\\e[2J"'],
    ['a name that is a number', { files: [{ ...good, name: 5 }] }, 'name of 1AbC_d-9 is not a string'],
    ['a negative size', { files: [{ ...good, size: '-1' }] }, 'size of 1AbC_d-9 is not a byte count'],
    ['a numeric size', { files: [{ ...good, size: 5 }] }, 'size of 1AbC_d-9 is not a byte count'],
    ['an md5 that is not hex', { files: [{ ...good, md5Checksum: 'z'.repeat(32) }] }, 'md5Checksum of 1AbC_d-9 is not an MD5'],
    ['appProperties with a number', { files: [{ ...good, appProperties: { k: 1 } }] }, 'appProperties of 1AbC_d-9 are not strings'],
    ['parents a string', { files: [{ ...good, parents: 'p1' }] }, 'parents of 1AbC_d-9 are not ids'],
  ])('refuses %s with exit 7', (_, reply, why) => rejects(() => listPage(reply), why));

  it('about: a user that is not an object, or a name that is not a string', () => {
    expect(aboutUser({ user: { displayName: 'A', emailAddress: 'a@x' } })).toEqual({ displayName: 'A', emailAddress: 'a@x' });
    expect(aboutUser({})).toEqual({ displayName: null, emailAddress: null });
    rejects(() => aboutUser({ user: [] }), '"user" is not an object');
    rejects(() => aboutUser({ user: { displayName: {} } }), 'the user name or address is not a string');
  });
});

describe('classify with a hostile error body', () => {
  const err = (status: number, data: unknown) => Object.assign(new Error(`status ${status}`), { status, response: { status, data, headers: new Headers() } });

  it('escapes control characters in the reason and the message, and cuts an endless message', () => {
    const v = classify(err(400, { error: { message: 'm', errors: [{ reason: 'r\u001b]52;c;aGk=\u0007', message: 'x'.repeat(10_000) }] } }), 'list');
    expect(v.kind).toBe('fatal');
    const m = (v as { error: BackupctlError }).error.message;
    expect(m).toBe(`Google Drive rejected the list (400 r\\e]52;c;aGk=\\x07): ${'x'.repeat(300)}…`);
  });

  it.each<[string, unknown]>([
    ['errors not an array', { error: { errors: 'r' } }],
    ['a reason that is an object', { error: { errors: [{ reason: { a: 1 } }] } }],
    ['a null entry', { error: { errors: [null] } }],
    ['error a number', { error: 5 }],
    ['a message that is an object', { error: { message: { a: 1 } } }],
  ])('%s: still one refusal (exit 8), never a TypeError', (_, body) => {
    const v = classify(err(400, body), 'list');
    expect(v).toMatchObject({ kind: 'fatal' });
    expect((v as { error: BackupctlError }).error.code).toBe(8);
    expect((v as { error: BackupctlError }).error.message).toMatch(/^Google Drive rejected the list \(400\)/);
  });
});
