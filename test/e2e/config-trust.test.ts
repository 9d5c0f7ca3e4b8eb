// Trust in the config through the built CLI (as root, like CI): the config directory and file must
// be the user's own, real (not symbolic links) and not writable by others, and so must every
// directory above them (util/strict-modes.ts); and every entry is checked when the config is
// loaded (config-schema.ts), by every command and by doctor alike.
import { describe, expect, it } from 'vitest';
import { chmod, chown, mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STACK_TRACE, onlyJson, runCli } from '../support/cli.js';
import { archiveHome } from '../support/home.js';

const fx = archiveHome('backupctl-trust-e2e-', { label: 'paper', perTest: true, archive: false });
const cli = (args: string[], o: { env?: Record<string, string> } = {}) => runCli(args, { configDir: fx.configDir, ...o });
const cfgPath = () => join(fx.configDir, 'config.json');
const OTHER_UID = 4242;

/** create, recovery-code list and doctor all refuse (doctor as a problem), with the same reason. */
async function expectRefused(reason: RegExp, o: { env?: Record<string, string> } = {}) {
  for (const args of [['create', fx.src, '-o', join(fx.home, 'a.bkp')], ['recovery-code', 'list'], ['recovery-code', 'new']]) {
    const r = await cli(args, o);
    expect(r.exitCode, `${args[0]}: ${r.stderr}`).toBe(8);
    expect(r.stderr).toMatch(new RegExp(`^backupctl: refusing to use ${reason.source}\n$`));
    expect(r.stderr).not.toMatch(STACK_TRACE);
    expect(r.stdout).toBe('');
  }
  const d = onlyJson<{ problems: Array<{ problem: string }> }>(await cli(['doctor', '--json'], o));
  expect(d.problems.map((p) => p.problem)).toContainEqual(expect.stringMatching(new RegExp(`^refusing to use ${reason.source}$`)));
}

describe.runIf(process.platform !== 'win32' && process.getuid?.() === 0)('config trust (StrictModes)', () => {
  it('a config file or directory owned by another user is refused (exit 8)', async () => {
    await chown(cfgPath(), OTHER_UID, OTHER_UID);
    await expectRefused(/.*config\.json: it belongs to uid 4242, not to you \(uid 0\); whoever owns it decides who your backups are encrypted to/);
    await chown(cfgPath(), 0, 0);
    await chown(fx.configDir, OTHER_UID, OTHER_UID);
    await expectRefused(/.*config: it belongs to uid 4242, not to you \(uid 0\).*/);
  });

  it('a config file or directory that is a symbolic link is refused, even to a file of ours', async () => {
    await rename(cfgPath(), join(fx.home, 'elsewhere.json'));
    await symlink(join(fx.home, 'elsewhere.json'), cfgPath());
    await expectRefused(/.*config\.json: it is a symbolic link; the config file must be a real file of yours/);

    const real = join(fx.home, 'real-config');
    await rename(fx.configDir, real);
    await symlink(real, fx.configDir);
    await expectRefused(/.*config: it is a symbolic link; the config directory must be a real directory of yours/);
  });

  it('a group-writable directory above the config, or one owned by another user, is refused', async () => {
    // The config inside HOME: directories up to HOME count, HOME included.
    const homeDir = join(fx.home, 'user');
    const dir = join(homeDir, '.config', 'backupctl');
    await mkdir(join(homeDir, '.config'), { recursive: true, mode: 0o700 });
    await rename(fx.configDir, dir);
    const env = { HOME: homeDir, BACKUPCTL_CONFIG_DIR: dir };
    expect((await cli(['recovery-code', 'list'], { env })).exitCode).toBe(0);
    await chmod(join(homeDir, '.config'), 0o775);
    await expectRefused(new RegExp(`the config in ${dir}: ${join(homeDir, '.config')} above it is writable by group or others \\(mode 775\\), who could replace the config; run: chmod go-w ${join(homeDir, '.config')}`), { env });
    await chmod(join(homeDir, '.config'), 0o700);
    await chmod(homeDir, 0o770);
    await expectRefused(new RegExp(`the config in ${dir}: ${homeDir} above it is writable by group or others \\(mode 770\\).*`), { env });
    await chmod(homeDir, 0o700);
    await chown(join(homeDir, '.config'), OTHER_UID, OTHER_UID);
    await expectRefused(new RegExp(`the config in ${dir}: ${join(homeDir, '.config')} above it belongs to uid 4242, neither you nor root, who could replace the config`), { env });
    await chown(join(homeDir, '.config'), 0, 0);
    // Above HOME nothing is checked (as ssh): a loose directory there does not matter.
    await chmod(fx.home, 0o777);
    expect((await cli(['recovery-code', 'list'], { env })).exitCode).toBe(0);
    await chmod(fx.home, 0o700);
  });

  it('outside HOME every directory up to / counts; a sticky one is accepted only if root owns it', async () => {
    const shared = join(fx.home, 'shared');
    await mkdir(shared);
    await chmod(shared, 0o1777); // like /tmp, owned by root: accepted
    const dir = join(shared, 'cfg');
    await rename(fx.configDir, dir);
    const env = { BACKUPCTL_CONFIG_DIR: dir, HOME: join(fx.home, 'nohome') };
    expect((await cli(['recovery-code', 'list'], { env })).exitCode).toBe(0);
    await chown(shared, OTHER_UID, OTHER_UID); // sticky, but its owner may do as they like in it
    await expectRefused(new RegExp(`the config in ${dir}: ${shared} above it belongs to uid 4242, neither you nor root.*`), { env });
    await chown(shared, 0, 0);
    await chmod(shared, 0o777); // not sticky: anyone may rename the config away
    await expectRefused(new RegExp(`the config in ${dir}: ${shared} above it is writable by group or others \\(mode 777\\).*`), { env });
  });

  it('a config directory still to be made under an untrusted directory is refused, and not made', async () => {
    const loose = join(fx.home, 'loose');
    await mkdir(loose);
    await chmod(loose, 0o777);
    const dir = join(loose, 'backupctl');
    const r = await cli(['recovery-code', 'new', '--output', join(fx.home, 'c2.txt')], { env: { BACKUPCTL_CONFIG_DIR: dir, HOME: join(fx.home, 'nohome') } });
    expect(r.exitCode).toBe(8);
    expect(r.stderr).toMatch(/above it is writable by group or others \(mode 777\)/);
    await expect(readFile(join(fx.home, 'c2.txt'))).rejects.toThrow(/ENOENT/);
    await expect(readFile(dir)).rejects.toThrow(/ENOENT/);
  });
});

describe('config entries are checked when loaded', () => {
  type Entry = Record<string, unknown>;
  const bad: Array<[string, (e: Entry) => void, string]> = [
    ['a public key of 31 bytes', (e) => (e.publicKey = Buffer.alloc(31, 7).toString('base64').replace(/=+$/, '')), 'has a publicKey that is not a base64 X25519 public key (32 bytes)'],
    ['a public key that is not base64', (e) => (e.publicKey = 'not base64!'), 'has a publicKey that is not a base64 X25519 public key (32 bytes)'],
    ['a public key that is a number', (e) => (e.publicKey = 42), 'has a publicKey that is not a base64 X25519 public key (32 bytes)'],
    ['an unknown type', (e) => (e.type = 'pgp'), 'has type "pgp" (expected "recovery" or "fido2")'],
    ['an unknown field', (e) => (e.secretKey = 'oops'), 'has unknown field "secretKey"'],
    ['a label with a newline', (e) => (e.label = 'two\nlines'), 'has a label that is not 1 to 100 visible characters on one line'],
    ['no created date', (e) => delete e.created, 'has no valid "created" date'],
  ];
  for (const [what, spoil, why] of bad) {
    it(`${what}: create and doctor name the entry in one line (exit 6), never "internal error"`, async () => {
      const cfg = JSON.parse(await readFile(cfgPath(), 'utf8')) as { recipients: Entry[] };
      spoil(cfg.recipients[0]!);
      await writeFile(cfgPath(), JSON.stringify(cfg));
      const label = typeof cfg.recipients[0]!.label === 'string' ? ` ("${(cfg.recipients[0]!.label as string).replace('\n', '\\n')}")` : '';
      const line = `${cfgPath()}: recipients entry 1${label} ${why}; repair it (or restore a copy)`;
      const r = await cli(['create', fx.src, '-o', join(fx.home, 'a.bkp')]);
      expect(r.exitCode).toBe(6);
      expect(r.stderr).toBe(`backupctl: ${line}\n`);
      const d = onlyJson<{ problems: Array<{ problem: string }> }>(await cli(['doctor', '--json']));
      expect(d.problems.map((p) => p.problem)).toContain(line);
    });
  }

  it('two recipients with one label are refused: commands name recipients by label', async () => {
    const cfg = JSON.parse(await readFile(cfgPath(), 'utf8')) as { recipients: Entry[] };
    cfg.recipients.push({ ...cfg.recipients[0]! });
    await writeFile(cfgPath(), JSON.stringify(cfg));
    const r = await cli(['recovery-code', 'list']);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toBe(`backupctl: ${cfgPath()}: two recipients are labelled "paper"; labels name them in commands, so each must be unique; repair it (or restore a copy)\n`);
  });

  it('settings of other modules at the top level are kept as they are', async () => {
    const cfg = JSON.parse(await readFile(cfgPath(), 'utf8')) as Record<string, unknown>;
    cfg.drive = { someSetting: true };
    await writeFile(cfgPath(), JSON.stringify(cfg));
    expect((await cli(['recovery-code', 'new', '--label', 'second'])).exitCode).toBe(0);
    expect(JSON.parse(await readFile(cfgPath(), 'utf8')).drive).toEqual({ someSetting: true });
  });
});
