// Installing backupctl the way CLI tools are installed, from a clean copy of the sources (no
// dist/): `npm pack` then `npm install -g` of the tarball into a temporary prefix gives a
// `backupctl` on that prefix's PATH that creates and restores, and whose man pages `man` finds
// through the prefix's MANPATH; `npm install -g .` from the clone links a working one. And the
// launcher refuses a Node.js that is too old in one line, before anything else can fail.
// Offline where npm's cache has the dependencies (--prefer-offline), about 20 s.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { cp, mkdir, readFile, readdir, symlink } from 'node:fs/promises';
import { existsSync, realpathSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { BIN, REPO, makeHome, snapshot } from '../support/cli.js';

let home: string;
let cleanup: () => Promise<void>;
let clone: string;

/** The environment npm and the installed CLI run with: not the npm_* of the `npm test` around us. */
function env(extra: Record<string, string> = {}): Record<string, string> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k, v]) => !/^npm_/i.test(k) && v !== undefined)) as Record<string, string>;
  return { ...base, ...extra };
}
const npm = (args: string[], cwd: string) =>
  execa('npm', [...args, '--prefer-offline', '--no-audit', '--no-fund'], { cwd, env: env(), extendEnv: false, reject: false, timeout: 120_000 });

const manWhere = async (manpath: string, page: string[]) => {
  const r = await execa('man', ['-w', ...page], { env: env({ MANPATH: manpath }), extendEnv: false, reject: false });
  return r.exitCode === 0 ? realpathSync(String(r.stdout).trim()) : `man failed (${r.exitCode}): ${r.stderr}`;
};
/** npm links the pages into PREFIX/share/man; man names the file a link points to. */
const page = (manDir: string, section: string, name: string) => realpathSync(join(manDir, `man${section}`, name));
const hasMan = existsSync('/usr/bin/man') || existsSync('/usr/local/bin/man');

beforeAll(async () => {
  ({ home, cleanup } = await makeHome('backupctl-install-'));
  // A clean clone: the tracked sources, no dist/. Its node_modules is the repo's (the compiler
  // for `prepare`), as `npm ci` would have made it.
  clone = join(home, 'clone');
  for (const f of ['bin', 'src', 'man', 'package.json', 'package-lock.json', 'tsconfig.json', 'README.md']) {
    await cp(join(REPO, f), join(clone, f), { recursive: true });
  }
  await symlink(join(REPO, 'node_modules'), join(clone, 'node_modules'));
}, 30_000);
afterAll(() => cleanup());

describe('installation', () => {
  it('npm pack builds dist/ into the package; npm install -g of it gives a backupctl that creates, restores, and has man pages', async () => {
    const packDir = join(home, 'pack');
    await mkdir(packDir);
    const pack = await npm(['pack', '--pack-destination', packDir], clone);
    expect(pack.exitCode, String(pack.stderr)).toBe(0);
    const [tgz, ...more] = await readdir(packDir);
    expect(more).toEqual([]);
    expect(tgz).toBe('backupctl-0.1.0.tgz');
    const listing = String((await execa('tar', ['tzf', join(packDir, tgz!)])).stdout).split('\n');
    expect(listing).toContain('package/dist/cli/main.js');
    expect(listing).toContain('package/man/backupctl.1');
    expect(listing.filter((l) => l.endsWith('.map') || l.startsWith('package/src/') || l.startsWith('package/test/'))).toEqual([]);

    const prefix = join(home, 'prefix');
    const inst = await npm(['install', '-g', '--prefix', prefix, join(packDir, tgz!)], home);
    expect(inst.exitCode, String(inst.stderr)).toBe(0);

    // The installed command, found on PATH as a user would run it, with its own config.
    const PATH = [dirname(process.execPath), join(prefix, 'bin'), '/usr/bin', '/bin'].join(delimiter);
    const configDir = join(home, 'config');
    const run = (args: string[]) => execa('backupctl', args, { env: { PATH, HOME: home, BACKUPCTL_CONFIG_DIR: configDir }, extendEnv: false, reject: false, cwd: home, input: '' });
    expect(String((await run(['--version'])).stdout).trim()).toBe('0.1.0');
    const code = join(home, 'code.txt');
    expect((await run(['recovery-code', 'new', '--output', code])).exitCode).toBe(0);
    const archive = join(home, 'sample.bctl');
    const created = await run(['create', join(REPO, 'fixtures', 'sample-export'), '-o', archive]);
    expect(created.exitCode, String(created.stderr)).toBe(0);
    const restored = await run(['restore', archive, '-d', join(home, 'out'), '--recovery-code-file', code]);
    expect(restored.exitCode, String(restored.stderr)).toBe(0);
    expect(await snapshot(join(home, 'out'))).toEqual(await snapshot(join(REPO, 'fixtures', 'sample-export')));

    // package.json "man": npm links every page into PREFIX/share/man, where man looks.
    const manDir = join(prefix, 'share', 'man');
    const pages = (await readdir(join(REPO, 'man'))).filter((f) => /\.\d$/.test(f));
    // Every page in man/ is in package.json "man" (a new page left out would not be installed).
    const listed = (JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { man: string[] }).man;
    expect([...listed].sort()).toEqual(pages.map((f) => `man/${f}`).sort());
    for (const p of pages) expect(existsSync(join(manDir, `man${p.slice(-1)}`, p)), p).toBe(true);
    if (hasMan) {
      expect(await manWhere(manDir, ['backupctl'])).toBe(page(manDir, '1', 'backupctl.1'));
      expect(await manWhere(manDir, ['5', 'backupctl-format'])).toBe(page(manDir, '5', 'backupctl-format.5'));
    }
  }, 180_000);

  it('npm install -g . from a clone links a backupctl that runs, with its man pages', async () => {
    const prefix = join(home, 'prefix-dir');
    const inst = await npm(['install', '-g', '--prefix', prefix, '.'], clone);
    expect(inst.exitCode, String(inst.stderr)).toBe(0);
    const PATH = [dirname(process.execPath), join(prefix, 'bin'), '/usr/bin', '/bin'].join(delimiter);
    const r = await execa('backupctl', ['--help'], { env: { PATH, HOME: home }, extendEnv: false, reject: false });
    expect(r.exitCode).toBe(0);
    expect(String(r.stdout)).toMatch(/^Usage: backupctl /);
    const manDir = join(prefix, 'share', 'man');
    if (hasMan) expect(await manWhere(manDir, ['backupctl-key'])).toBe(page(manDir, '1', 'backupctl-key.1'));
    else expect(existsSync(join(manDir, 'man1', 'backupctl-key.1'))).toBe(true);
  }, 120_000);
});

describe('Node.js version', () => {
  const pkg = async () => JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { engines: { node: string } };

  it('engines states the range of the strictest dependency (@inquirer/prompts), and the launcher checks that range', async () => {
    const inquirer = JSON.parse(await readFile(join(REPO, 'node_modules', '@inquirer', 'prompts', 'package.json'), 'utf8')) as { engines: { node: string } };
    const launcher = (await import(join(REPO, 'bin', 'node-version.js'))) as { ENGINES: string; supportedNode(v: string): boolean };
    expect((await pkg()).engines.node).toBe(inquirer.engines.node);
    expect(launcher.ENGINES).toBe((await pkg()).engines.node);
    const yes = ['22.22.2', '22.30.0', '24.15.0', '24.21.0', '26.0.0', '27.1.0'];
    const no = ['20.20.2', '22.12.0', '22.22.1', '23.11.0', '24.14.9', '25.2.1'];
    expect(yes.filter((v) => !launcher.supportedNode(v))).toEqual([]);
    expect(no.filter((v) => launcher.supportedNode(v))).toEqual([]);
  });

  // The machines ship Node 20 as /usr/bin/node; elsewhere, a node older than 22 if there is one.
  const oldNode = ['/usr/bin/node', '/usr/local/bin/node'].find((p) => existsSync(p));
  it.skipIf(!oldNode)('the launcher run by an older Node says in one line which version it needs, exit 1', async () => {
    const version = String((await execa(oldNode!, ['--version'])).stdout).trim();
    if (!/^v(1\d|2[0-1])\./.test(version)) return expect.fail(`${oldNode} is ${version}, not older than 22: cannot test the refusal here`);
    const r = await execa(oldNode!, [BIN, 'restore', 'x.bctl', '-d', 'out'], { reject: false, input: '', stripFinalNewline: false });
    expect(String(r.stderr).endsWith('\n')).toBe(true);
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('');
    expect(String(r.stderr).trimEnd()).toBe(`backupctl: needs Node.js 24 (24.15.0 or newer; also 22.22.2+ or 26+), but this is Node.js ${version} (${oldNode}); put a newer node first on PATH (README "Installing")`);
  });
});
