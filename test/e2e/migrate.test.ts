// `backupctl migrate-from-64-digit-key` through the built CLI (run `npx tsc -p .` first; `npm test`
// does): the real WhatsApp sample, realistic backup folders made by the test writer, every
// failure (nothing written), --remove-legacy, and an interrupted run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { storedZip, writeCrypt14, writeCrypt15, writeMultiFileCrypt15 } from '../support/crypt15-writer.js';
import { BIN, runCli, startCli } from '../support/cli.js';
import { probeCrypt15 } from '../../src/legacy/crypt15.js';
import { backupEncryptionKey } from '../../src/legacy/legacy-key.js';

const INTEROP = resolve(import.meta.dirname, '../../../shared/interop/whatsapp-crypt15');
const SAMPLE_HEX = '6730a595a1484d0c39c101dc0ac82ec5e401bb6f0e1b8ee2dc104a6b3687f017';
const SAMPLE_SHA256 = '1425b944a2e3885fc936a7bb82f6548c5cc09523a2f61f02aa836c4ed8bbd16e';

let home: string;
let configDir: string;
let codeFile: string;

/** The built CLI with this test's config; stdin is an empty pipe, never a terminal. */
const cli = (args: string[], opts: { env?: Record<string, string> } = {}) => runCli(args, { configDir, env: opts.env, timeoutMs: 60_000 });
const start = (args: string[]) => startCli(args, { configDir, timeoutMs: 120_000 });

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Relative path → sha256 (files) or 'dir', for whole trees. */
async function tree(dir: string, rel = '', out = new Map<string, string>()): Promise<Map<string, string>> {
  for (const d of await readdir(join(dir, rel), { withFileTypes: true })) {
    const r = rel ? `${rel}/${d.name}` : d.name;
    if (d.isDirectory()) {
      out.set(r, 'dir');
      await tree(dir, r, out);
    } else out.set(r, sha256(await readFile(join(dir, r))));
  }
  return out;
}

/** Nothing under `dir` but what was there: no archive, no temp file, no lock. */
async function expectNothingWritten(dir: string, before: string[]) {
  expect((await readdir(dir)).sort()).toEqual(before.sort());
}

function requireInterop() {
  if (!existsSync(join(INTEROP, 'msgstore.db.crypt15'))) {
    throw new Error(`the real crypt15 sample is missing: expected it in ${INTEROP} (../shared/interop beside the repository)`);
  }
}

interface Folder {
  root: string;
  rootKey: Buffer;
  /** Expected tree after restore: path → sha256. */
  expected: Map<string, string>;
  legacy: string[];
}

/** A WhatsApp backup folder as on an Android phone, with every crypt15 variant and plain media. */
async function makeFolder(where: string, files = 120): Promise<Folder> {
  const root = join(where, 'WhatsApp');
  const rootKey = randomBytes(32);
  const expected = new Map<string, string>();
  const legacy: string[] = [];
  const db = (n: number) =>
    Buffer.concat(Array.from({ length: n }, (_, i) => Buffer.from(`INSERT INTO messages VALUES(${i},'chat ${i % 31}','message number ${i}',${1700000000 + i * 37});\n`)));
  const put = async (rel: string, write: (p: string) => Promise<void>, plain: Buffer | null, archived: string) => {
    await write(join(root, rel));
    legacy.push(rel);
    for (let i = archived.indexOf('/'); i > 0; i = archived.indexOf('/', i + 1)) expected.set(archived.slice(0, i), 'dir');
    if (plain) expected.set(archived, sha256(plain));
  };
  const main = db(60_000);
  await put('Databases/msgstore.db.crypt15', (p) => writeCrypt15(p, main, { rootKey, header: 'large', level: 9 }), main, 'Databases/msgstore.db');
  const old = db(20_000);
  await put('Databases/msgstore-2024-01-01.1.db.crypt15', (p) => writeCrypt15(p, old, { rootKey, header: 'small', level: 1 }), old, 'Databases/msgstore-2024-01-01.1.db');
  const fb = db(500);
  await put('Backups/chatsettingsbackup.db.crypt15', (p) => writeCrypt15(p, fb, { rootKey, header: 'small', featureByte: true }), fb, 'Backups/chatsettingsbackup.db');
  const zip = storedZip({ 'sticker1.webp': randomBytes(5000), 'sticker2.webp': randomBytes(7000) });
  await put('Backups/stickers.db.crypt15', (p) => writeMultiFileCrypt15(p, zip, { rootKey }), zip, 'Backups/stickers.db');
  // An old crypt14 lying around: copied as it is (still encrypted), with a warning.
  await writeCrypt14(join(root, 'Databases/msgstore-2021-05-01.1.db.crypt14'));
  expected.set('Databases/msgstore-2021-05-01.1.db.crypt14', sha256(await readFile(join(root, 'Databases/msgstore-2021-05-01.1.db.crypt14'))));
  // Media are not encrypted on the phone: taken as they are.
  for (let i = 0; i < files; i++) {
    const dir = ['Media/WhatsApp Images', 'Media/WhatsApp Voice Notes/202401', 'Media/WhatsApp Images/Sent'][i % 3]!;
    const name = `${dir}/IMG-2024010${i % 9}-WA${String(i).padStart(4, '0')}.jpg`;
    const data = randomBytes(500 + (i * 997) % 20_000);
    await mkdir(join(root, dir), { recursive: true });
    await writeFile(join(root, name), data);
    expected.set(name, sha256(data));
  }
  await mkdir(join(root, 'Media/.Statuses'), { recursive: true }); // an empty folder is kept too
  for (const d of ['Databases', 'Backups', 'Media', 'Media/WhatsApp Images', 'Media/WhatsApp Images/Sent', 'Media/WhatsApp Voice Notes', 'Media/WhatsApp Voice Notes/202401', 'Media/.Statuses']) expected.set(d, 'dir');
  return { root, rootKey, expected, legacy };
}

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), 'backupctl-migrate-e2e-'));
  configDir = join(home, 'config');
  codeFile = join(home, 'code');
  const r = await cli(['recovery-code', 'new', '--output', codeFile]);
  if (r.exitCode !== 0) throw new Error(`recovery-code new failed: ${r.stderr}`);
});
afterAll(() => rm(home, { recursive: true, force: true }));

async function restore(archive: string, dest: string) {
  const r = await cli(['restore', archive, '-d', dest, '--recovery-code-file', codeFile]);
  expect(r.exitCode, r.stderr).toBe(0);
}

describe('the real WhatsApp sample', () => {
  it("migrates with WhatsApp's encrypted_backup.key and restores the database with the listed SHA-256", async () => {
    requireInterop();
    const out = join(home, 'sample.bkp');
    const r = await cli(['migrate-from-64-digit-key', join(INTEROP, 'msgstore.db.crypt15'), '-o', out, '--key-file', join(INTEROP, 'encrypted_backup.key'), '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res).toMatchObject({ ok: true, verified: true, files: 1, bytesIn: 1_273_856, removedLegacy: [] });
    expect(res.decrypted).toEqual([{ from: join(INTEROP, 'msgstore.db.crypt15'), to: 'msgstore.db' }]);
    await restore(out, join(home, 'sample-restored'));
    expect(sha256(await readFile(join(home, 'sample-restored/msgstore.db')))).toBe(SAMPLE_SHA256);
  });

  it('takes the 64 digits as typed (groups, dashes, upper case) from BACKUPCTL_LEGACY_KEY or a text file with a BOM', async () => {
    requireInterop();
    const typed = SAMPLE_HEX.toUpperCase().match(/.{4}/g)!.join(' ');
    const a = await cli(['migrate-from-64-digit-key', join(INTEROP, 'msgstore.db.crypt15'), '-o', join(home, 'env.bkp')], {
      env: { BACKUPCTL_LEGACY_KEY: typed },
    });
    expect(a.exitCode, a.stderr).toBe(0);
    expect(a.stderr).toMatch(/Wrote and verified .*env\.bkp: 1 WhatsApp backup file decrypted/);
    const keyText = join(home, 'key.txt');
    await writeFile(keyText, `\uFEFF${SAMPLE_HEX.match(/.{16}/g)!.join('-')}\r\n`, { mode: 0o600 });
    const b = await cli(['migrate-from-64-digit-key', join(INTEROP, 'msgstore.db.crypt15'), '-o', join(home, 'text.bkp'), '--key-file', keyText]);
    expect(b.exitCode, b.stderr).toBe(0);
    expect(b.stderr).not.toMatch(/warning/);
  });
});

// A real terminal: script(1) runs the CLI on a pseudo-terminal; the key is typed at the prompt.
describe.runIf(process.platform === 'linux')('the 64-digit key typed at a terminal', () => {
  it('is asked for with hidden input, accepted as typed (groups of four), never echoed', async () => {
    requireInterop();
    const out = join(home, 'typed.bkp');
    const typed = SAMPLE_HEX.match(/.{4}/g)!.join(' ');
    const cmd = `'${process.execPath}' '${BIN}' migrate-from-64-digit-key '${join(INTEROP, 'msgstore.db.crypt15')}' -o '${out}'`;
    const child = execa('script', ['-qec', cmd, '/dev/null'], {
      reject: false, timeout: 30_000, env: { BACKUPCTL_CONFIG_DIR: configDir, TERM: 'xterm' }, extendEnv: false,
    });
    let output = '';
    let typedIt = false;
    child.stdout!.on('data', (d: Buffer) => {
      output += d.toString();
      if (!typedIt && output.includes('64-digit key')) {
        typedIt = true;
        setTimeout(() => child.stdin!.write(`${typed}\r`), 300); // typed after the prompt is up
      }
    });
    const r = await child;
    expect(r.exitCode, output).toBe(0);
    expect(output).toMatch(/WhatsApp 64-digit key \(spaces and dashes are ignored\)/);
    expect(output).toMatch(/Wrote and verified .*typed\.bkp/);
    expect(output).not.toContain(SAMPLE_HEX.slice(0, 4) + ' ' + SAMPLE_HEX.slice(4, 8)); // not echoed
    await restore(out, join(home, 'typed-restored'));
    expect(sha256(await readFile(join(home, 'typed-restored/msgstore.db')))).toBe(SAMPLE_SHA256);
  });
});

describe('backupctl inspect on a crypt15 file', () => {
  it('shows the header without a key, and whether the MD5 footer matches', async () => {
    requireInterop();
    const sample = join(INTEROP, 'msgstore.db.crypt15');
    const r = await cli(['inspect', sample, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ ok: true, format: 'crypt15', keyType: 1, headerLength: 129, appVersion: '2.22.5.13', jidSuffix: '67', size: 240_529, md5Matches: true });
    expect(j.iv).toMatch(/^c395ee00[0-9a-f]{20}559c$/);
    expect(j.features['5']).toBe(true);
    expect(j.features['6']).toBe(false);
    const text = await cli(['inspect', sample]);
    expect(text.stdout).toContain('WhatsApp crypt15 backup');
    expect(text.stdout).toMatch(/IV: +c395ee00/);
    expect(text.stdout).toMatch(/MD5 footer: +matches \(the file is intact\)/);
    const damaged = join(home, 'damaged.db.crypt15');
    const b = await readFile(sample);
    b[1000]! ^= 1;
    await writeFile(damaged, b);
    const d = await cli(['inspect', damaged, '--json']);
    expect(JSON.parse(d.stdout).md5Matches).toBe(false);
    const c14 = join(home, 'msgstore.db.crypt14');
    await writeCrypt14(c14);
    const c = await cli(['inspect', c14]);
    expect(c.exitCode).toBe(5);
    expect(c.stderr).toMatch(/is a crypt14 backup, not crypt15: .*not with the 64-digit key/);
  });
});

describe('a WhatsApp backup folder', () => {
  let f: Folder;
  let keyFile: string;
  beforeAll(async () => {
    f = await makeFolder(join(home, 'phone'));
    keyFile = join(home, 'folder.key');
    await writeFile(keyFile, f.rootKey.toString('hex') + '\n', { mode: 0o600 });
  });

  it('migrates every .crypt15 (suffix dropped), keeps everything else and the structure, and restores byte-identical', async () => {
    const before = await tree(f.root);
    const out = join(home, 'folder.bkp');
    const r = await cli(['migrate-from-64-digit-key', f.root, '-o', out, '--key-file', keyFile, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout);
    expect(res.decrypted.map((d: { to: string }) => d.to).sort()).toEqual(
      ['Backups/chatsettingsbackup.db', 'Backups/stickers.db', 'Databases/msgstore-2024-01-01.1.db', 'Databases/msgstore.db'],
    );
    expect(res.warnings).toEqual([
      'Databases/msgstore-2021-05-01.1.db.crypt14 is an older WhatsApp backup (not crypt15): it is copied into the archive as it is, still encrypted',
    ]);
    const dest = join(home, 'folder-restored');
    await restore(out, dest);
    expect(await tree(dest)).toEqual(f.expected);
    expect(await tree(f.root)).toEqual(before); // the legacy files are untouched
  });

  it('refuses a wrong key before writing anything (exit 4)', async () => {
    const wrong = join(home, 'wrong.key');
    await writeFile(wrong, randomBytes(32).toString('hex'), { mode: 0o600 });
    const before = await readdir(home);
    const r = await cli(['migrate-from-64-digit-key', f.root, '-o', join(home, 'wrong.bkp'), '--key-file', wrong]);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toBe(`backupctl: this key does not open any of the 4 .crypt15 backups in ${f.root}\n`);
    await expectNothingWritten(home, before);
  });

  it('a wrong key whose first block happens to look like zlib in one file is still "none of the 4" (exit 4)', async () => {
    // About one random key in 2,000 passes the first-block probe of a file; find one that does.
    const files = f.legacy.filter((p) => p.endsWith('.crypt15')).map((p) => join(f.root, p));
    let wrongKey: Buffer;
    for (;;) {
      wrongKey = randomBytes(32);
      const passes = await Promise.all(files.map((p) => probeCrypt15(p, backupEncryptionKey(wrongKey))));
      if (passes.some(Boolean)) break;
    }
    const wrong = join(home, 'lucky-wrong.key');
    await writeFile(wrong, wrongKey.toString('hex'), { mode: 0o600 });
    const before = await readdir(home);
    const r = await cli(['migrate-from-64-digit-key', f.root, '-o', join(home, 'wrong.bkp'), '--key-file', wrong]);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toBe(`backupctl: this key does not open any of the 4 .crypt15 backups in ${f.root}\n`);
    await expectNothingWritten(home, before);
  });

  it('--remove-legacy deletes only the .crypt15 files, and only after the archive opened with the recovery code', async () => {
    const g = await makeFolder(join(home, 'phone2'), 10);
    const key = join(home, 'g.key');
    await writeFile(key, g.rootKey.toString('hex'), { mode: 0o600 });
    const wrongCode = join(home, 'wrong-code');
    const other = await cli(['recovery-code', 'new', '--json'], { env: { BACKUPCTL_CONFIG_DIR: join(home, 'other-config') } });
    await writeFile(wrongCode, JSON.parse(other.stdout).code, { mode: 0o600 });
    const out = join(home, 'g.bkp');
    const bad = await cli(['migrate-from-64-digit-key', g.root, '-o', out, '--key-file', key, '--remove-legacy', '--recovery-code-file', wrongCode]);
    expect(bad.exitCode).toBe(4);
    expect(bad.stderr).toMatch(/g\.bkp was written and verified, but the WhatsApp files were kept: this recovery code does not open this archive/);
    for (const l of g.legacy) expect(existsSync(join(g.root, l)), l).toBe(true);

    // No way to open it without a terminal: refused before anything is written (exit 2).
    const written = await readFile(out);
    const noCode = await cli(['migrate-from-64-digit-key', g.root, '-o', out, '--force', '--key-file', key, '--remove-legacy']);
    expect(noCode.exitCode).toBe(2);
    expect(noCode.stderr).toBe('backupctl: --remove-legacy must open the new archive before it removes anything, and there is no terminal to ask for the recovery code: use --recovery-code-file FILE or BACKUPCTL_RECOVERY_CODE (nothing was written)\n');
    expect((await readFile(out)).equals(written)).toBe(true);
    for (const l of g.legacy) expect(existsSync(join(g.root, l)), l).toBe(true);

    const good = await cli(['migrate-from-64-digit-key', g.root, '-o', out, '--force', '--key-file', key, '--remove-legacy', '--recovery-code-file', codeFile, '--json']);
    expect(good.exitCode, good.stderr).toBe(0);
    expect(JSON.parse(good.stdout).removedLegacy.sort()).toEqual(g.legacy.map((l) => join(g.root, l)).sort());
    for (const l of g.legacy) expect(existsSync(join(g.root, l)), l).toBe(false);
    expect(existsSync(join(g.root, 'Databases/msgstore-2021-05-01.1.db.crypt14'))).toBe(true);
    const dest = join(home, 'g-restored');
    await restore(out, dest);
    expect(await tree(dest)).toEqual(g.expected);
  });
});

describe('failures: one clear line, the documented exit code, nothing written', () => {
  let dir: string;
  let key: Buffer;
  let keyFile: string;
  let good: Buffer;
  beforeAll(async () => {
    dir = await mkdtemp(join(home, 'fail-'));
    key = randomBytes(32);
    keyFile = join(home, 'fail.key');
    await writeFile(keyFile, key.toString('hex'), { mode: 0o600 });
    await writeCrypt15(join(home, 'good.db.crypt15'), randomBytes(100_000), { rootKey: key });
    good = await readFile(join(home, 'good.db.crypt15'));
  });

  async function attempt(name: string, content: Buffer | null, args: string[] = ['--key-file', keyFile]) {
    const src = join(dir, name);
    if (content) await writeFile(src, content);
    const before = await readdir(dir);
    const r = await cli(['migrate-from-64-digit-key', src, '-o', join(dir, 'out.bkp'), ...args]);
    await expectNothingWritten(dir, before);
    expect(r.stdout).toBe('');
    expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
    return r;
  }

  it('a truncated file: exit 5, "corrupt or truncated"', async () => {
    const r = await attempt('cut.db.crypt15', good.subarray(0, good.length - 1000));
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toMatch(/cut\.db\.crypt15 is corrupt or truncated \(its MD5 checksum does not match and decryption fails\)/);
  });

  it('a flipped byte in the header, body, tag or MD5: exit 5', async () => {
    for (const at of [20, 2000, good.length - 20, good.length - 3]) {
      const b = Buffer.from(good);
      b[at]! ^= 0x40;
      const r = await attempt(`flip-${at}.db.crypt15`, b);
      expect(r.exitCode, `flip at ${at}: ${r.stderr}`).toBe(5);
      expect(r.stderr).toMatch(/corrupt or truncated|not a WhatsApp crypt15 backup/);
    }
  });

  it('a wrong key on an intact file: exit 4, and it says the file is intact', async () => {
    await writeFile(join(home, 'other.key'), randomBytes(32).toString('hex'), { mode: 0o600 });
    const r = await attempt('intact.db.crypt15', good, ['--key-file', join(home, 'other.key')]);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toMatch(/this key does not open .*intact\.db\.crypt15 \(the file is intact: its MD5 checksum matches\)/);
  });

  it('a crypt14 file: exit 5 with the reason, before any key is asked for', async () => {
    await writeCrypt14(join(dir, 'msgstore.db.crypt14'));
    const r = await attempt('msgstore.db.crypt14', null, []);
    expect(r.exitCode).toBe(5);
    expect(r.stderr).toMatch(/is a crypt14 backup, not crypt15: .* not with the 64-digit key, so this command cannot migrate it/);
  });

  it('an empty folder, a folder with only crypt14, a missing source: exit 6', async () => {
    await mkdir(join(dir, 'empty'));
    let r = await attempt('empty', null);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/empty holds no \.crypt15 backup: nothing to migrate/);
    await writeCrypt14(join(dir, 'old/Databases/msgstore.db.crypt14'));
    r = await attempt('old', null);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/old holds only older backups \(Databases\/msgstore\.db\.crypt14\), which the 64-digit key does not protect/);
    r = await attempt('nothing-here.crypt15', null);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/cannot read .*nothing-here\.crypt15: no such file or directory/);
  });

  it('a key of the wrong length or alphabet says exactly what is wrong (exit 4)', async () => {
    await writeFile(join(dir, 'ok.db.crypt15'), good);
    let r = await attempt('ok.db.crypt15', null, [], ); // no key at all, stdin not a terminal
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe('backupctl: no 64-digit key given and stdin is not a terminal: use --key-file FILE or BACKUPCTL_LEGACY_KEY\n');
    r = await cli(['migrate-from-64-digit-key', join(dir, 'ok.db.crypt15'), '-o', join(dir, 'out.bkp')], { env: { BACKUPCTL_LEGACY_KEY: key.toString('hex').slice(2) } });
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toBe('backupctl: the 64-digit key has 62 hex digits, not 64 (2 missing); check it against the key WhatsApp showed you\n');
    r = await cli(['migrate-from-64-digit-key', join(dir, 'ok.db.crypt15'), '-o', join(dir, 'out.bkp')], { env: { BACKUPCTL_LEGACY_KEY: 'z' + key.toString('hex').slice(1) } });
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toMatch(/character 1 is 'z'/);
    expect(existsSync(join(dir, 'out.bkp'))).toBe(false);
  });

  it('an output inside the source folder, or the source itself, is refused (exit 2)', async () => {
    await writeFile(join(dir, 'self.db.crypt15'), good);
    let r = await cli(['migrate-from-64-digit-key', join(dir, 'self.db.crypt15'), '-o', join(dir, 'self.db.crypt15'), '--force', '--key-file', keyFile]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/self\.db\.crypt15 is the source itself/);
    expect((await readFile(join(dir, 'self.db.crypt15'))).equals(good)).toBe(true);
    await mkdir(join(dir, 'W/Databases'), { recursive: true });
    await writeFile(join(dir, 'W/Databases/msgstore.db.crypt15'), good);
    r = await cli(['migrate-from-64-digit-key', join(dir, 'W'), '-o', join(dir, 'W/out.bkp'), '--key-file', keyFile]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/would be inside .*W, which is being read/);
    expect(await readdir(join(dir, 'W'))).toEqual(['Databases']);
  });

  it('an existing output is kept unless --force (exit 6)', async () => {
    await writeFile(join(dir, 'ok.db.crypt15'), good);
    await writeFile(join(dir, 'out.bkp'), 'precious');
    const r = await cli(['migrate-from-64-digit-key', join(dir, 'ok.db.crypt15'), '-o', join(dir, 'out.bkp'), '--key-file', keyFile]);
    expect(r.exitCode).toBe(6);
    expect(r.stderr).toMatch(/out\.bkp already exists; use --force to replace it/);
    expect(await readFile(join(dir, 'out.bkp'), 'utf8')).toBe('precious');
    await rm(join(dir, 'out.bkp'));
  });
});

describe('streaming', () => {
  it('memory does not grow with the database; interrupted: exit 130 and nothing left behind', async () => {
    const dir = await mkdtemp(join(home, 'big-'));
    const rootKey = randomBytes(32);
    const keyFile = join(home, 'big.key');
    await writeFile(keyFile, rootKey.toString('hex'), { mode: 0o600 });
    const MB = 1 << 20;
    // Half-compressible pages, like a real database: random halves, zero halves.
    async function* pages(n: number) {
      for (let i = 0; i < n; i++) yield Buffer.concat([randomBytes(MB / 2), Buffer.alloc(MB / 2)]);
    }
    /**
     * Peak RSS (bytes) of a whole migrate run, measured by /usr/bin/time: the lower of two runs,
     * since when the collector runs moves one run's peak by 10-20 MiB under a loaded suite (a
     * single pair once grew by 57 MiB where alone it grows by 31-50).
     */
    async function peakOf(mb: number): Promise<number> {
      const src = join(dir, `msgstore-${mb}.db.crypt15`);
      await writeCrypt15(src, pages(mb), { rootKey, level: 1 });
      const out = join(dir, `m${mb}.bkp`);
      const peaks: number[] = [];
      for (let i = 0; i < 2; i++) {
        const t = await execa('/usr/bin/time', ['-f', '%M', process.execPath, BIN, 'migrate-from-64-digit-key', src, '-o', out, '--key-file', keyFile, '--json'], {
          reject: false, input: '', env: { BACKUPCTL_CONFIG_DIR: configDir }, extendEnv: false, timeout: 120_000,
        });
        expect(t.exitCode, t.stderr).toBe(0);
        expect(JSON.parse(t.stdout).bytesIn).toBe(mb * MB);
        await rm(out);
        peaks.push(Number((t.stderr).trim().split('\n').pop()) * 1024);
      }
      return Math.min(...peaks);
    }
    const small = await peakOf(32);
    const big = await peakOf(256);
    console.log(`migrate peak RSS: ${(small / MB).toFixed(0)} MiB for a 32 MiB database, ${(big / MB).toFixed(0)} MiB for 256 MiB`);
    expect(big - small).toBeLessThan((224 * MB) / 4); // 8x the data, nowhere near 8x the memory
    expect(big).toBeLessThan(256 * MB);

    const src = join(dir, 'msgstore-256.db.crypt15');
    const out = join(dir, 'big.bkp');
    const before = await readdir(dir);
    const run = start(['migrate-from-64-digit-key', src, '-o', out, '--key-file', keyFile, '--json']);
    // Progress lines (JSON on stderr) show the decryption is under way; then Ctrl-C.
    await new Promise<void>((res) => run.stderr!.on('data', (d: Buffer) => String(d).includes('"progress"') && res()));
    run.kill('SIGINT');
    const r = await run;
    expect(r.exitCode).toBe(130);
    await expectNothingWritten(dir, before);

    // Killed outright (no cleanup runs): the next run takes over the stale lock, removes the
    // dead run's temporary file, and leaves only the archive.
    const killed = start(['migrate-from-64-digit-key', src, '-o', out, '--key-file', keyFile, '--json']);
    await new Promise<void>((res) => killed.stderr!.on('data', (d: Buffer) => String(d).includes('"progress"') && res()));
    killed.kill('SIGKILL');
    await killed;
    expect((await readdir(dir)).filter((n) => !before.includes(n)).length).toBeGreaterThan(0); // debris
    const again = await cli(['migrate-from-64-digit-key', src, '-o', out, '--key-file', keyFile]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect((await readdir(dir)).sort()).toEqual([...before, 'big.bkp'].sort());
  }, 240_000);
});
