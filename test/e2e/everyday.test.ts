// The everyday commands a new user meets: `ls`/`list` as the listing (and "unknown command"
// pointing to it), shell completion generated from the program, --json in every command's --help,
// counts that agree with their nouns, and the README's try-it command for the WhatsApp sample.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO, STACK_TRACE, makeHome, newRecoveryCode, runCli, type RecoveryCode } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let one: string; // an archive of one file
const cli = (...args: string[]) => runCli(args, { configDir });

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-everyday-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  await mkdir(join(home, 'single'));
  await writeFile(join(home, 'single', '_chat.txt'), '12/03/2024, 14:02 - Ana: hi\n');
  one = join(home, 'one.bctl');
});
afterAll(() => cleanup());

describe('counts agree with their nouns', () => {
  it('create, restore, verify and a refused restore of one entry say "1 entry", "1 file", "1 segment"', async () => {
    const c = await cli('create', join(home, 'single'), '-o', one);
    expect(c.exitCode, c.stderr).toBe(0);
    expect(c.stderr).toMatch(new RegExp(`^Wrote ${one}: 1 entry \\(1 file\\), 0\\.0 MB in, `, 'm'));
    expect(c.stderr).toMatch(/^Encrypted to 1 recipient: /m);
    const r = await cli('restore', one, '-d', join(home, 'out1'), '--recovery-code-file', rc.file);
    expect(r.stderr).toMatch(/^Restored 1 entry \(1 file, 0\.0 MB\) into /m);
    const again = await cli('restore', one, '-d', join(home, 'out1'), '--recovery-code-file', rc.file);
    expect(again.exitCode).toBe(6);
    expect(again.stderr).toMatch(/^backupctl: 1 entry already exists in .*\(first: _chat\.txt\); nothing was restored/m);
    const v = await cli('verify', one, '--recovery-code-file', rc.file, '--against', join(home, 'out1'));
    expect(v.stderr).toMatch(/: 1 entry \(1 file, 0\.0 MB\), 1 segment authenticated, every file hash matches/);
    await writeFile(join(home, 'out1', '_chat.txt'), 'changed\n');
    const d = await cli('verify', one, '--recovery-code-file', rc.file, '--against', join(home, 'out1'));
    expect(d.exitCode).toBe(3);
    expect(d.stderr).toMatch(/^1 difference from .*: exit 3$/m);
  });
});

describe('ls and list', () => {
  it('list the entries like inspect --list, with --json the same object', async () => {
    const inspect = await cli('inspect', one, '--list', '--recovery-code-file', rc.file);
    expect(inspect.exitCode, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/^ {4}-rw-r--r-- +28 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d _chat\.txt$/m);
    for (const name of ['ls', 'list']) {
      const r = await cli(name, one, '--recovery-code-file', rc.file);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toBe(inspect.stdout);
    }
    const j1 = JSON.parse((await cli('ls', one, '--json', '--recovery-code-file', rc.file)).stdout);
    const j2 = JSON.parse((await cli('inspect', one, '--list', '--json', '--recovery-code-file', rc.file)).stdout);
    expect(j1).toEqual(j2);
    expect(j1.entries.map((e: { path: string }) => e.path)).toEqual(['_chat.txt']);
  });

  it('an unknown command points to the listing, exit 2', async () => {
    const r = await cli('tree', one);
    expect(r.exitCode).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe("backupctl: unknown command 'tree'; to list an archive's entries: backupctl ls FILE");
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });
});

describe('--help', () => {
  it('every command and subcommand lists --json', async () => {
    // The command paths, from the bash completion table (itself generated from the program).
    const bash = (await cli('completion', 'bash')).stdout;
    const paths = [...bash.matchAll(/^ {4}'(\/[^']+)'\) subs=/gm)].map((m) => m[1]!.slice(1).split('/'));
    expect(paths.length).toBeGreaterThan(25);
    const missing: string[] = [];
    for (let i = 0; i < paths.length; i += 4) {
      await Promise.all(paths.slice(i, i + 4).map(async (p) => {
        const r = await cli(...p, '--help');
        if (r.exitCode !== 0 || !/^Global Options:\n(.*\n)*? {2}--json +print one JSON result object/m.test(r.stdout)) missing.push(p.join(' '));
      }));
    }
    expect(missing).toEqual([]);
  });
});

describe('shell completion', () => {
  let script: string;
  beforeAll(async () => {
    const r = await cli('completion', 'bash');
    expect(r.exitCode, r.stderr).toBe(0);
    script = join(home, 'backupctl.bash');
    await writeFile(script, r.stdout);
  });
  /** What bash offers for the words typed so far (the last one is being completed). */
  const complete = async (...words: string[]) => {
    const line = ['backupctl', ...words];
    const program = `source '${script}'; COMP_WORDS=(${line.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${line.length - 1}; cd '${home}'; _backupctl; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = await execa('bash', ['-c', program], { reject: false });
    expect(r.stderr).toBe('');
    return String(r.stdout).split('\n').filter(Boolean).sort();
  };

  it('bash: commands, aliases, subcommands, options, option values and files', async () => {
    expect(await complete('re')).toEqual(['recovery-code', 'repo', 'restore']);
    expect(await complete('l')).toEqual(['list', 'ls']);
    expect(await complete('key', '')).toEqual(['enroll', 'list', 'remove', 'test']);
    expect(await complete('restore', '--re')).toEqual(['--recovery-code-file', '--repo']);
    expect(await complete('list', '--j')).toEqual(['--json']);
    expect(await complete('key', 'enroll', '--l')).toEqual(['--label']);
    expect(await complete('completion', '')).toEqual(['bash', 'fish', 'zsh']);
    expect(await complete('restore', 'on')).toEqual(['one.bctl']);
    expect(await complete('restore', one, '-d', 'si')).toEqual(['single']);
  });

  it('zsh loads the same function through bashcompinit; fish gets complete lines for every command', async () => {
    const zsh = (await cli('completion', 'zsh')).stdout;
    expect(zsh.startsWith('#compdef backupctl\n')).toBe(true);
    expect(zsh).toContain('autoload -U +X bashcompinit && bashcompinit\n');
    expect(zsh).toContain(await readFile(script, 'utf8'));
    if (existsSync('/usr/bin/zsh') || existsSync('/bin/zsh')) {
      const r = await execa('zsh', ['-n'], { input: zsh, reject: false });
      expect(r.exitCode, String(r.stderr)).toBe(0);
    }
    const fish = (await cli('completion', 'fish')).stdout;
    expect(fish).toContain("complete -c backupctl -n 'not __fish_seen_subcommand_from create inspect ls list restore verify ");
    expect(fish).toContain("complete -c backupctl -n '__fish_seen_subcommand_from key; and not __fish_seen_subcommand_from enroll list remove test' -a enroll -d ");
    expect(fish).toContain("complete -c backupctl -n '__fish_seen_subcommand_from restore' -l dir -s d -r -F -d 'where to restore'\n");
    expect(fish).toContain("complete -c backupctl -n '__fish_seen_subcommand_from inspect' -l pin-file -r -F -d 'read the security key\\'s PIN from FILE (or set BACKUPCTL_PIN)'\n");
    expect(fish).toContain("complete -c backupctl -l json -d ");
    if (existsSync('/usr/bin/fish')) {
      const r = await execa('fish', ['--no-execute'], { input: fish, reject: false });
      expect(r.exitCode, String(r.stderr)).toBe(0);
    }
  });

  it('an unknown shell is a usage error naming the choices', async () => {
    const r = await cli('completion', 'tcsh');
    expect(r.exitCode).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe("backupctl: command-argument value 'tcsh' is invalid for argument 'shell'. Allowed choices are bash, zsh, fish.");
  });
});

describe('the README', () => {
  // ../shared beside the repository (a worktree under wt/ is one level deeper).
  const shared = [join(REPO, '..', 'shared'), join(REPO, '..', '..', 'shared')].find((d) => existsSync(join(d, 'interop', 'whatsapp-crypt15')));

  it('names the WhatsApp sample, and its try-it command migrates it', async () => {
    const readme = await readFile(join(REPO, 'README.md'), 'utf8');
    const cmd = /^backupctl (migrate-from-64-digit-key \.\.\/shared\/interop\/whatsapp-crypt15\/msgstore\.db\.crypt15 .*?)\s*(#.*)?$/m.exec(readme)?.[1];
    expect(cmd, 'README: the try-it command for the bundled sample').toBeDefined();
    expect(shared, 'the sample in ../shared/interop/whatsapp-crypt15').toBeDefined();
    const args = cmd!.split(/\s+/).map((a) => (a.startsWith('/tmp/') ? join(home, a.slice(5)) : a.replace(/^\.\.\/shared/, shared!)));
    const r = await cli(...args);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^Wrote and verified .*: 1 WhatsApp backup file decrypted, 1 entry \(1 file\)/m);
    expect(readme).not.toMatch(/\.bkp\b/);
  });
});
