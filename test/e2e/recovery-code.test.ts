// `backupctl recovery-code new|check` through the built CLI (run `npx tsc -p .` first; `npm test`
// does). The interactive prompt is driven through a real pseudo-terminal made by script(1).
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BIN, STACK_TRACE, makeHome, onlyJson, runCli } from '../support/cli.js';

const CODE_RE = /[0-9A-HJKMNP-TV-Z]{5}(?:-[0-9A-HJKMNP-TV-Z]{5}){6}/g;

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;

/** Run the CLI with this test's config and a stdin that is not a terminal. */
const cli = (args: string[], o: { env?: Record<string, string>; timeoutMs?: number } = {}) => runCli(args, { configDir, ...o });

async function config() {
  return JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8')) as {
    recipients: Array<{ type: string; label: string; publicKey: string; created: string; params?: unknown }>;
  };
}

/** A code made through the CLI, returned with its JSON result. */
async function newCode(label?: string) {
  const r = await cli(['recovery-code', 'new', '--json', ...(label ? ['--label', label] : [])]);
  expect(r.exitCode, r.stderr).toBe(0);
  return onlyJson<{ ok: true; code: string; label: string; fingerprint: string; publicKey: string }>(r);
}

/** Flip one data symbol of group `g` (1-based) to another alphabet symbol. */
function typo(code: string, g: number): string {
  const i = (g - 1) * 6 + 1;
  return code.slice(0, i) + (code[i] === 'A' ? 'B' : 'A') + code.slice(i + 1);
}

beforeEach(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-rc-e2e-'));
});
afterEach(() => cleanup());

describe('recovery-code new', () => {
  it('shows the code exactly once, records only its public key, in a 0600 config', async () => {
    const r = await cli(['recovery-code', 'new']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const codes = r.stdout.match(CODE_RE) ?? [];
    expect(codes).toHaveLength(1);
    const today = new Date();
    const label = `recovery code ${today.getFullYear()}-${String(today.getMonth() + 1).padStart(2, '0')}-${String(today.getDate()).padStart(2, '0')}`;
    expect(r.stdout).toContain(`"${label}"`);
    expect(r.stdout).toMatch(/fingerprint [0-9a-f]{8}\)/);

    expect((await stat(configDir)).mode & 0o777).toBe(0o700);
    expect((await stat(join(configDir, 'config.json'))).mode & 0o777).toBe(0o600);
    const raw = await readFile(join(configDir, 'config.json'), 'utf8');
    const code = codes[0]!;
    expect(raw).not.toContain(code);
    expect(raw).not.toContain(code.replace(/-/g, '').slice(0, 8)); // nor its data symbols
    const { recipients } = await config();
    expect(recipients).toHaveLength(1);
    expect(recipients[0]).toMatchObject({ type: 'recovery', label });
    expect(recipients[0]!.params).toBeUndefined();

    // The code shown is the one recorded.
    const c = await cli(['recovery-code', 'check'], { env: { BACKUPCTL_RECOVERY_CODE: code } });
    expect(c.exitCode, c.stderr).toBe(0);
    expect(c.stdout).toContain(`"${label}"`);
  });

  it('--json prints one object holding the code; labels are unique', async () => {
    const a = await newCode();
    expect(a.code).toMatch(CODE_RE);
    const b = await newCode();
    expect(b.label).toBe(`${a.label} (2)`);
    expect(b.code).not.toBe(a.code);
    const named = await newCode('safe deposit box');
    expect(named.label).toBe('safe deposit box');
    const { recipients } = await config();
    expect(recipients.map((x) => x.publicKey)).toEqual([a.publicKey, b.publicKey, named.publicKey]);

    const dup = await cli(['recovery-code', 'new', '--label', 'safe deposit box']);
    expect(dup.exitCode).toBe(2);
    expect(dup.stderr).toBe(
      'backupctl: a recipient labelled "safe deposit box" exists already in the config: choose another --label\n',
    );
    expect(dup.stdout).toBe('');
    expect((await config()).recipients).toHaveLength(3);
  });

  it('--output writes a new 0600 file, prints nothing secret, and never overwrites', async () => {
    const out = join(home, 'code.txt');
    const r = await cli(['recovery-code', 'new', '--output', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(CODE_RE);
    expect(r.stdout).toContain(out);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const written = await readFile(out, 'utf8');
    expect(written).toMatch(/^[0-9A-Z-]{41}\n$/);

    const again = await cli(['recovery-code', 'new', '--output', out, '--json']);
    expect(again.exitCode).toBe(6);
    expect(onlyJson<{ error: unknown }>(again).error).toMatchObject({ exitCode: 6, kind: 'io' });
    expect(again.stderr).toContain('already exists');
    expect(await readFile(out, 'utf8')).toBe(written);
    expect((await config()).recipients).toHaveLength(1);

    const c = await cli(['recovery-code', 'check', '--recovery-code-file', out, '--json']);
    expect(c.exitCode, c.stderr).toBe(0);
    expect(onlyJson(c)).toMatchObject({ ok: true, label: (await config()).recipients[0]!.label });
  });

  it('refuses a config directory writable by others, leaving no code file behind', async () => {
    await mkdir(configDir, { mode: 0o700 });
    await chmod(configDir, 0o777);
    const out = join(home, 'code.txt');
    const r = await cli(['recovery-code', 'new', '--output', out]);
    expect(r.exitCode).toBe(8);
    expect(r.stderr).toMatch(/^backupctl: refusing to use .*: it is writable by group or others .*chmod go-w/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
    await expect(stat(out)).rejects.toThrow(/ENOENT/);
  });
});

describe('recovery-code list and remove', () => {
  it('list shows each code by label, fingerprint (as new printed it) and date, never the code; --json too', async () => {
    const empty = await cli(['recovery-code', 'list']);
    expect(empty).toMatchObject({ exitCode: 0, stdout: 'No recovery code in the config. Make one with: backupctl recovery-code new\n' });
    const a = await newCode('kitchen drawer');
    const b = await newCode('bank');
    const { recipients } = await config();
    const r = await cli(['recovery-code', 'list']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe(`kitchen drawer\t${a.fingerprint}\tcreated ${recipients[0]!.created}\nbank\t${b.fingerprint}\tcreated ${recipients[1]!.created}\n`);
    expect(r.stdout).not.toMatch(CODE_RE);
    const j = onlyJson<{ codes: unknown[] }>(await cli(['recovery-code', 'list', '--json']));
    expect(j).toEqual({ ok: true, codes: [
      { label: 'kitchen drawer', fingerprint: a.fingerprint, created: recipients[0]!.created },
      { label: 'bank', fingerprint: b.fingerprint, created: recipients[1]!.created },
    ] });
  });

  it('remove by label or fingerprint; the last recipient only with --force', async () => {
    const a = await newCode('kitchen drawer');
    const b = await newCode('bank');
    const r = await cli(['recovery-code', 'remove', 'kitchen drawer']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Removed recovery code "kitchen drawer" (${a.fingerprint}) from the config`);
    expect((await config()).recipients.map((e) => e.label)).toEqual(['bank']);

    const last = await cli(['recovery-code', 'remove', b.fingerprint]);
    expect(last.exitCode).toBe(8);
    expect(last.stderr).toBe('backupctl: refusing to remove "bank": it is the last recipient in the config, so create would have nobody to encrypt new archives to; add another first (backupctl recovery-code new, backupctl key enroll), or add --force if that is what you want\n');
    expect((await config()).recipients).toHaveLength(1);
    const forced = onlyJson(await cli(['recovery-code', 'remove', b.fingerprint, '--force', '--json']));
    expect(forced).toEqual({ ok: true, label: 'bank', fingerprint: b.fingerprint });
    expect((await config()).recipients).toEqual([]);
  });
});

describe('recovery-code check', () => {
  it('names the group with a typo, and tells a wrong code from a typo (exit 4 both)', async () => {
    const { code } = await newCode();
    const bad = typo(code, 3);
    const t = await cli(['recovery-code', 'check'], { env: { BACKUPCTL_RECOVERY_CODE: bad } });
    expect(t.exitCode).toBe(4);
    expect(t.stderr).toBe('backupctl: recovery code: group 3 has a typo\n');
    expect(t.stderr).not.toContain(bad.split('-')[2]);

    // Two groups in each other's place: said so, and neither is shown.
    const g = code.split('-');
    [g[1], g[3]] = [g[3]!, g[1]!];
    const s = await cli(['recovery-code', 'check', '--json'], { env: { BACKUPCTL_RECOVERY_CODE: g.join('-') } });
    expect(s.exitCode).toBe(4);
    expect(onlyJson<{ error: { message: string } }>(s).error.message).toBe('recovery code: groups 2 and 4 are swapped');
    for (const group of g) expect(s.stdout + s.stderr).not.toContain(group);

    const other = join(home, 'other.txt');
    const stranger = onlyJson<{ code: string }>(
      await runCli(['recovery-code', 'new', '--json'], { configDir: join(home, 'elsewhere') }),
    );
    await writeFile(other, `${stranger.code.toLowerCase().replace(/-/g, ' ')}\n`, { mode: 0o600 });
    const w = await cli(['recovery-code', 'check', '--recovery-code-file', other]);
    expect(w.exitCode).toBe(4);
    expect(w.stderr).toMatch(/^backupctl: the code is well-formed \(fingerprint [0-9a-f]{8}\) but matches no recovery code in the config/);
  });

  it('with stdin not a terminal and no code given, fails at once with exit 2', async () => {
    await newCode();
    const started = Date.now();
    const r = await cli(['recovery-code', 'check'], { timeoutMs: 10_000 }); // throws on timeout
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe(
      'backupctl: no recovery code given and stdin is not a terminal: use --recovery-code-file FILE or BACKUPCTL_RECOVERY_CODE\n',
    );
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('never takes the code from argv', async () => {
    const { code } = await newCode();
    const r = await cli(['recovery-code', 'check', code]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('too many arguments');
  });
});

// A real terminal: script(1) runs the CLI on a pseudo-terminal and relays our pipe to it.
describe.runIf(process.platform === 'linux')('recovery-code check on a terminal', () => {
  /** Run `check` on a pty; each step waits for `when` in the output, then types `keys`. */
  function onTerminal(steps: Array<{ when: string; keys: string[] }>) {
    const cmd = `'${process.execPath}' '${BIN}' recovery-code check`;
    const child = execa('script', ['-qec', cmd, '/dev/null'], {
      reject: false,
      timeout: 20_000,
      env: { BACKUPCTL_CONFIG_DIR: configDir, TERM: 'xterm' },
      extendEnv: false,
    });
    let output = '';
    child.stdout!.on('data', (d: Buffer) => {
      output += d.toString();
      const next = steps[0];
      if (next && output.includes(next.when)) {
        steps.shift();
        output = '';
        // Keys are typed 300 ms apart, as by a person: typing while the prompt is still
        // validating is ignored, and a control key sent along with text is taken literally.
        next.keys.forEach((k, i) => setTimeout(() => child.stdin!.write(k), 300 * (i + 1)));
      }
    });
    return child;
  }

  it('prompts with hidden input and accepts the typed code', async () => {
    const { code, label } = await newCode();
    const r = await onTerminal([{ when: 'Recovery code:', keys: [`${code.toLowerCase()}\r`] }]);
    expect(r.exitCode, r.stdout as string).toBe(0);
    expect(r.stdout).toContain(`The code is correct: it is recovery code "${label}"`);
    expect(r.stdout).not.toContain(code.toLowerCase()); // not echoed
  });

  it('names the group with a typo at the prompt and lets the user fix it', async () => {
    const { code, label } = await newCode();
    const bad = typo(code, 6);
    const r = await onTerminal([
      { when: 'Recovery code:', keys: [`${bad}\r`] },
      // Ctrl-U clears the kept input; then the right code.
      { when: 'group 6 has a typo', keys: ['\x15', `${code}\r`] },
    ]);
    expect(r.exitCode, r.stdout as string).toBe(0);
    expect(r.stdout).toContain(`The code is correct: it is recovery code "${label}"`);
  });

  it('Ctrl-C at the prompt exits 130', async () => {
    await newCode();
    const r = await onTerminal([{ when: 'Recovery code:', keys: ['\x03'] }]);
    expect(r.exitCode).toBe(130);
    expect(r.stdout).toContain('backupctl: interrupted');
  });
});
