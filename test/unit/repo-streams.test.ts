// What a backup streams instead of holding: the tree, cut as it is written (the same chunks as
// the whole tree cut at once, so unchanged parts of a tree dedup against older snapshots), and
// the files cache, read along the walk in its order.
import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunkStream, gearTable } from '../../src/repo/chunker.js';
import { walkOrder } from '../../src/repo/files-cache.js';
import { TreeChunker, encodeEntry, type TreeEntry } from '../../src/repo/tree.js';
import { Codec, EntryType } from '../../src/archive/format.js';
import { decoder, freeDecoded } from '../../src/archive/records.js';
import { PackWriter } from '../../src/repo/pack.js';
import { encodeBlob } from '../../src/repo/blob-codec.js';
import { BlobType, RepoIndex } from '../../src/repo/index.js';
import { DedupKeys, newRepoKeys } from '../../src/repo/keys.js';
import { LocalStore } from '../../src/store/local.js';

describe('repository streams', () => {
  it('a chunk met twice in a run is stored once: in the open pack, after content found stored was taken out of it, and in a pack being written', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'backupctl-pack-ids-'));
    try {
      const store = new LocalStore(dir);
      const keys = newRepoKeys();
      const dedup = new DedupKeys(keys.dedupKey);
      const index = await RepoIndex.load(store, dedup);
      const w = new PackWriter(store, keys, dedup, index, 10_000);
      const chunk = (i: number) => Buffer.concat(Array.from({ length: 32 }, (_, k) => createHash('sha256').update(`${i}/${k}`).digest())).subarray(0, 1000);
      const add = (i: number) => w.add(dedup.chunkId(chunk(i)), BlobType.Data, chunk(i), false);
      const read = async (i: number) => {
        const room = await w.reserve();
        chunk(i).copy(room);
        return w.addRead(1000, BlobType.Data);
      };
      expect(await add(0)).toBe(true);
      await read(0); // read again (a renamed file): taken out once the pack is judged full
      for (let i = 1; i <= 7; i++) await read(i);
      expect(await add(8)).toBe(true); // full (10,000 bytes) until chunk 0's copy is taken out: the pack stays open, its entries moved
      expect(await add(5)).toBe(false);
      expect(await add(8)).toBe(false);
      for (let i = 9; i <= 30; i++) {
        expect(await add(i)).toBe(true);
        expect(await add(i - 1)).toBe(false); // some of them in a pack just closed, being written
      }
      await w.finish();
      expect(w.newChunks).toBe(31);
      expect(w.packs).toBeGreaterThan(2);
      for (let i = 0; i <= 30; i++) expect(index.has(dedup.chunkId(chunk(i)))).toBe(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a chunk decoded with its size comes back in memory of about its size, freed once written (not a view of 1 MiB each)', () => {
    for (const size of [300, 5000, 70_000, 300_000]) {
      const plain = Buffer.from('chat line '.repeat(size / 10));
      const { codec, data } = encodeBlob(plain, true);
      expect(codec).not.toBe(Codec.Stored);
      const got = decoder(codec, 'chunk', size)(data);
      expect(got.equals(plain)).toBe(true);
      // A small one is copied into Node's buffer pool (a 64 KiB slab, shared); a large one has a buffer of its own.
      expect(got.buffer.byteLength).toBeLessThanOrEqual(Math.max(64 << 10, size + 1));
      freeDecoded(got, codec, size);
      expect(got.buffer.byteLength).toBe(size >= 64 << 10 ? 0 : 64 << 10); // detached (its memory given back), or the pool left alone
    }
    // Stored: the input itself, never freed.
    const stored = Buffer.from('x'.repeat(300));
    freeDecoded(decoder(Codec.Stored, 'chunk', 300)(stored), Codec.Stored, 300);
    expect(stored.length).toBe(300);
  });

  it('the tree cut entry by entry gives the chunks of the whole tree cut at once', async () => {
    const gear = gearTable(randomBytes(1024));
    const entries: TreeEntry[] = Array.from({ length: 12_000 }, (_, i) => ({
      type: EntryType.File, path: `Media/dir-${i % 37}/IMG-${i}-${randomBytes(4).toString('hex')}.jpg`, mode: 0o644, mtimeNs: BigInt(i) * 1_000_000n,
      size: i * 1000, target: '', chunks: Array.from({ length: (i % 5) + (i === 7 ? 9000 : 0) }, () => randomBytes(32)), // one entry larger than the largest chunk
    }));
    const whole = Buffer.concat(entries.map(encodeEntry));
    const want: string[] = [];
    let at = 0;
    await chunkStream(gear, (dst) => {
      const n = whole.copy(dst, 0, at);
      at += n;
      return n;
    }, (c) => void want.push(c.toString('hex')));
    const got: string[] = [];
    const t = new TreeChunker(gear, async (c) => void got.push(c.toString('hex')));
    for (const e of entries) await t.add(e);
    await t.finish();
    expect(want.length).toBeGreaterThan(20);
    expect(got).toEqual(want);
  });

  it('walkOrder is the walk\'s order: names compared as UTF-8 bytes, a directory before what is in it', () => {
    const walk = ['a', 'a/x', 'a/x/y', 'a/z', 'a-b', 'a.c', 'b', 'é', '\ue000', '😀', '😀/a'];
    const shuffled = [...walk].sort(() => Math.random() - 0.5);
    expect(shuffled.sort(walkOrder)).toEqual(walk);
    // The byte order it stands for, name by name.
    const bytes = (p: string) => p.split('/').map((n) => Buffer.from(n));
    for (let i = 1; i < walk.length; i++) {
      const [x, y] = [bytes(walk[i - 1]!), bytes(walk[i]!)];
      const k = x.findIndex((n, j) => j >= y.length || !n.equals(y[j]!));
      expect(k === -1 ? x.length < y.length : Buffer.compare(x[k]!, y[k]!) < 0).toBe(true);
    }
  });
});
