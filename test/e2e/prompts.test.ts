// Prompts at a real terminal (a pseudo-terminal, test/support/pty.ts): the recovery-code prompt
// of restore and verify is on the screen, not drawn over by the progress spinner that is already
// running; with the archive on stdin (`... | backupctl restore - -d out`) the prompt is on the
// controlling terminal and the restore succeeds; without any terminal there is no prompt at all.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { BIN, REPO, makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { runInPty } from '../support/pty.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let archive: string;
const SAMPLE = join(REPO, 'fixtures', 'sample-export');

const env = () => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: home, BACKUPCTL_CONFIG_DIR: configDir });
const cli = (...args: string[]) => [process.execPath, BIN, ...args];
/** The prompt inquirer draws (nothing is echoed while typing), with nothing drawn over it. */
const PROMPT_LINE = /^\? Recovery code: \[input is masked\]$/m;

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-prompts-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  archive = join(home, 'sample.bctl');
  const r = await runCli(['create', SAMPLE, '-o', archive], { configDir });
  expect(r.exitCode, r.stderr).toBe(0);
});
afterAll(() => cleanup());

describe('the recovery-code prompt at a terminal', () => {
  it('restore: the prompt is visible while it waits, the code typed is not, and the restore succeeds', async () => {
    const out = join(home, 'out-restore');
    const r = await runInPty(cli('restore', archive, '-d', out), { env: env(), steps: [{ expect: 'Recovery code', send: `${rc.code}\r` }] });
    expect(r.timedOut).toBe(false);
    expect(r.screens[0]).toMatch(PROMPT_LINE);
    expect(r.screens[0]).not.toMatch(/restore:/); // the spinner is stopped while the prompt waits
    expect(r.exitCode, r.final).toBe(0);
    expect(r.final).toMatch(/Restored \d+ entries/);
    expect(r.final).not.toContain(rc.code);
    expect(await snapshot(out)).toEqual(await snapshot(SAMPLE));
  });

  it('verify: the prompt is visible while it waits, and the archive verifies', async () => {
    const r = await runInPty(cli('verify', archive, '--against', SAMPLE), { env: env(), cols: 200, steps: [{ expect: 'Recovery code', send: `${rc.code}\r` }] });
    expect(r.screens[0]).toMatch(PROMPT_LINE);
    expect(r.screens[0]).not.toMatch(/verify:/);
    expect(r.exitCode, r.final).toBe(0);
    expect(r.final).toMatch(/^OK: .*every file hash matches/m);
    expect(r.final).toMatch(/^No differences from /m);
  });

  it('a typo is named under the input and can be fixed there', async () => {
    const groups = rc.code.split('-');
    const wrongSymbol = groups[2]![0] === '0' ? '1' : '0';
    const typo = [...groups.slice(0, 2), wrongSymbol + groups[2]!.slice(1), ...groups.slice(3)].join('-');
    const r = await runInPty(cli('verify', archive), {
      env: env(),
      steps: [
        { expect: 'Recovery code', send: `${typo}\r` },
        // Ctrl-U clears the line (readline), then the right code.
        { expect: 'group 3', send: `\x15${rc.code}\r` },
      ],
    });
    expect(r.screens[0]).toMatch(PROMPT_LINE);
    expect(r.screens[1]).toMatch(/^\? Recovery code: /m);
    expect(r.screens[1]).toMatch(/group 3 has a typo$/m);
    expect(r.exitCode, r.final).toBe(0);
  });
});

describe('restore - with the archive on stdin', () => {
  it('prompts on the controlling terminal (/dev/tty) and restores what came through the pipe', async () => {
    const out = join(home, 'out-pipe');
    const pipeline = `cat '${archive}' | '${process.execPath}' '${BIN}' restore - -d '${out}'`;
    const r = await runInPty(['/bin/sh', '-c', pipeline], { env: env(), steps: [{ expect: 'Recovery code', send: `${rc.code}\r` }] });
    expect(r.screens[0]).toMatch(PROMPT_LINE);
    expect(r.exitCode, r.final).toBe(0);
    expect(r.final).toMatch(/Restored \d+ entries/);
    expect(await snapshot(out)).toEqual(await snapshot(SAMPLE));
  });

  it('with no terminal at all (a session without one, as cron), fails at once with exit 2: no prompt', async () => {
    const r = await runCli(['restore', '-', '-d', join(home, 'out-cron')], { configDir, inputFile: archive });
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe('backupctl: no recovery code given and stdin is not a terminal: use --recovery-code-file FILE or BACKUPCTL_RECOVERY_CODE\n');
  });
});
