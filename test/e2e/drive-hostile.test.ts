// A Drive server that misbehaves, through the BUILT CLI (`npx tsc -p .` first) against the Drive
// fake on 127.0.0.1: listings that never end, malformed replies, a download gzip-encoded against
// the request, hostile names and server messages carrying terminal escapes; retries reported on
// stderr without a terminal; pulls of a copy this machine did not push (exit 11); and the local
// checks that come before the login (push of a missing or non-archive file, drive status).
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DriveFake, type Fault } from '../support/drive-fake/server.js';
import { archiveLikeBytes } from '../support/drive-fake/archive-bytes.js';
import { STACK_TRACE, makeHome, onlyJson, runCli, runCliBytes } from '../support/cli.js';

let fake: DriveFake;
let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let token: string;

/** A raw terminal control: C0 (but newline), DEL, C1, bidi and format controls. */
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;
/** A name that would clear the screen, set the clipboard (OSC 52) and reverse the line. */
const EVIL = 'x\u001b[2J\u001b]52;c;cm0gLXJmIH4=\u0007\u202eppa.bctl';

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {
    BACKUPCTL_DRIVE_ROOT_URL: fake.rootUrl,
    BACKUPCTL_DRIVE_TOKEN_URL: fake.tokenUrl,
    BACKUPCTL_DRIVE_ACCESS_TOKEN: token,
    BACKUPCTL_RETRY_BASE_MS: '5',
    ...extra,
  };
}
const cli = (args: string[], extra: Record<string, string> = {}) => runCli(args, { configDir, env: env(extra), cwd: home, timeoutMs: 120_000 });
const errorLines = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('backupctl: ') && !l.startsWith('backupctl: warning: '));

/** The backupctl folder on the fake (made by a first push), and its id. */
async function folderWith(name: string, bytes: Buffer): Promise<string> {
  await writeFile(join(home, name), bytes);
  const p = await cli(['push', join(home, name)]);
  expect(p.exitCode, p.stderr).toBe(0);
  return fake.findByName(name)[0]!.parents[0]!;
}

beforeAll(async () => {
  fake = await new DriveFake().start();
  token = fake.issueAccessToken();
  ({ home, configDir, cleanup } = await makeHome('backupctl-hostile-'));
});
afterAll(async () => {
  await fake?.stop();
  await cleanup?.();
});
beforeEach(() => {
  fake.files.clear();
  fake.sessions.clear();
  fake.requests.length = 0;
  fake.pendingFaults().length = 0;
});

describe('listings are bounded', () => {
  it('a nextPageToken that never ends: drive list and pull stop after 1000 pages with exit 7 and one line', async () => {
    await folderWith('a.bctl', archiveLikeBytes(10_000));
    for (const args of [['drive', 'list'], ['pull', 'a.bctl', '-o', join(home, 'endless.bctl')]]) {
      fake.requests.length = 0;
      // The folder lookup (an empty first page, as Drive may send, then the folder) is fine.
      fake.inject({ on: 'list', skip: 2, action: { endlessPages: true } });
      const r = await cli(args);
      expect(r.exitCode, r.stderr).toBe(7);
      expect(errorLines(r.stderr)).toEqual([`backupctl: Google Drive's listing did not end after 1000 pages (0 files so far): giving up; try again later`]);
      expect(fake.requests.filter((q) => q.on === 'list')).toHaveLength(2 + 1000);
      expect(r.stderr).not.toMatch(STACK_TRACE);
    }
    await expect(stat(join(home, 'endless.bctl'))).rejects.toThrow();
  });

  it('a page that sends back to an earlier page ends at once (7), not after the bound', async () => {
    await folderWith('a.bctl', archiveLikeBytes(10_000));
    fake.requests.length = 0;
    fake.inject({ on: 'list', skip: 2, times: 2, action: { json: { files: [], nextPageToken: 'again' } } });
    const r = await cli(['drive', 'list']);
    expect(r.exitCode).toBe(7);
    expect(errorLines(r.stderr)).toEqual([`backupctl: Google Drive's reply to the list request is malformed (page 2 sends back to an earlier page): not retried; try again later`]);
    expect(fake.requests.filter((q) => q.on === 'list')).toHaveLength(2 + 2);
  });
});

describe('malformed replies end in one line and exit 7', () => {
  const cases: Array<[string, unknown, string]> = [
    ['files is not an array', { files: 'a.bctl' }, '"files" is not an array'],
    ['a null entry', { files: [null] }, 'a file entry is null'],
    ['an entry without an id', { files: [{ name: 'a.bctl', size: '10' }] }, 'a file id is missing'],
    ['a size that is not a number', { files: [{ id: '1abc', name: 'a.bctl', size: { n: 1 } }] }, 'size of 1abc is not a byte count'],
    ['a reply that is not an object', [1, 2, 3], 'not a JSON object'],
  ];
  for (const [what, body, why] of cases) {
    it(`drive list when ${what}`, async () => {
      fake.inject({ on: 'list', action: { json: body } });
      const r = await cli(['drive', 'list']);
      expect(r.exitCode, r.stderr).toBe(7);
      expect(r.stderr).toBe(`backupctl: Google Drive's reply to the list request is malformed (${why}): not retried; try again later\n`);
    });
  }

  it('pull when the folder listing holds a null entry; --json gives the error object', async () => {
    await folderWith('a.bctl', archiveLikeBytes(10_000));
    fake.inject({ on: 'list', skip: 1, action: { json: { files: [null] } } });
    const r = await cli(['pull', 'a.bctl', '-o', join(home, 'null.bctl'), '--json']);
    expect(r.exitCode).toBe(7);
    expect(onlyJson(r)).toMatchObject({ ok: false, error: { exitCode: 7, kind: 'unavailable' } });
    await expect(stat(join(home, 'null.bctl'))).rejects.toThrow();
  });

  it('drive status when about.get answers with a user that is not an object', async () => {
    fake.inject({ on: 'about', action: { json: { user: 'me' } } });
    const r = await cli(['drive', 'status']);
    expect(r.exitCode).toBe(7);
    expect(r.stderr).toBe(`backupctl: Google Drive's reply to the about request is malformed ("user" is not an object): not retried; try again later\n`);
  });
});

describe('a download re-encoded in transit', () => {
  it('Content-Encoding gzip although identity was asked for: refused with exit 7, nothing under the output name', async () => {
    const bytes = archiveLikeBytes(300_000);
    await folderWith('z.bctl', bytes);
    fake.inject({ on: 'media', action: { gzip: true } });
    const out = join(home, 'gz.bctl');
    const r = await cli(['pull', 'z.bctl', '-o', out]);
    expect(r.exitCode, r.stderr).toBe(7);
    expect(r.stderr).toBe(`backupctl: Google Drive sent z.bctl with Content-Encoding "gzip" although identity was asked for: refused (Drive's checksum is of the stored bytes); try again later\n`);
    await expect(stat(out)).rejects.toThrow();
    // The next pull, served plainly, gets the exact stored bytes.
    const again = await cli(['pull', 'z.bctl', '-o', out]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect((await readFile(out)).equals(bytes)).toBe(true);
  });

  it('the same refusal with -o -: exit 7, nothing on standard output', async () => {
    await folderWith('z.bctl', archiveLikeBytes(300_000));
    fake.inject({ on: 'media', action: { gzip: true } });
    const r = await runCliBytes(['pull', 'z.bctl', '-o', '-'], { configDir, env: env(), cwd: home });
    expect(r.exitCode).toBe(7);
    expect(r.stdout.length).toBe(0);
  });
});

describe('retries are reported on stderr without a terminal, one line each', () => {
  it('three 503s on the listing: three warning lines, then the listing (exit 0)', async () => {
    await folderWith('r.bctl', archiveLikeBytes(10_000));
    fake.inject({ on: 'list', times: 3, action: { status: 503 } });
    const r = await cli(['drive', 'list']);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(3);
    lines.forEach((l, i) => expect(l).toMatch(new RegExp(`^backupctl: warning: Drive answered 503 during list; retrying in \\d+\\.\\d s \\(attempt ${i + 2} of 8\\)$`)));
    expect(r.stdout).toMatch(/ r\.bctl\n$/);
  });

  it('503 forever: seven warning lines, then one error line and exit 7', async () => {
    fake.inject({ on: 'list', times: 100, action: { status: 503 } });
    const r = await cli(['drive', 'list']);
    expect(r.exitCode).toBe(7);
    const lines = r.stderr.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('backupctl: warning: Drive answered 503 during list; retrying in '))).toHaveLength(7);
    expect(errorLines(r.stderr)).toEqual(['backupctl: giving up after 8 attempts: Drive answered 503 during list; try again later']);
    expect(lines).toHaveLength(8);
    expect(fake.requests.filter((q) => q.on === 'list')).toHaveLength(8);
  });

  it('no network at all: each retry is a line, and the run ends in exit 7', async () => {
    // A port nothing listens on: every connection is refused.
    const dead = await new DriveFake().start();
    const root = dead.rootUrl;
    await dead.stop();
    const r = await cli(['drive', 'list'], { BACKUPCTL_DRIVE_ROOT_URL: root });
    expect(r.exitCode).toBe(7);
    const warnings = r.stderr.split('\n').filter((l) => l.startsWith('backupctl: warning: network error during list'));
    expect(warnings).toHaveLength(7);
    expect(errorLines(r.stderr)).toHaveLength(1);
  });
});

describe('local checks come before the login', () => {
  const loggedOut = () => ({ configDir: join(home, 'logged-out'), env: { ...env(), BACKUPCTL_DRIVE_ACCESS_TOKEN: '' }, cwd: home });

  it('push of a missing file when not logged in: exit 6 (the file), not 8, and no request', async () => {
    const r = await runCli(['push', join(home, 'nope.bctl')], loggedOut());
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/nope\.bctl: no such file or directory\n$/);
    expect(fake.requests).toHaveLength(0);
  });

  it('push of a file that is not an archive when not logged in: exit 5, no request', async () => {
    await writeFile(join(home, 'junk.bin'), randomBytes(5000));
    const r = await runCli(['push', join(home, 'junk.bin')], loggedOut());
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toMatch(/not a backupctl archive/);
    expect(fake.requests).toHaveLength(0);
  });

  it('push of an archive when not logged in: exit 8 and how to log in', async () => {
    await writeFile(join(home, 'ok.bctl'), archiveLikeBytes(5000));
    const r = await runCli(['push', join(home, 'ok.bctl')], loggedOut());
    expect(r.exitCode).toBe(8);
    expect(r.stderr).toBe('backupctl: not logged in to Google Drive: run backupctl drive login\n');
  });

  it('pull -o into a missing directory or onto an existing file, when not logged in: exit 6, no request, nothing created', async () => {
    const missing = join(home, 'unmounted', 'usb');
    const r = await runCli(['pull', 'a.bctl', '-o', join(missing, 'a.bctl')], loggedOut());
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toBe(`backupctl: cannot write ${join(missing, 'a.bctl')}: the directory ${missing} does not exist (is the disk mounted?)\n`); // fsutil requireOutputDir, as for every output file
    await expect(stat(join(home, 'unmounted'))).rejects.toThrow();
    await writeFile(join(home, 'kept.bctl'), 'keep me');
    const e = await runCli(['pull', 'a.bctl', '-o', join(home, 'kept.bctl')], loggedOut());
    expect(e.exitCode).toBe(6);
    expect(e.stderr).toBe(`backupctl: ${join(home, 'kept.bctl')} already exists (use --force to replace it)\n`);
    expect(await readFile(join(home, 'kept.bctl'), 'utf8')).toBe('keep me');
    expect(fake.requests).toHaveLength(0);
  });

  it('drive status when logged out: exit 8, and --json says ok:false with the same code', async () => {
    const human = await runCli(['drive', 'status'], loggedOut());
    expect(human.exitCode).toBe(8);
    expect(human.stderr).toBe('backupctl: not logged in to Google Drive: run backupctl drive login\n');
    expect(human.stdout).toBe('');
    const json = await runCli(['drive', 'status', '--json'], loggedOut());
    expect(json.exitCode).toBe(8);
    expect(onlyJson(json)).toEqual({ ok: false, error: { exitCode: 8, kind: 'refused', message: 'not logged in to Google Drive: run backupctl drive login', loggedIn: false } });
  });
});

describe('a copy on Drive that this machine did not push (exit 11)', () => {
  /** Push `mine` as NAME, then put a forged archive under the same name (newer). */
  async function swapped(name: string): Promise<{ forged: Buffer; mineId: string }> {
    const folder = await folderWith(name, archiveLikeBytes(40_000));
    const mineId = fake.findByName(name)[0]!.id;
    const forged = archiveLikeBytes(60_000);
    fake.addFile({ name, parents: [folder] }, forged);
    return { forged, mineId };
  }

  it('pull exits 11 with one line; the file is written completely (the bytes Drive holds) for inspection', async () => {
    const { forged } = await swapped('s.bctl');
    const out = join(home, 'foreign.bctl');
    const r = await cli(['pull', 's.bctl', '-o', out]);
    expect(r.exitCode, r.stderr).toBe(11);
    const errors = errorLines(r.stderr);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^backupctl: the backup on Drive is not what this machine pushed: s\.bctl was pushed on .* with 40000 bytes, md5 [0-9a-f]{32}; Drive now has 60000 bytes, md5 [0-9a-f]{32}; it was written to .*foreign\.bctl for inspection\. .* pull again with --allow-foreign$/);
    expect((await readFile(out)).equals(forged)).toBe(true);
    expect(r.stderr).not.toMatch(/Pulled /);
  });

  it('--json: the error object has kind "foreign", the id and the SHA-256 of what was written', async () => {
    const { forged } = await swapped('s.bctl');
    const r = await cli(['pull', 's.bctl', '-o', join(home, 'foreign-json.bctl'), '--json']);
    expect(r.exitCode).toBe(11);
    const j = onlyJson<{ ok: boolean; error: { exitCode: number; kind: string; id: string; sha256: string } }>(r);
    expect(j).toMatchObject({ ok: false, error: { exitCode: 11, kind: 'foreign' } });
    expect(j.error.sha256).toBe((await import('node:crypto')).createHash('sha256').update(forged).digest('hex'));
  });

  it('pull -o - of a copy known to differ before the download: exit 11 and not one byte on standard output', async () => {
    await swapped('s.bctl');
    const r = await runCliBytes(['pull', 's.bctl', '-o', '-'], { configDir, env: env(), cwd: home });
    expect(r.exitCode).toBe(11);
    expect(r.stdout.length).toBe(0);
    expect(r.stderr).toMatch(/nothing was written to standard output/);
    expect(fake.requests.filter((q) => q.on === 'media')).toHaveLength(0);
  });

  it('--allow-foreign: the warning stays, the exit is 0', async () => {
    const { forged } = await swapped('s.bctl');
    const out = join(home, 'allowed.bctl');
    const r = await cli(['pull', 's.bctl', '-o', out, '--allow-foreign']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/warning: THE BACKUP ON DRIVE IS NOT WHAT THIS MACHINE PUSHED/);
    expect((await readFile(out)).equals(forged)).toBe(true);
    const toStdout = await runCliBytes(['pull', 's.bctl', '-o', '-', '--allow-foreign'], { configDir, env: env(), cwd: home });
    expect(toStdout.exitCode, toStdout.stderr).toBe(0);
    expect(toStdout.stdout.equals(forged)).toBe(true);
  });

  it('the copy this machine pushed, pulled by id, is not foreign (exit 0)', async () => {
    const { mineId } = await swapped('s.bctl');
    const r = await cli(['pull', '-o', join(home, 'mine.bctl'), '--', mineId]);
    expect(r.exitCode, r.stderr).toBe(0);
  });
});

describe('hostile names and server messages never reach the terminal raw', () => {
  it('drive list, pull and their warnings show an escaped name; --json keeps it exact', async () => {
    const folder = await folderWith('plain.bctl', archiveLikeBytes(10_000));
    const evil = fake.addFile({ name: EVIL, parents: [folder] }, archiveLikeBytes(20_000));
    fake.addFile({ name: EVIL, parents: [folder] }, archiveLikeBytes(20_000));

    const list = await cli(['drive', 'list']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).not.toMatch(RAW_CONTROL);
    expect(list.stdout).toContain('x\\e[2J\\e]52;c;cm0gLXJmIH4=\\x07\\u202eppa.bctl');
    const json = onlyJson<{ files: Array<{ name: string }> }>(await cli(['drive', 'list', '--json']));
    expect(json.files.filter((f) => f.name === EVIL)).toHaveLength(2);

    // By id: the older duplicate; the name is not a safe local file name, so -o is needed.
    const noOut = await cli(['pull', '--', evil.id]);
    expect(noOut.exitCode).toBe(2);
    expect(noOut.stderr).not.toMatch(RAW_CONTROL);
    expect(noOut.stderr).toMatch(/is not a safe local file name: give -o FILE/);
    const pulled = await cli(['pull', '-o', join(home, 'evil.bctl'), '--', evil.id]);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    expect(pulled.stderr).not.toMatch(RAW_CONTROL);
    expect(pulled.stderr).toContain('Pulled x\\e[2J');

    const rm = await cli(['drive', 'rm', EVIL]);
    expect(rm.exitCode).toBe(2);
    expect(rm.stderr).not.toMatch(RAW_CONTROL);
    const prune = await cli(['drive', 'prune', '--keep', '1']);
    expect(prune.exitCode, prune.stderr).toBe(0);
    expect(prune.stdout + prune.stderr).not.toMatch(RAW_CONTROL);
  });

  it("a server error message and reason carrying escapes are shown escaped (exit 8)", async () => {
    const faults: Fault[] = [{ on: 'list', action: { status: 400, reason: 'bad\u001b]52;c;aGk=\u0007\u009b2J' } }];
    fake.inject(...faults);
    const r = await cli(['drive', 'list']);
    expect(r.exitCode).toBe(8);
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    expect(r.stderr).toBe('backupctl: Google Drive rejected the list (400 bad\\e]52;c;aGk=\\x07\\x9b2J): fake fault: bad\\e]52;c;aGk=\\x07\\x9b2J\n');
  });

  it('the logged-in user name from about.get is shown escaped', async () => {
    fake.inject({ on: 'about', action: { json: { user: { displayName: 'Eve\u001b[1A\u001b[2KLogged in as Alice', emailAddress: 'eve@example.com' } } } });
    const r = await cli(['drive', 'status']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(RAW_CONTROL);
    expect(r.stderr).toContain('Logged in to Google Drive as Eve\\e[1A\\e[2KLogged in as Alice <eve@example.com>');
  });
});
