// Direct I/O (util/direct-io.ts): a backup writes the packs its thread seals, and a restore the
// files cut into aligned pieces (media of 64 KiB and more), without copying them into the page
// cache, where the file system takes O_DIRECT; BACKUPCTL_DIRECT_IO=0 writes through the cache.
// Whether a file's bytes went through the cache is seen from outside, with fincore(1): written
// directly, none of them is resident afterwards (written through it, they are until reclaimed).
// A restored file's bytes after its last whole block are written through the cache. Either way
// every byte restores as it was, also around the last block of a file whose size is no multiple
// of the block (a pack's is written padded and the pack cut back). Where the file system
// refuses O_DIRECT (ramfs, mounted for the test where it runs as root), everything goes through
// the cache instead, with nothing left behind by the refused opens.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { makeHome, newRecoveryCode, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { backupJson, ok, repoFiles } from '../support/repo.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let src: string;
/**
 * Media sizes around the block and the piece: under the 64 KiB written directly, a whole number of
 * blocks, one byte past a block, past a piece, exactly pieces, and a video over several packs.
 */
const SIZES = [10_000, 65_536, 65_537, 300_001, 1 << 20, (1 << 20) + 1, 2 << 20, 3_333_333];
/** Packs of 1.2 MiB: sealed on the thread, several of them. */
const PACKS = { BACKUPCTL_REPO_PACK_SIZE: String(1_200_000) };

/** Bytes of `file` in the page cache (fincore(1), util-linux). */
async function resident(file: string): Promise<number> {
  const { stdout } = await execa('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', file]);
  return Number(stdout.trim());
}

/** Whether the test can see the page cache: fincore is there, and the temporary directory is not itself memory (tmpfs is all page cache). */
const canSee = await (async () => {
  try {
    await execa('fincore', ['--version']);
    const { stdout } = await execa('stat', ['-f', '-c', '%T', tmpdir()]);
    return !/tmpfs|ramfs/.test(stdout);
  } catch {
    return false;
  }
})();

/**
 * Whether a ramfs can be mounted here (as root): ramfs refuses O_DIRECT at the open, with EINVAL,
 * after creating the file, the refusal the stores and restore threads fall back from.
 */
const canMount = await (async () => {
  if (process.getuid?.() !== 0) return false;
  const dir = await mkdtemp(join(tmpdir(), 'backupctl-ramfs-probe-'));
  try {
    await execa('mount', ['-t', 'ramfs', 'none', dir]);
    await execa('umount', [dir]);
    return true;
  } catch {
    return false;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
})();

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-direct-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  src = join(home, 'export');
  await mkdir(join(src, 'Media'), { recursive: true });
  for (const [i, n] of SIZES.entries()) await writeFile(join(src, 'Media', `IMG-${i}.jpg`), randomBytes(n));
  await writeFile(join(src, '_chat.txt'), Array.from({ length: 4000 }, (_, i) => `[${i}] Zoë: see you at ${i % 24}h\n`).join(''));
});
afterAll(() => cleanup());

/** Back up `src` into a new repository and restore it, with `env`; the resident bytes of the packs after the backup and of each restored file after the restore. */
async function roundTrip(name: string, env: Record<string, string>) {
  const repo = join(home, `repo-${name}`);
  await ok(['repo', 'init', repo], { configDir });
  await backupJson(src, repo, { configDir, env: { ...PACKS, ...env } });
  const packs = [...(await repoFiles(repo))].filter(([p, size]) => p.startsWith('data/') && size > 1_000_000).map(([p]) => join(repo, p));
  const packResident = await Promise.all(packs.map(resident));
  const out = join(home, `out-${name}`);
  await ok(['restore', '--repo', repo, 'latest', '-d', out], { configDir, env: { BACKUPCTL_RECOVERY_CODE: rc.code, ...env } });
  const media = (await readdir(join(out, 'Media'))).sort();
  const fileResident = new Map<string, number>();
  for (const f of media) fileResident.set(f, await resident(join(out, 'Media', f)));
  fileResident.set('_chat.txt', await resident(join(out, '_chat.txt')));
  expect(await snapshot(out)).toEqual(await snapshot(src)); // read only now: it fills the cache
  return { packs, packResident, fileResident };
}

describe.skipIf(!canSee)('direct I/O', () => {
  it('packs sealed on the thread and restored media of 64 KiB and more do not pass through the page cache; all restore byte-identical', async () => {
    const { packs, packResident, fileResident } = await roundTrip('direct', {});
    expect(packs.length).toBeGreaterThanOrEqual(3);
    expect(packResident).toEqual(packs.map(() => 0));
    // Media from 64 KiB: direct, but for the bytes after a file's last whole block, written through
    // the cache (one page at most). The small photo and the chat log (cut where its content says)
    // go through the cache, but their pages may already be reclaimed: the other test shows fincore sees them.
    for (const [i, n] of SIZES.entries()) {
      if (n >= 65_536) expect(fileResident.get(`IMG-${i}.jpg`), `IMG-${i}.jpg`).toBeLessThanOrEqual(n % 4096 ? 4096 : 0);
    }
    expect(fileResident.size).toBe(9);
  });

  it('BACKUPCTL_DIRECT_IO=0 writes packs and files through the page cache, restoring the same bytes', async () => {
    const { packs, packResident, fileResident } = await roundTrip('buffered', { BACKUPCTL_DIRECT_IO: '0' });
    expect(packs.length).toBeGreaterThanOrEqual(3);
    // Pages written through the cache stay there unless memory runs short: in all, some are seen.
    expect(packResident.reduce((a, b) => a + b, 0) + [...fileResident.values()].reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });
});

describe.skipIf(!canMount)('a file system that refuses O_DIRECT (ramfs)', () => {
  let mnt: string;
  beforeAll(async () => {
    mnt = join(home, 'ramfs');
    await mkdir(mnt);
    await execa('mount', ['-t', 'ramfs', 'none', mnt]);
  });
  afterAll(() => execa('umount', [mnt]).then(() => undefined, () => undefined));

  it('a backup into it and a restore onto it go through the page cache: byte-identical, verify passes, no temporary file is left', async () => {
    const repo = join(mnt, 'repo');
    await ok(['repo', 'init', repo], { configDir });
    await backupJson(src, repo, { configDir, env: PACKS });
    const files = [...(await repoFiles(repo)).keys()];
    expect(files.filter((p) => p.startsWith('data/')).length).toBeGreaterThanOrEqual(3);
    expect(files.filter((p) => p.split('/').at(-1)!.startsWith('.'))).toEqual([]); // the file each refused open created is gone
    const out = join(mnt, 'out');
    await ok(['restore', '--repo', repo, 'latest', '-d', out], { configDir, env: { BACKUPCTL_RECOVERY_CODE: rc.code } });
    expect(await snapshot(out)).toEqual(await snapshot(src)); // nothing else in DEST either
    const v = await runCli(['verify', '--repo', repo, '--read-data'], { configDir, env: { BACKUPCTL_RECOVERY_CODE: rc.code } });
    expect(v.exitCode, v.stdout + v.stderr).toBe(0);
  });
});
