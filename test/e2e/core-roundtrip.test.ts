// create → restore through the built CLI (run `npx tsc -p .` first; `npm test` does): a realistic
// export comes back byte-identical with modes, ms mtimes, empty dirs, unicode names and links;
// from a file, from stdin and through a pipe; whole, one file, or a subset; never clobbering.
import { beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { chmod, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NFC_NAME, NFD_NAME, STACK_TRACE, exists, makeHome, newRecoveryCode, onlyJson, runCli, runCliBytes, snapshot, startCli, type SnapEntry } from '../support/cli.js';
import { archiveHome } from '../support/home.js';

const fx = archiveHome('backupctl-core-rt-', { label: 'paper copy' });
let srcSnap: Record<string, SnapEntry>;

const cli = (args: string[], o: { env?: Record<string, string>; input?: string | null; inputFile?: string } = {}) =>
  runCli(args, { configDir: fx.configDir, ...o });
/** Unlock options for the archive's code. */
const withCode = () => ['--recovery-code-file', fx.rc.file];

beforeAll(async () => {
  srcSnap = await snapshot(fx.src);
});

describe('round trip', () => {
  it('restores a realistic export byte-identical: contents, modes, ms mtimes, empty dirs, unicode names, links', async () => {
    const dest = join(fx.home, 'rt-file');
    const r = await cli(['restore', fx.archive, '-d', dest, ...withCode()]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    const got = await snapshot(dest);
    expect(got).toEqual(srcSnap);
    // The properties the comparison covers, spelled out so a weak snapshot cannot pass silently.
    expect(got['Media/WhatsApp Stickers']).toMatchObject({ type: 'dir', mode: 0o755 });
    expect(got['Media/WhatsApp Images/Sent']!.mode).toBe(0o700);
    expect(got['_chat.txt']!.mode).toBe(0o640);
    expect(got['_chat.txt']!.mtimeMs % 1000).not.toBe(0);
    expect(got['latest-photo.jpg']).toMatchObject({ type: 'symlink', target: 'Media/WhatsApp Images/IMG-20240312-WA0001.jpg' });
    expect(got['Media/WhatsApp Documents/dangling-link']).toMatchObject({ type: 'symlink', target: '../nowhere/at all' });
    expect(await readdir(join(dest, 'Media/WhatsApp Documents'))).toContain(NFC_NAME);
    const nfd = await readdir(join(dest, 'Media/WhatsApp Documents/Private'));
    expect(nfd).toEqual([NFD_NAME]); // stored and restored as the exact bytes, not normalised
    expect(NFD_NAME).not.toBe(NFD_NAME.normalize('NFC'));
  });

  it('stores symlinks as links: the link target is never read into the archive', async () => {
    const tree = join(fx.home, 'links');
    await mkdir(tree);
    const secret = join(fx.home, 'outside-secret.txt');
    await writeFile(secret, 'SECRET-OUTSIDE-THE-EXPORT');
    await symlink(secret, join(tree, 'abs-link'));
    const out = join(fx.home, 'links.bkp');
    expect((await cli(['create', tree, '-o', out])).exitCode).toBe(0);
    const list = await cli(['inspect', '--json', '--list', out, ...withCode()]);
    expect(list.exitCode, list.stderr).toBe(0);
    const j = onlyJson<{ entries: Array<{ path: string; type: string; target?: string; size: number }> }>(list);
    expect(j.entries).toEqual([expect.objectContaining({ path: 'abs-link', type: 'symlink', target: secret, size: Buffer.byteLength(secret) })]);
    const dest = join(fx.home, 'links-out');
    expect((await cli(['restore', out, '-d', dest, ...withCode()])).exitCode).toBe(0);
    expect(await snapshot(dest)).toEqual(await snapshot(tree));
    expect(await snapshot(dest)).toEqual({ 'abs-link': expect.objectContaining({ type: 'symlink', size: Buffer.byteLength(secret), target: secret }) });
  });

  it('restores from standard input (restore -)', async () => {
    const dest = join(fx.home, 'rt-stdin');
    const r = await cli(['restore', '-', '-d', dest, ...withCode()], { inputFile: fx.archive });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await snapshot(dest)).toEqual(srcSnap);
  });

  it('create -o - writes only the archive to stdout (messages go to stderr)', async () => {
    const r = await runCliBytes(['create', fx.src, '-o', '-'], { configDir: fx.configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.subarray(0, 8).toString('latin1')).toBe('BKPCTL\r\n');
    expect(r.stderr).toMatch(/^Wrote standard output: /);
    const file = join(fx.home, 'from-stdout.bkp');
    await writeFile(file, r.stdout);
    const v = await cli(['verify', '--json', file, ...withCode()]);
    expect(onlyJson(v)).toMatchObject({ ok: true, entries: Object.keys(srcSnap).length });
  });

  it('create -o - piped into restore -', async () => {
    const dest = join(fx.home, 'rt-pipe');
    const create = startCli(['create', fx.src, '-o', '-'], { configDir: fx.configDir });
    const restore = startCli(['restore', '-', '-d', dest, ...withCode()], { configDir: fx.configDir, input: null });
    const r = await create.pipe(restore);
    expect(r.pipedFrom[0]!.exitCode, String(r.pipedFrom[0]!.stderr)).toBe(0);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(await snapshot(dest)).toEqual(srcSnap);
  });
});

describe('partial restore (--only)', () => {
  it('restores a single file and nothing else but its parent directories', async () => {
    const dest = join(fx.home, 'only-one');
    const p = 'Media/WhatsApp Images/Sent/IMG-20240313-WA0010.jpg';
    const r = await cli(['restore', fx.archive, '-d', dest, '--only', p, ...withCode()]);
    expect(r.exitCode, r.stderr).toBe(0);
    const got = await snapshot(dest, { times: false });
    expect(Object.keys(got).sort()).toEqual(['Media', 'Media/WhatsApp Images', 'Media/WhatsApp Images/Sent', p]);
    expect(got[p]).toEqual({ ...srcSnap[p]!, mtimeMs: 0 });
    expect(await readFile(join(dest, p))).toEqual(await readFile(join(fx.src, p)));
  });

  it('restores a subset: a directory (with everything under it) plus a file', async () => {
    const dest = join(fx.home, 'only-subset');
    const r = await cli(['restore', fx.archive, '-d', dest, '--only', 'Media/WhatsApp Voice Notes', '_chat.txt', ...withCode()]);
    expect(r.exitCode, r.stderr).toBe(0);
    const got = await snapshot(dest);
    const want = Object.fromEntries(
      Object.entries(srcSnap).filter(([k]) => k === '_chat.txt' || k.startsWith('Media/WhatsApp Voice Notes')),
    );
    for (const [k, v] of Object.entries(want)) expect(got[k], k).toEqual(v);
    expect(Object.keys(got).sort()).toEqual([...Object.keys(want), 'Media'].sort());
  });

  it('--only on a stream (restore -) too', async () => {
    const dest = join(fx.home, 'only-stdin');
    const r = await cli(['restore', '-', '-d', dest, '--only', '_chat.txt', ...withCode()], { inputFile: fx.archive });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(Object.keys(await snapshot(dest))).toEqual(['_chat.txt']);
  });

  it('--only matching nothing is a usage error (exit 2) and leaves no DIR behind', async () => {
    const dest = join(fx.home, 'only-nothing');
    const r = await cli(['restore', fx.archive, '-d', dest, '--only', 'Media/nope.jpg', ...withCode()]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/^backupctl: .*nothing in the archive matches Media\/nope\.jpg/);
    expect(await exists(dest)).toBe(false);
  });
});

describe('no-clobber', () => {
  it('refuses to overwrite an existing file (exit 6, DIR unchanged); --force replaces it', async () => {
    const dest = join(fx.home, 'clobber');
    await mkdir(join(dest, 'Media'), { recursive: true });
    await writeFile(join(dest, '_chat.txt'), 'my own edits\n');
    await writeFile(join(dest, 'Media', 'keep.txt'), 'unrelated\n');
    const before = await snapshot(dest);
    const r = await cli(['restore', fx.archive, '-d', dest, ...withCode()]);
    expect(r.exitCode).toBe(6);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^backupctl: .*already exist.*_chat\.txt.*--force/)]);
    expect(await snapshot(dest)).toEqual(before);

    const f = await cli(['restore', fx.archive, '-d', dest, '--force', ...withCode()]);
    expect(f.exitCode, f.stderr).toBe(0);
    expect(await readFile(join(dest, '_chat.txt'))).toEqual(await readFile(join(fx.src, '_chat.txt')));
    const after = await snapshot(dest);
    expect(after['Media/keep.txt']).toEqual(before['Media/keep.txt']); // merged, not wiped
    for (const [k, v] of Object.entries(srcSnap)) {
      if (k !== 'Media') expect(after[k], k).toEqual(v); // Media existed already: its own mtime/mode stay
    }
    expect(await readdir(dest)).not.toContainEqual(expect.stringMatching(/^\.backupctl-restore-/)); // staging removed
  });

  it('strips setuid and setgid bits on restore (the sticky bit and permissions are kept)', async () => {
    const tree = join(fx.home, 'suid');
    await mkdir(join(tree, 'shared'), { recursive: true });
    await writeFile(join(tree, 'tool'), '#!/bin/sh\n');
    await chmod(join(tree, 'tool'), 0o6755);
    await chmod(join(tree, 'shared'), 0o3775);
    const out = join(fx.home, 'suid.bkp');
    expect((await cli(['create', tree, '-o', out])).exitCode).toBe(0);
    // The archive records the modes as they were...
    const list = onlyJson<{ entries: Array<{ path: string; mode: string }> }>(await cli(['inspect', '--json', '--list', out, ...withCode()]));
    expect(list.entries.map((e) => [e.path, e.mode])).toEqual([['shared', '3775'], ['tool', '6755']]);
    // ...and restore drops set-id bits.
    const dest = join(fx.home, 'suid-out');
    expect((await cli(['restore', out, '-d', dest, ...withCode()])).exitCode).toBe(0);
    const got = await snapshot(dest);
    expect(got['tool']!.mode).toBe(0o755);
    expect(got['shared']!.mode).toBe(0o1775);
  });
});

describe('unlocking', () => {
  it('a well-formed code that is not in the archive: exit 4, one line', async () => {
    const other = await makeHome('backupctl-core-rt-other-');
    try {
      const wrong = await newRecoveryCode(other.configDir, join(other.home, 'code.txt'));
      const dest = join(fx.home, 'wrong-code');
      const r = await cli(['restore', fx.archive, '-d', dest, '--recovery-code-file', wrong.file]);
      expect(r.exitCode).toBe(4);
      expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^backupctl: .*recovery code does not open this archive/)]);
      expect(await exists(dest)).toBe(false);
      // The same through the environment variable, for verify.
      const v = await cli(['verify', fx.archive], { env: { BACKUPCTL_RECOVERY_CODE: wrong.code } });
      expect(v.exitCode).toBe(4);
    } finally {
      await other.cleanup();
    }
  });

  it('a typo in the code: exit 4 naming the group', async () => {
    // Change one data symbol of group 3 to another alphabet symbol.
    const i = 2 * 6 + 1;
    const typo = fx.rc.code.slice(0, i) + (fx.rc.code[i] === 'A' ? 'B' : 'A') + fx.rc.code.slice(i + 1);
    const r = await cli(['restore', fx.archive, '-d', join(fx.home, 'typo')], { env: { BACKUPCTL_RECOVERY_CODE: typo } });
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toBe('backupctl: recovery code: group 3 has a typo\n');
    expect(r.stderr).not.toContain(typo.split('-')[2]); // the group is named, never shown
    expect(await exists(join(fx.home, 'typo'))).toBe(false);
  });

  it('no code and stdin not a terminal: exit 2 at once, never a hang', async () => {
    for (const [args, inputFile] of [
      [['restore', fx.archive, '-d', join(fx.home, 'nocode')]],
      [['restore', '-', '-d', join(fx.home, 'nocode')], fx.archive], // stdin is the archive: no prompt possible
      [['verify', fx.archive]],
      [['inspect', '--list', fx.archive]],
    ] as Array<[string[], string?]>) {
      const t0 = Date.now();
      const r = await runCli(args, { configDir: fx.configDir, timeoutMs: 10_000, ...(inputFile ? { inputFile } : {}) });
      expect(Date.now() - t0).toBeLessThan(5_000);
      expect(r.exitCode, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/no recovery code given and stdin is not a terminal: use --recovery-code-file FILE or BACKUPCTL_RECOVERY_CODE/);
    }
    expect(await exists(join(fx.home, 'nocode'))).toBe(false);
  });
});

describe('verify --against', () => {
  it('names each difference from a directory: exit 3, and --json lists them', async () => {
    const dest = join(fx.home, 'against');
    expect((await cli(['restore', fx.archive, '-d', dest, ...withCode()])).exitCode).toBe(0);
    expect((await cli(['verify', fx.archive, '--against', dest, ...withCode()])).exitCode).toBe(0);
    await writeFile(join(dest, '_chat.txt'), 'edited\n');
    await rm(join(dest, 'Media/WhatsApp Video/VID-20240312-WA0003.mp4'));
    await writeFile(join(dest, 'Media/new.txt'), 'new\n');
    await chmod(join(dest, 'Media/WhatsApp Documents/run-me.sh'), 0o700);
    const r = await cli(['verify', fx.archive, '--against', dest, ...withCode()]);
    expect(r.exitCode, r.stderr).toBe(3);
    expect(r.stdout.split('\n').filter(Boolean).sort()).toEqual([
      'Media/WhatsApp Documents/run-me.sh: mode 700 vs 755 in the archive',
      'Media/WhatsApp Video/VID-20240312-WA0003.mp4: missing from the directory',
      'Media/new.txt: not in the archive',
      expect.stringMatching(/^_chat\.txt: size 7 vs \d+ in the archive$/),
    ]);
    const j = onlyJson<{ ok: boolean; differences: Array<{ path: string }> }>(await cli(['verify', '--json', fx.archive, '--against', dest, ...withCode()]));
    expect(j.ok).toBe(false);
    expect(j.differences.map((d) => d.path).sort()).toEqual(['Media/WhatsApp Documents/run-me.sh', 'Media/WhatsApp Video/VID-20240312-WA0003.mp4', 'Media/new.txt', '_chat.txt']);
  });
});

describe('inspect', () => {
  it('without a key shows the envelope and the slots, marked NOT authenticated', async () => {
    const r = await cli(['inspect', fx.archive]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/header NOT authenticated/);
    expect(r.stdout).toMatch(/format: +1\.0/);
    expect(r.stdout).toMatch(/recovery +"paper copy" .*\[in config: paper copy\]/);
    expect(r.stdout).not.toContain('_chat.txt'); // names are private: only inside the payload
    // A machine whose config lacks the recipient marks the slot.
    const bare = await makeHome('backupctl-core-rt-bare-');
    try {
      const b = await runCli(['inspect', fx.archive], { configDir: bare.configDir });
      expect(b.stdout).toMatch(/"paper copy" .*\[not in local config\]/);
    } finally {
      await bare.cleanup();
    }
  });

  it('--list unlocks and lists every entry', async () => {
    const r = await cli(['inspect', '--list', fx.archive, ...withCode()]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/header authenticated/);
    expect(r.stdout).toMatch(/entries \(\d+\):/);
    expect(r.stdout).toMatch(/^ +-rw-r----- +\d+ .* _chat\.txt$/m);
    expect(r.stdout).toMatch(/^ +l[-rwx]{9} .* latest-photo\.jpg -> Media\/WhatsApp Images\/IMG-20240312-WA0001\.jpg$/m);
    expect(r.stdout).toMatch(/^ +drwxr-xr-x .* Media\/WhatsApp Stickers$/m);
    expect(r.stdout).toContain(NFC_NAME);
    const listed = r.stdout.split('\n').filter((l) => /^ {4}[-dl][-rwx]{9} /.test(l));
    expect(listed).toHaveLength(Object.keys(srcSnap).length);
  });

  it('restore - with nothing on stdin: exit 5, not a hang', async () => {
    const r = await cli(['restore', '-', '-d', join(fx.home, 'empty-stdin'), ...withCode()]);
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toBe('backupctl: standard input is not a backupctl archive\n');
    expect(await exists(join(fx.home, 'empty-stdin'))).toBe(false);
  });

  it('a file that is not an archive: exit 5 "not a backupctl archive"', async () => {
    const r = await cli(['inspect', fx.rc.file]);
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toBe(`backupctl: ${fx.rc.file} is not a backupctl archive\n`);
    const empty = join(fx.home, 'empty.bkp');
    await writeFile(empty, '');
    expect((await cli(['inspect', empty])).exitCode).toBe(5);
  });
});

describe('one fingerprint for a recipient', () => {
  it('recovery-code new, create, inspect, verify and doctor show the same 8 hex digits, the slot tag', async () => {
    expect(fx.rc.fingerprint).toMatch(/^[0-9a-f]{8}$/);
    const c = await cli(['create', fx.src, '-o', join(fx.home, 'fp.bkp')]);
    expect(c.stderr).toContain(`Encrypted to 1 recipient: recovery "paper copy" (${fx.rc.fingerprint})`);
    const i = await cli(['inspect', join(fx.home, 'fp.bkp')]);
    expect(i.stdout).toMatch(new RegExp(`1\\. recovery +"paper copy"  fingerprint ${fx.rc.fingerprint}  \\[in config: paper copy\\]`));
    const ij = onlyJson<{ slots: Array<{ fingerprint: string }> }>(await cli(['inspect', '--json', join(fx.home, 'fp.bkp')]));
    const vj = onlyJson<{ slots: Array<{ fingerprint: string }> }>(await cli(['verify', '--json', join(fx.home, 'fp.bkp'), ...withCode()]));
    const dj = onlyJson<{ recipients: Array<{ fingerprint: string }> }>(await cli(['doctor', '--json']));
    expect([ij.slots[0]!.fingerprint, vj.slots[0]!.fingerprint, dj.recipients[0]!.fingerprint]).toEqual([fx.rc.fingerprint, fx.rc.fingerprint, fx.rc.fingerprint]);
    // It is the slot's tag, readable from the header without any key.
    const head = await readFile(join(fx.home, 'fp.bkp'));
    const slot = JSON.parse(head.subarray(14, 14 + head.readUInt32BE(10)).toString('utf8')).slots[0] as { tag: string };
    expect(Buffer.from(slot.tag, 'base64').toString('hex')).toBe(fx.rc.fingerprint);
  });
});

describe('--json: exactly one object on stdout, errors too', () => {
  it('create, inspect, inspect --list, verify, restore', async () => {
    const out = join(fx.home, 'json.bkp');
    const c = onlyJson<Record<string, unknown>>(await cli(['create', '--json', fx.src, '-o', out]));
    expect(c).toMatchObject({ ok: true, archive: out, skipped: 0, recipients: [{ type: 'recovery', label: 'paper copy', fingerprint: fx.rc.fingerprint }] });
    expect(c.entries).toBe(Object.keys(srcSnap).length);

    const i = onlyJson<Record<string, unknown>>(await cli(['inspect', '--json', out]));
    expect(i).toMatchObject({ ok: true, format: '1.0', authenticated: false, slots: [{ type: 'recovery', label: 'paper copy', inConfig: 'paper copy' }] });
    expect(i.entries).toBeUndefined();

    const l = onlyJson<{ ok: boolean; authenticated: boolean; entries: Array<{ path: string; type: string; mode: string }> }>(
      await cli(['inspect', '--json', '--list', out, ...withCode()]),
    );
    expect(l.authenticated).toBe(true);
    expect(l.entries.find((e) => e.path === 'Media/WhatsApp Documents/run-me.sh')).toMatchObject({ type: 'file', mode: '0755' });

    const v = onlyJson<Record<string, unknown>>(await cli(['verify', '--json', out, ...withCode()]));
    expect(v).toMatchObject({ ok: true, entries: c.entries, files: c.files, differences: [] });

    const dest = join(fx.home, 'json-out');
    const r = onlyJson<Record<string, unknown>>(await cli(['restore', '--json', out, '-d', dest, ...withCode()]));
    expect(r).toMatchObject({ ok: true, entries: c.entries, files: c.files });

    const a = await cli(['verify', '--json', out, '--against', dest, ...withCode()]);
    expect(a.exitCode).toBe(0);
    expect(onlyJson(a)).toMatchObject({ ok: true, differences: [] });
  });

  it('errors: one {ok:false,error:{exitCode,...}} object, the same exit code, and one JSON error line on stderr', async () => {
    const cases: Array<[string[], number]> = [
      [['inspect', '--json', fx.rc.file], 5],
      [['restore', '--json', fx.archive, '-d', join(fx.home, 'json-err')], 2], // no code, stdin not a TTY
      [['verify', '--json', join(fx.home, 'missing.bkp'), ...withCode()], 6],
      [['create', '--json', join(fx.home, 'no-such-dir'), '-o', join(fx.home, 'x.bkp')], 6],
      [['create', '--json', fx.src], 2], // missing -o: a command-line usage error
      [['restore', '--json', fx.archive, '-d', join(fx.home, 'json-err2'), '--only', 'nope', ...withCode()], 2],
    ];
    for (const [args, code] of cases) {
      const r = await cli(args);
      expect(r.exitCode, args.join(' ')).toBe(code);
      const j = onlyJson<{ ok: boolean; error: { exitCode: number; kind: string; message: string } }>(r);
      expect(j.ok, args.join(' ')).toBe(false);
      expect(j.error.exitCode).toBe(code);
      expect(typeof j.error.message).toBe('string');
      expect(r.stderr).not.toMatch(STACK_TRACE);
      // stderr holds only JSON lines, the failure among them as one line (backupctl(1) OUTPUT).
      const lines = r.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { type: string });
      expect(lines.filter((l) => l.type === 'error'), args.join(' ')).toEqual([{ type: 'error', exitCode: code, kind: j.error.kind, message: j.error.message }]);
    }
  });
});

describe('a closed pipe', () => {
  it('inspect --list | head -1 ends quietly (exit 0, no EPIPE trace)', async () => {
    // Enough entries that the listing (> 200 KB) cannot fit in the pipe buffer before head exits.
    const tree = join(fx.home, 'many');
    await mkdir(tree);
    await Promise.all(Array.from({ length: 2000 }, (_, i) => writeFile(join(tree, `IMG-20240312-WA${String(i).padStart(5, '0')}-a-long-name-to-fill-the-pipe.jpg`), '')));
    const out = join(fx.home, 'many.bkp');
    expect((await cli(['create', tree, '-o', out])).exitCode).toBe(0);
    const list = startCli(['inspect', '--list', out, ...withCode()], { configDir: fx.configDir });
    const r = await list.pipe(execa('head', ['-1'], { reject: false }));
    expect(r.exitCode).toBe(0);
    expect(String(r.stdout)).toMatch(/^backupctl archive /);
    const b = r.pipedFrom[0]!;
    expect(b.exitCode, String(b.stderr)).toBe(0);
    expect(String(b.stderr)).toBe('');
  });
});
