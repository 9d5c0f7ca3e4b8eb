// Untrusted text on a terminal: entry paths and link targets (anyone holding a recipient's public
// key can write an archive, sealed correctly), labels and parameters from the header that is
// readable and writable without a key, names found by create. In human output every control
// character, DEL, C1 control and bidi override is shown as a visible escape (backupctl(1)
// OUTPUT); --json keeps every string exact. Header labels that break the label rule are refused.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { mkdir, readdir, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import { makeHome, newRecoveryCode, onlyJson, runCli, type CliResult, type RecoveryCode } from '../support/cli.js';
import { craftArchive, editedSlots, type EntrySpec } from '../support/craft.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;

/** Every byte or character a terminal acts on: C0 but newline, DEL, C1, bidi/format controls. */
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u;

const CLEAR = '\x1b[2J\x1b[H';
const OSC52 = '\x1b]52;c;ZWNobyBvd25lZA==\x07';
const FORGED = '\r\n(header authenticated)';
/** Entry names a hostile archive holds (all valid names on Linux). */
const FILE = `evil${CLEAR}\u202etxt.exe`;
const LINK = `clip${OSC52}`;
const TARGET = `\u009b31m${FORGED}\x7f`;
const DIR = `dir\u2066\x01`;
const SPECS: EntrySpec[] = [
  { path: FILE, data: 'hostile name\n' },
  { path: LINK, link: TARGET },
  { path: DIR, dir: true },
  { path: `${DIR}/inner\x9b2J.txt`, data: 'inner\n' },
];

let archive: string;

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-escapes-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'), 'paper');
  withCode = ['--recovery-code-file', rc.file];
  // A second slot of the security-key type whose public parameters are hostile text: inspect
  // shows them without any key. (Its label is valid: labels are checked below.)
  const fido2ish = editedSlots(recipientFromEntry(recoveryRecipientEntry(rc.code, 'blue')), (s) => ({
    ...s, type: 'fido2', params: { rp: `backupctl${OSC52}`, uv: false, aaguid: `\u009b2J${FORGED}`, credential: `AAAA${CLEAR}` },
  }));
  archive = await craftArchive(join(home, 'hostile.bctl'), [recipientFromEntry(recoveryRecipientEntry(rc.code, 'paper')), fido2ish], SPECS);
});
afterAll(() => cleanup());

let withCode: string[];
const run = (args: string[]) => runCli(args, { configDir });

function expectNoRawControl(r: CliResult, what: string) {
  expect(r.stdout, `${what}: stdout`).not.toMatch(RAW_CONTROL);
  expect(r.stderr, `${what}: stderr`).not.toMatch(RAW_CONTROL);
}

describe('entry paths, link targets and header parameters in human output', () => {
  it('inspect (no key) shows the hostile slot parameters escaped', async () => {
    const r = await run(['inspect', archive]);
    expect(r.exitCode, r.stderr).toBe(0);
    expectNoRawControl(r, 'inspect');
    expect(r.stdout).toContain('rp backupctl\\e]52;c;ZWNobyBvd25lZA==\\x07 uv no aaguid \\x9b2J\\r\\n(header authenticated)');
    // The one genuine status line is the first; no line anywhere else claims authentication.
    expect(r.stdout.split('\n').filter((l) => l.includes('(header authenticated)')).map((l) => l.startsWith('    2. fido2'))).toEqual([true]);
  });

  it('inspect --list shows paths and targets escaped, one line per entry', async () => {
    const r = await run(['inspect', '--list', archive, ...withCode]);
    expect(r.exitCode, r.stderr).toBe(0);
    expectNoRawControl(r, 'inspect --list');
    const lines = r.stdout.split('\n');
    expect(lines.filter((l) => /^    [-dl]r/.test(l)).map((l) => l.replace(/^.{48}/, ''))).toEqual([
      'evil\\e[2J\\e[H\\u202etxt.exe',
      'clip\\e]52;c;ZWNobyBvd25lZA==\\x07 -> \\x9b31m\\r\\n(header authenticated)\\x7f',
      'dir\\u2066\\x01',
      'dir\\u2066\\x01/inner\\x9b2J.txt',
    ]);
  });

  it('--json keeps every path, target and parameter exact', async () => {
    const j = onlyJson<{ slots: Array<{ params: Record<string, unknown> }>; entries: Array<{ path: string; target?: string }> }>(
      await run(['inspect', '--list', '--json', archive, ...withCode]),
    );
    expect(j.entries.map((e) => e.path)).toEqual(SPECS.map((s) => s.path));
    expect(j.entries[1]!.target).toBe(TARGET);
    expect(j.slots[1]!.params).toMatchObject({ rp: `backupctl${OSC52}`, aaguid: `\u009b2J${FORGED}` });
  });

  it('restore writes the exact names; verify --against names differences escaped', async () => {
    const dest = join(home, 'dest');
    const r = await run(['restore', archive, '-d', dest, ...withCode]);
    expect(r.exitCode, r.stderr).toBe(0);
    expectNoRawControl(r, 'restore');
    expect((await readdir(dest)).sort()).toEqual([FILE, LINK, DIR].sort());
    expect(await readlink(join(dest, LINK))).toBe(TARGET);

    await writeFile(join(dest, FILE), 'changed\n');
    const v = await run(['verify', archive, '--against', dest, ...withCode]);
    expect(v.exitCode, v.stderr).toBe(3);
    expectNoRawControl(v, 'verify --against');
    expect(v.stdout).toMatch(/^evil\\e\[2J\\e\[H\\u202etxt\.exe: /);

    // A second restore into the same DIR refuses: the error line names an entry, escaped.
    const again = await run(['restore', archive, '-d', dest, ...withCode]);
    expect(again.exitCode).toBe(6);
    expectNoRawControl(again, 'restore over existing');
    expect(again.stderr).toMatch(/^backupctl: [^\n]*\n$/);
  });

  it('create warns about a skipped name escaped; --json keeps it exact', async () => {
    const src = join(home, 'src');
    await mkdir(src);
    await writeFile(join(src, 'ok.txt'), 'ok\n');
    const fifo = `fifo${OSC52}${FORGED}`;
    await execa('mkfifo', [join(src, fifo)]);
    const r = await run(['create', src, '-o', join(home, 'c.bctl')]);
    expect(r.exitCode, r.stderr).toBe(3);
    expectNoRawControl(r, 'create');
    expect(r.stderr).toContain(`fifo\\e]52;c;ZWNobyBvd25lZA==\\x07\\r\\n(header authenticated): not a regular file`);
    const j = await run(['create', src, '-o', join(home, 'c2.bctl'), '--json']);
    expect(j.exitCode).toBe(3);
    expect(onlyJson<{ warnings: string[] }>(j).warnings).toEqual([`skipped ${join(src, fifo)}: not a regular file, directory or symbolic link`]);
  });
});

describe('header labels that break the label rule are refused (exit 5), never shown', () => {
  const LABELS: Array<[string, string]> = [
    ['ESC (clear screen)', `paper${CLEAR}`],
    ['OSC 52 (clipboard)', `paper${OSC52}`],
    ['a forged line', `paper${FORGED}`],
    ['C1 CSI', 'paper\u009b2J'],
    ['a bidi override', 'paper\u202eexe.txt'],
    ['DEL', 'paper\x7f'],
    ['too long (101)', 'p'.repeat(101)],
    ['empty', ''],
    ['surrounding blanks', ' paper '],
  ];
  it.each(LABELS)('%s: inspect (no key) and restore exit 5 in one line', async (_name, label) => {
    const file = await craftArchive(join(home, `label-${Math.random().toString(36).slice(2)}.bctl`),
      [editedSlots(recipientFromEntry(recoveryRecipientEntry(rc.code, 'paper')), (s) => ({ ...s, label }))], [{ path: 'a.txt' }]);
    const dest = join(home, `dest-label-${Math.random().toString(36).slice(2)}`);
    const runs = await Promise.all([
      run(['inspect', file]),
      run(['restore', file, '-d', dest, ...withCode]),
    ]);
    for (const r of runs) {
      expect(r.exitCode, r.stderr).toBe(5);
      expect(r.stdout).toBe('');
      expect(r.stderr).toBe('backupctl: header: the label of slot 1 is not 1 to 100 visible characters on one line (backupctl writes no such label)\n');
    }
    const j = await run(['inspect', '--json', file]);
    expect(onlyJson<{ error: { kind: string } }>(j).error.kind).toBe('corrupt');
  });

  it('create refuses to write such a label from a --recipients-file (exit 2), so it never makes one', async () => {
    const entry = recoveryRecipientEntry(rc.code, `paper${OSC52}`);
    const list = join(home, 'recipients.json');
    await writeFile(list, JSON.stringify({ recipients: [entry] }));
    const src = join(home, 'small');
    await mkdir(src);
    await writeFile(join(src, 'a.txt'), 'a\n');
    const out = join(home, 'never.bctl');
    const r = await runCli(['create', src, '-o', out, '--no-config', '--recipients-file', list], { configDir });
    expect(r.exitCode, r.stderr).toBe(2);
    expect(r.stderr).toBe('backupctl: recipient "paper\\u001b]52;c;ZWNobyBvd25lZA==\\u0007": a label must be 1 to 100 visible characters on one line\n');
    expect(await readdir(home)).not.toContain('never.bctl');
  });
});
