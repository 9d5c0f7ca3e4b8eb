// store/read-ahead.ts on a real local store: files handed over in their listed order while
// several are read ahead, a file deleted after the listing handed over as gone, any other
// failure thrown, and nothing read beyond the window ahead of the file in use.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalStore } from '../../src/store/local.js';
import { readInTurn } from '../../src/store/read-ahead.js';

let dir: string;
let store: LocalStore;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'backupctl-read-ahead-'));
  await mkdir(join(dir, 'index'));
  for (let i = 0; i < 30; i++) await writeFile(join(dir, 'index', `f${String(i).padStart(2, '0')}`), `content ${i}`);
  store = new LocalStore(dir);
});
afterEach(() => rm(dir, { recursive: true, force: true }));

describe('readInTurn', () => {
  it('hands every file over in the order listed, with its bytes', async () => {
    const listed = (await store.list('index')).sort((a, b) => b.path.localeCompare(a.path)); // an order the disk would not give
    const got: string[] = [];
    await readInTurn(store, listed, async (f, bytes) => {
      await new Promise((r) => setTimeout(r, (f.path.charCodeAt(f.path.length - 1) % 3) * 2)); // uses that take their time
      got.push(`${f.path}=${bytes!.toString()}`);
    });
    expect(got).toEqual(listed.map((f) => `${f.path}=content ${Number(f.path.slice(-2))}`));
  });

  it('hands a file deleted since the listing over as null, and goes on', async () => {
    const listed = (await store.list('index')).sort((a, b) => a.path.localeCompare(b.path));
    await unlink(join(dir, 'index', 'f03'));
    const gone: string[] = [];
    let n = 0;
    await readInTurn(store, listed, (f, bytes) => {
      n++;
      if (!bytes) gone.push(f.path);
    });
    expect(gone).toEqual(['index/f03']);
    expect(n).toBe(30);
  });

  it('throws any other failure, after handing over the files before it', async () => {
    const listed = (await store.list('index')).sort((a, b) => a.path.localeCompare(b.path));
    await unlink(join(dir, 'index', 'f05'));
    await mkdir(join(dir, 'index', 'f05')); // a directory where the file was: EISDIR, not "missing"
    const seen: string[] = [];
    await expect(readInTurn(store, listed, (f) => void seen.push(f.path))).rejects.toThrow(/f05/);
    expect(seen).toEqual(listed.slice(0, 5).map((f) => f.path));
  });

  it('reads at most 8 files ahead of the one in use', async () => {
    const listed = (await store.list('index')).sort((a, b) => a.path.localeCompare(b.path));
    const started: string[] = [];
    const counting = Object.assign(Object.create(store) as LocalStore, {
      read: (path: string) => (started.push(path), store.read(path)),
    });
    const ahead: number[] = [];
    await readInTurn(counting, listed, async (f) => {
      ahead.push(started.length - 1 - listed.findIndex((l) => l.path === f.path));
      await new Promise((r) => setTimeout(r, 1));
    });
    expect(Math.max(...ahead)).toBe(8);
    expect(started).toEqual(listed.map((f) => f.path));
  });
});
