// Locks through the built CLI with real competing processes: parallel config updates lose no
// recovery code, an unreadable lock means "held", a dead run's lock is taken over, and two creates
// of one archive name never both succeed. (util/lock.ts rules in-process: test/unit/lock.test.ts.)
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { STACK_TRACE, makeExportTree, makeHome, newRecoveryCode, onlyJson, runCli, startCli, type RecoveryCode } from '../support/cli.js';
import { HOST_TAG } from '../../src/util/owner.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
const cli = (args: string[]) => runCli(args, { configDir, timeoutMs: 60_000 });

beforeEach(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-locks-e2e-'));
});
afterEach(() => cleanup());

const labels = async () => (JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8')) as { recipients: Array<{ label: string; publicKey: string }> }).recipients;

async function deadPid(): Promise<number> {
  const p = execa(process.execPath, ['-e', '']);
  await p;
  return p.pid!;
}

describe('config updates in parallel', () => {
  it('8 parallel recovery-code new, 4 rounds: every code that exited 0 is in the config, and only those', async () => {
    const made: Array<{ label: string; publicKey: string }> = [];
    for (let round = 0; round < 4; round++) {
      const runs = await Promise.all(
        Array.from({ length: 8 }, (_, i) => {
          const out = join(home, `code-${round}-${i}.txt`);
          return runCli(['recovery-code', 'new', '--json', '--label', `r${round} n${i}`, '--output', out], { configDir, timeoutMs: 60_000 }).then((r) => ({ r, out }));
        }),
      );
      for (const { r, out } of runs) {
        // The config lock is held for milliseconds and waited for: all should pass; a run that
        // did not would have said so (exit 9) and left no code file.
        expect([0, 9], r.stderr).toContain(r.exitCode);
        if (r.exitCode === 0) {
          const j = onlyJson<{ label: string; publicKey: string }>(r);
          expect((await readFile(out, 'utf8')).trim()).toMatch(/^[0-9A-Z]{5}(-[0-9A-Z]{5}){6}$/);
          made.push({ label: j.label, publicKey: j.publicKey });
        } else await expect(readFile(out)).rejects.toThrow(/ENOENT/);
      }
      const inConfig = (await labels()).map((e) => `${e.label} ${e.publicKey}`).sort();
      expect(inConfig).toEqual(made.map((e) => `${e.label} ${e.publicKey}`).sort());
    }
    expect(made.length).toBeGreaterThanOrEqual(24); // most runs got through: the test really raced
    expect((await readdir(configDir)).sort()).toEqual(['config.json']); // no lock, no temporary left
  });
});

describe('lock files met by the CLI', () => {
  let rc: RecoveryCode;
  let src: string;
  beforeEach(async () => {
    rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
    src = join(home, 'export');
    await makeExportTree(src);
  });

  it('an empty or unreadable lock means held: exit 9, the lock and the output left alone', async () => {
    const out = join(home, 'a.bkp');
    for (const content of ['', 'not a lock\n']) {
      await writeFile(`${out}.lock`, content);
      const r = await cli(['create', src, '-o', out]);
      expect(r.exitCode).toBe(9);
      expect(r.stderr).toBe(`backupctl: ${out} is locked (${out}.lock); remove that file if no backupctl is running\n`);
      expect(await readFile(`${out}.lock`, 'utf8')).toBe(content);
      expect((await readdir(home)).filter((n) => n.startsWith('a.bkp') || n.startsWith('.a.bkp'))).toEqual(['a.bkp.lock']);
    }
    // The config lock too (after its short wait): nothing is shown or written.
    const before = await readFile(join(configDir, 'config.json'));
    await writeFile(join(configDir, 'config.json.lock'), '');
    const r = await cli(['recovery-code', 'new']);
    expect(r.exitCode).toBe(9);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^backupctl: the config is locked \(.*config\.json\.lock\); remove that file/);
    expect((await readFile(join(configDir, 'config.json'))).equals(before)).toBe(true);
  });

  it("a lock left by a dead run is taken over (and removed when done); a live run's lock is exit 9", async () => {
    const out = join(home, 'b.bkp');
    await writeFile(`${out}.lock`, `backupctl-lock 1 host=${HOST_TAG} pid=${await deadPid()} start=- token=${'0'.repeat(32)}\n`);
    const r = await cli(['create', src, '-o', out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((await readdir(home)).filter((n) => n.includes('b.bkp'))).toEqual(['b.bkp']);
    expect((await cli(['verify', out, '--recovery-code-file', rc.file])).exitCode).toBe(0);

    const held = `backupctl-lock 1 host=${HOST_TAG} pid=${process.pid} start=- token=${'0'.repeat(32)}\n`;
    await writeFile(`${out}.lock`, held);
    const again = await cli(['create', src, '-o', join(home, 'b.bkp'), '--force']);
    expect(again.exitCode).toBe(9);
    expect(again.stderr).toBe(`backupctl: ${out} is in use by another backupctl run (pid ${process.pid}); try again when it has finished\n`);
    expect(await readFile(`${out}.lock`, 'utf8')).toBe(held);
  });
});

describe('two creates of one name at once', () => {
  let src: string;
  beforeEach(async () => {
    await newRecoveryCode(configDir, join(home, 'code.txt'));
    src = join(home, 'export');
    await makeExportTree(src);
  });

  it('4 parallel creates without --force, 5 rounds: exactly one exits 0, the others exit 6 or 9; no temporary file left', async () => {
    for (let round = 0; round < 5; round++) {
      const dir = join(home, `race-${round}`);
      await mkdir(dir);
      const out = join(dir, 'same.bkp');
      const runs = await Promise.all(Array.from({ length: 4 }, () => cli(['create', src, '-o', out])));
      const codes = runs.map((r) => r.exitCode).sort();
      expect(codes.filter((c) => c === 0), runs.map((r) => r.stderr).join('')).toHaveLength(1);
      for (const r of runs.filter((x) => x.exitCode !== 0)) {
        expect([6, 9]).toContain(r.exitCode);
        expect(r.stderr).toMatch(/^backupctl: .*(already exists; use --force|created meanwhile by something else|in use by another backupctl run)/);
        expect(r.stderr).not.toMatch(STACK_TRACE);
      }
      expect(await readdir(dir)).toEqual(['same.bkp']);
    }
  });

  it('a file that appears under the final name while create runs is left alone: exit 6, no temporary file', async () => {
    const dir = join(home, 'appears');
    await mkdir(dir);
    const out = join(dir, 'x.bkp');
    await writeFile(join(src, 'big.bin'), randomBytes(32 << 20)); // so the run lasts a while
    const p = startCli(['create', src, '-o', out], { configDir });
    let ended = false;
    void p.finally(() => (ended = true));
    // Stop the run once its archive is being written (not the lock's own temporary, a few bytes),
    // put a file under the name, let it go on.
    const writing = async () => {
      for (const n of (await readdir(dir)).filter((x) => x.startsWith('.x.bkp.backupctl-tmp-'))) {
        if (((await stat(join(dir, n)).catch(() => null))?.size ?? 0) > 1 << 20) return true;
      }
      return false;
    };
    for (;;) {
      if (await writing()) break;
      if (ended) throw new Error(`create ended before its temporary file was seen: ${(await p).stderr}`);
      await new Promise((r) => setTimeout(r, 2));
    }
    process.kill(p.pid!, 'SIGSTOP');
    await writeFile(out, 'made by someone else');
    process.kill(p.pid!, 'SIGCONT');
    const r = await p;
    expect(r.exitCode).toBe(6);
    expect(String(r.stderr)).toBe(`backupctl: ${out} was created meanwhile by something else; it was left as it is (use --force to replace it)\n`);
    expect(await readFile(out, 'utf8')).toBe('made by someone else');
    expect(await readdir(dir)).toEqual(['x.bkp']);
  });
});
