// `backupctl rotate` and `backupctl recovery-code rotate` through the built CLI (run `npx tsc -p .`
// first; `npm test` does): re-wrap keeps the payload bytes, removed slots stop opening, re-key
// changes the payload, refusals, the lock, -o, an interrupted rotation, and --check.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli, startCli } from '../support/cli.js';


let home: string;
let configDir: string;
let exportDir: string;

/** The built CLI with this test's config; stdin is an empty pipe, never a terminal. */
const cli = (args: string[], opts: { env?: Record<string, string> } = {}) => runCli(args, { configDir, env: opts.env, timeoutMs: 60_000 });
const start = (args: string[]) => startCli(args, { configDir, timeoutMs: 120_000 });

async function ok(args: string[], opts: { env?: Record<string, string> } = {}) {
  const r = await cli(args, opts);
  expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(0);
  return r;
}

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Header length from the preamble (magic 8, version 2, JSON length 4) plus the 32-byte MAC. */
const headerLength = (b: Buffer) => 14 + b.readUInt32BE(10) + 32;
const payloadOf = (b: Buffer) => b.subarray(headerLength(b));
const slotsOf = (b: Buffer) => JSON.parse(b.subarray(14, headerLength(b) - 32).toString('utf8')).slots as Array<{ type: string; label: string }>;

/** A recovery code made through the CLI, written to a 0600 file. */
async function newCode(label: string): Promise<string> {
  const file = `${configDir}-code-${label}`; // one per config: each test has its own
  await ok(['recovery-code', 'new', '--label', label, '--output', file]);
  return file;
}

async function restoresWith(archive: string, codeFile: string): Promise<number> {
  const dest = await mkdtemp(join(home, 'restore-'));
  await rm(dest, { recursive: true });
  const r = await cli(['restore', archive, '-d', dest, '--recovery-code-file', codeFile]);
  if (r.exitCode === 0) {
    for (const name of await readdir(exportDir)) {
      expect(sha256(await readFile(join(dest, name))), name).toBe(sha256(await readFile(join(exportDir, name))));
    }
  }
  return r.exitCode!;
}

let codeA: string;
let codeB: string;
/** A config whose recipients are the codes A and B, made once: each test starts from a copy. */
let template: string;

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), 'backupctl-rotate-e2e-'));
  exportDir = join(home, 'export');
  await mkdir(exportDir);
  await writeFile(join(exportDir, 'chat.txt'), 'hello\n'.repeat(50_000));
  await writeFile(join(exportDir, 'photo.jpg'), randomBytes(3_000_000));
  template = configDir = await mkdtemp(join(home, 'config-'));
  codeA = await newCode('A');
  codeB = await newCode('B');
});
afterAll(() => rm(home, { recursive: true, force: true }));

beforeEach(async () => {
  configDir = await mkdtemp(join(home, 'config-')); // 0700, as the CLI makes it
  await copyFile(join(template, 'config.json'), join(configDir, 'config.json'));
});

async function archive(name = 'a.bkp'): Promise<string> {
  const p = join(home, name);
  await rm(p, { force: true });
  await ok(['create', exportDir, '-o', p, '--segment-size', '64K']);
  return p;
}

describe('rotate', () => {
  it('re-wrap (adding a slot) keeps the payload bytes identical, and the new slot opens it', async () => {
    await writeFile(join(configDir, 'config.json'), JSON.stringify({ version: 1, recipients: JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8')).recipients.slice(0, 1) }), { mode: 0o600 });
    const a = await archive();
    const before = await readFile(a);
    expect(slotsOf(before).map((s) => s.label)).toEqual(['A']);
    const codeC = await newCode('C');
    const r = await ok(['rotate', a, '--add-key', 'C', '--recovery-code-file', codeA, '--json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, rekeyed: false, payloadCopied: true, added: ['C'], removed: [], kept: ['A'] });
    const after = await readFile(a);
    expect(slotsOf(after).map((s) => s.label)).toEqual(['A', 'C']);
    expect(payloadOf(after).equals(payloadOf(before))).toBe(true);
    expect(await restoresWith(a, codeC)).toBe(0);
    expect(await restoresWith(a, codeA)).toBe(0);
  });

  it('removing a code re-keys by default: the payload changes and the removed code opens neither the new file nor old header + new payload', async () => {
    const a = await archive();
    const before = await readFile(a);
    const r = await ok(['rotate', a, '--remove-key', 'B', '--recovery-code-file', codeA, '--json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ rekeyed: true, removed: ['B'], kept: ['A'] });
    const after = await readFile(a);
    expect(slotsOf(after).map((s) => s.label)).toEqual(['A']);
    expect(payloadOf(after).equals(payloadOf(before))).toBe(false);
    expect(await restoresWith(a, codeB)).toBe(4);
    expect(await restoresWith(a, codeA)).toBe(0);
    // Someone who kept the old header (an earlier pull) gains nothing: the payload key changed.
    const spliced = join(home, 'spliced.bkp');
    await writeFile(spliced, Buffer.concat([before.subarray(0, headerLength(before)), payloadOf(after)]));
    expect(await restoresWith(spliced, codeB)).toBe(5);
  });

  it('--no-rekey removes the slot but warns that older copies still open with it (and shows why)', async () => {
    const a = await archive();
    const before = await readFile(a);
    const r = await ok(['rotate', a, '--remove-key', 'B', '--no-rekey', '--recovery-code-file', codeA]);
    expect(r.stderr).toMatch(/warning: the file key did not change \(--no-rekey\): anyone holding "B" can still open an older copy of this archive/);
    const after = await readFile(a);
    expect(payloadOf(after).equals(payloadOf(before))).toBe(true);
    expect(await restoresWith(a, codeB)).toBe(4);
    const spliced = join(home, 'spliced.bkp');
    await writeFile(spliced, Buffer.concat([before.subarray(0, headerLength(before)), payloadOf(after)]));
    expect(await restoresWith(spliced, codeB)).toBe(0); // exactly the risk the warning names
  });

  it('--rekey alone: same slots, new payload bytes, same content', async () => {
    const a = await archive();
    const before = await readFile(a);
    const r = await ok(['rotate', a, '--rekey', '--recovery-code-file', codeB, '--json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ rekeyed: true, added: [], removed: [] });
    const after = await readFile(a);
    expect(slotsOf(after).map((s) => s.label)).toEqual(['A', 'B']);
    expect(payloadOf(after).length).toBe(payloadOf(before).length);
    expect(payloadOf(after).equals(payloadOf(before))).toBe(false);
    expect(await restoresWith(a, codeA)).toBe(0);
    expect(await restoresWith(a, codeB)).toBe(0);
  });

  it('plain rotate follows the config, and does nothing when they already agree', async () => {
    const a = await archive();
    const same = await ok(['rotate', a, '--recovery-code-file', codeA]);
    expect(same.stderr).toMatch(/already has exactly these slots: "A", "B"; nothing to do/);
    const codeC = await newCode('C');
    const r = await ok(['rotate', a, '--recovery-code-file', codeA, '--json']);
    expect(JSON.parse(r.stdout)).toMatchObject({ rekeyed: false, added: ['C'], kept: ['A', 'B'] });
    expect(await restoresWith(a, codeC)).toBe(0);
  });

  it('--new-recovery-code shows the new code once, replaces the old one here and in the config', async () => {
    const a = await archive();
    const r = await ok(['rotate', a, '--new-recovery-code', '--recovery-code-file', codeA]);
    const code = /^ {4}(\S+)$/m.exec(r.stdout)![1]!;
    expect(r.stdout).toContain('it is shown only this once');
    const fresh = join(home, 'fresh-code');
    await writeFile(fresh, code, { mode: 0o600 });
    expect(await restoresWith(a, fresh)).toBe(0);
    expect(await restoresWith(a, codeA)).toBe(4);
    const cfg = JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8'));
    expect(cfg.recipients.map((x: { type: string }) => x.type)).toEqual(['recovery']);
    expect(cfg.retiredRecoveryCodes.map((x: { label: string }) => x.label)).toEqual(['A', 'B']);
    expect(await readFile(join(configDir, 'config.json'), 'utf8')).not.toContain(code);
  });

  it('refuses to leave no slot, and to remove the last recovery code without --force; the file is unchanged', async () => {
    const a = await archive();
    const before = await readFile(a);
    let r = await cli(['rotate', a, '--remove-key', 'A', '--remove-key', 'B', '--recovery-code-file', codeA]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/refusing to leave .* with no slot at all/);
    // A security key in the config (only its public half matters to rotate).
    const cfg = JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8'));
    const pub = generateKeyPairSync('x25519').publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
    cfg.recipients.push({ type: 'fido2', label: 'yubikey', publicKey: pub.toString('base64').replace(/=+$/, ''), created: new Date().toISOString(), params: { rp: 'backupctl' } });
    await writeFile(join(configDir, 'config.json'), JSON.stringify(cfg), { mode: 0o600 });
    await ok(['rotate', a, '--add-key', 'yubikey', '--recovery-code-file', codeA]);
    const withKey = await readFile(a);
    r = await cli(['rotate', a, '--remove-key', 'A', '--remove-key', 'B', '--recovery-code-file', codeA]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/refusing to remove the last recovery code of .*: it would then open only with "yubikey"; add --force/);
    expect((await readFile(a)).equals(withKey)).toBe(true);
    await ok(['rotate', a, '--remove-key', 'A', '--remove-key', 'B', '--force', '--recovery-code-file', codeA]);
    expect(slotsOf(await readFile(a)).map((s) => s.label)).toEqual(['yubikey']);
    expect(before.equals(await readFile(a))).toBe(false);
  });

  it('a wrong code, an unknown label: clear line, exit 4 / 2, nothing changed', async () => {
    const a = await archive();
    const before = await readFile(a);
    const other = join(home, 'other-code');
    const o = await cli(['recovery-code', 'new', '--json'], { env: { BACKUPCTL_CONFIG_DIR: join(home, 'other-config') } });
    await writeFile(other, JSON.parse(o.stdout).code, { mode: 0o600 });
    let r = await cli(['rotate', a, '--rekey', '--recovery-code-file', other]);
    expect(r.exitCode).toBe(4);
    r = await cli(['rotate', a, '--remove-key', 'Z', '--recovery-code-file', codeA]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/has no slot labelled "Z" \(its slots: "A", "B"\)/);
    r = await cli(['rotate', a, '--add-key', 'Z', '--recovery-code-file', codeA]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/no key or code labelled "Z" in the config/);
    expect((await readFile(a)).equals(before)).toBe(true);
    expect((await readdir(home)).filter((n) => n.includes('backupctl-tmp') || n.endsWith('.lock'))).toEqual([]);
  });

  it('a damaged archive is refused (exit 5) by re-wrap and re-key alike, and left as it is', async () => {
    const a = await archive();
    const b = await readFile(a);
    b[headerLength(b) + 70_000]! ^= 1; // inside the second 64K segment
    await writeFile(a, b);
    await newCode('C');
    for (const args of [['--add-key', 'C'], ['--rekey'], ['--remove-key', 'B', '--no-rekey']]) {
      const r = await cli(['rotate', a, ...args, '--recovery-code-file', codeA]);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(5);
      expect(r.stderr).toMatch(/segment 1/);
      expect((await readFile(a)).equals(b)).toBe(true);
    }
    expect((await readdir(home)).filter((n) => n.includes('backupctl-tmp'))).toEqual([]);
  });

  it('-o writes the rotated archive elsewhere and leaves FILE as it was', async () => {
    const a = await archive();
    const before = await readFile(a);
    const out = join(home, 'rotated.bkp');
    await rm(out, { force: true });
    await ok(['rotate', a, '--remove-key', 'B', '-o', out, '--recovery-code-file', codeA]);
    expect((await readFile(a)).equals(before)).toBe(true);
    expect(await restoresWith(out, codeB)).toBe(4);
    expect(await restoresWith(a, codeB)).toBe(0);
    const again = await cli(['rotate', a, '--rekey', '-o', out, '--recovery-code-file', codeA]);
    expect(again.exitCode).toBe(6);
  });

  it('two rotations of one archive at once: the second is refused by the lock (exit 9)', async () => {
    const a = await archive();
    await writeFile(`${a}.lock`, `${process.pid}\n`); // held by a live process (this test)
    try {
      const r = await cli(['rotate', a, '--rekey', '--recovery-code-file', codeA]);
      expect(r.exitCode).toBe(9);
      expect(r.stderr).toMatch(/is in use by another backupctl run \(pid \d+\)/);
    } finally {
      await rm(`${a}.lock`);
    }
  });

  it('an interrupted rotation leaves the original intact and no temporary file', async () => {
    await writeFile(join(exportDir, 'video.mp4'), randomBytes(200 << 20));
    try {
      const a = await archive('big.bkp');
      const before = sha256(await readFile(a));
      const names = await readdir(home);
      const run = start(['rotate', a, '--rekey', '--recovery-code-file', codeA, '--json']);
      await new Promise<void>((res) => run.stderr!.on('data', (d: Buffer) => String(d).includes('"progress"') && res()));
      run.kill('SIGINT');
      const r = await run;
      expect(r.exitCode).toBe(130);
      expect(sha256(await readFile(a))).toBe(before);
      expect((await readdir(home)).sort()).toEqual(names.sort());
      await rm(a);
    } finally {
      await rm(join(exportDir, 'video.mp4'));
    }
  }, 120_000);
});

describe('recovery-code rotate', () => {
  it('--output writes the new code to a new 0600 file and prints no secret', async () => {
    const out = `${configDir}-new-code`;
    const r = await ok(['recovery-code', 'rotate', '--output', out, '--json']);
    const j = JSON.parse(r.stdout);
    expect(j.code).toBeUndefined();
    expect(j).toMatchObject({ ok: true, output: out, retired: ['A', 'B'] });
    const code = (await readFile(out, 'utf8')).trim();
    expect(r.stdout + r.stderr).not.toContain(code);
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    const check = await cli(['recovery-code', 'check', '--recovery-code-file', out]);
    expect(check.exitCode, check.stderr).toBe(0);
    const again = await cli(['recovery-code', 'rotate', '--output', out]);
    expect(again.exitCode).toBe(6); // never overwrites; and the config keeps the code just made
    expect((await cli(['recovery-code', 'check', '--recovery-code-file', out])).exitCode).toBe(0);
  });


  it('replaces the code in the config and lists the archives that still open only with an old one', async () => {
    const dir = join(home, 'archives');
    await rm(dir, { recursive: true, force: true });
    await mkdir(join(dir, 'sub'), { recursive: true });
    await ok(['create', exportDir, '-o', join(dir, 'one.bkp')]);
    await ok(['create', exportDir, '-o', join(dir, 'sub/two.bkp')]);
    await writeFile(join(dir, 'notes.txt'), 'not an archive');
    const r = await ok(['recovery-code', 'rotate', '--label', 'N', '--check', dir, '--json']);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ ok: true, label: 'N', retired: ['A', 'B'] });
    expect(j.stale).toEqual([
      { file: join(dir, 'one.bkp'), oldCodes: ['A', 'B'], otherSlots: [] },
      { file: join(dir, 'sub/two.bkp'), oldCodes: ['A', 'B'], otherSlots: [] },
    ]);
    const fresh = join(home, 'n-code');
    await writeFile(fresh, j.code, { mode: 0o600 });
    // Rotating one archive to the config moves it to the new code; --check no longer lists it.
    await ok(['rotate', join(dir, 'one.bkp'), '--recovery-code-file', codeA]);
    expect(await restoresWith(join(dir, 'one.bkp'), fresh)).toBe(0);
    expect(await restoresWith(join(dir, 'one.bkp'), codeA)).toBe(4);
    const again = await ok(['recovery-code', 'rotate', '--check', dir]);
    expect(again.stdout).toMatch(/Archives under .* that still open only with an old code/);
    expect(again.stdout).toContain(join(dir, 'sub/two.bkp'));
    expect(again.stdout).toContain(join(dir, 'one.bkp')); // its code "N" was just retired too
    expect(existsSync(join(dir, 'notes.txt'))).toBe(true);
  });
});
