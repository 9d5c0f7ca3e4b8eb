// util/lock.ts in-process: what a lock file holds, who may take a stale one over, who may release
// it. The same rules through the built CLI, with real competing processes, are in
// test/e2e/locks.test.ts.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { execa } from 'execa';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acquireLock, parseLock } from '../../src/util/lock.js';
import { HOST_TAG, startTicks } from '../../src/util/owner.js';
import { BackupctlError } from '../../src/errors.js';

let dir: string;
let target: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'backupctl-lock-unit-'));
  target = join(dir, 'thing');
});
afterEach(() => rm(dir, { recursive: true, force: true }));

/** The pid of a process that has exited (and, on an idle machine, not been reused yet). */
async function deadPid(): Promise<number> {
  const p = execa(process.execPath, ['-e', '']);
  await p;
  return p.pid!;
}

const lockOf = (o: { pid: number; start?: string | null; host?: string }) =>
  `backupctl-lock 1 host=${o.host ?? HOST_TAG} pid=${o.pid} start=${o.start ?? '-'} token=${'ab'.repeat(16)}\n`;

async function exitCodeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (e) {
    if (e instanceof BackupctlError) return e.code;
    throw e;
  }
}

describe('lock files', () => {
  it('hold host tag, pid, start time and a token, written whole; release removes it and nothing else is left', async () => {
    const lock = await acquireLock(target, 'the thing');
    const text = await readFile(`${target}.lock`, 'utf8');
    expect(parseLock(text)).toEqual({ host: HOST_TAG, pid: process.pid, start: startTicks(process.pid) });
    expect(text).toMatch(/ token=[0-9a-f]{32}\n$/);
    expect(await readdir(dir)).toEqual(['thing.lock']); // the temporary it was linked from is gone
    lock.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it('an empty, garbled or unreadable lock is held (exit 9), never taken for stale', async () => {
    for (const content of ['', 'garbage\n', `${lockOf({ pid: 1 })}`.slice(0, 20)]) {
      await writeFile(`${target}.lock`, content);
      const code = await exitCodeOf(acquireLock(target, 'the thing'));
      expect(code, JSON.stringify(content)).toBe(9);
      expect(await readFile(`${target}.lock`, 'utf8')).toBe(content);
    }
  });

  it('a live holder is exit 9 naming its pid; a dead or reused pid is taken over', async () => {
    await writeFile(`${target}.lock`, lockOf({ pid: process.pid, start: startTicks(process.pid) }));
    await expect(acquireLock(target, 'the thing')).rejects.toThrow(`the thing is in use by another backupctl run (pid ${process.pid})`);

    for (const stale of [lockOf({ pid: await deadPid() }), lockOf({ pid: process.pid, start: '1' })]) {
      await writeFile(`${target}.lock`, stale);
      const lock = await acquireLock(target, 'the thing');
      expect(parseLock(await readFile(`${target}.lock`, 'utf8'))?.pid).toBe(process.pid);
      lock.release();
      expect(await readdir(dir)).toEqual([]);
    }
  });

  it('a lock of another host, or of an older backupctl (pid only) whose pid is dead, is never taken over', async () => {
    const pid = await deadPid();
    for (const [content, msg] of [
      [lockOf({ pid, host: '00000000' === HOST_TAG ? '11111111' : '00000000' }), `in use by another backupctl run (pid ${pid})`],
      [`${pid}\n`, `the thing is locked (${target}.lock); remove that file if no backupctl is running`],
    ] as const) {
      await writeFile(`${target}.lock`, content);
      await expect(acquireLock(target, 'the thing')).rejects.toThrow(msg);
      expect(await readFile(`${target}.lock`, 'utf8')).toBe(content);
    }
  });

  it('of runs racing for one stale lock exactly one takes it over (20 rounds of 6)', async () => {
    const pid = await deadPid();
    for (let round = 0; round < 20; round++) {
      await writeFile(`${target}.lock`, lockOf({ pid }));
      const results = await Promise.allSettled(Array.from({ length: 6 }, () => acquireLock(target, 'the thing')));
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won, `round ${round}`).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect((r.reason as BackupctlError).code).toBe(9);
      (won[0] as PromiseFulfilledResult<{ release(): void }>).value.release();
      expect(await readdir(dir)).toEqual([]);
    }
  });

  it('a run releases only its own lock: one that was replaced meanwhile stays', async () => {
    const lock = await acquireLock(target, 'the thing');
    const other = lockOf({ pid: process.pid, start: startTicks(process.pid) });
    await writeFile(`${target}.lock`, other);
    lock.release();
    expect(await readFile(`${target}.lock`, 'utf8')).toBe(other);
  });

  it('waitMs: a lock released meanwhile is taken instead of failing', async () => {
    const first = await acquireLock(target, 'the thing');
    setTimeout(() => first.release(), 150);
    const second = await acquireLock(target, 'the thing', { waitMs: 5000 });
    expect(parseLock(await readFile(`${target}.lock`, 'utf8'))?.pid).toBe(process.pid);
    second.release();
    expect(await readdir(dir)).toEqual([]);
  });
});
