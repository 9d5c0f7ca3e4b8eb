// restore --salvage against an attacker: segments spliced in from another archive sealed to the
// same recovery code never authenticate, so none of their content is released; records found
// by scanning (after damage, from a stream) obey the path rules, and a record planted inside a
// file's content is dropped once the index shows it was never an entry. Archives are built with
// the library's writer, sealed to the test's recovery code, as anyone holding it could.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { Codec, EntryType, REC_ENTRY, TAG_LEN } from '../../src/archive/format.js';
import { encodeHead, encodeTail, type EntryMeta, type IndexEntry } from '../../src/archive/entries.js';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import { mapArchive } from '../support/archive-map.js';
import { STACK_TRACE, exists, makeHome, newRecoveryCode, onlyJson, runCli, snapshot, type RecoveryCode } from '../support/cli.js';

const SEG = 4096;
const SEALED = SEG + TAG_LEN;
const T = 1_700_000_000_000_000_000n;

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;

type Spec = { path: string; dir?: true; data?: Buffer };

/** An archive holding exactly `specs`, in order, sealed to the test's recovery code; and its index. */
async function craft(specs: Spec[]): Promise<{ bytes: Buffer; index: IndexEntry[]; headerLength: number }> {
  async function* entries(): AsyncGenerator<SourceEntry> {
    for (const s of specs) {
      const base = { path: s.path, mode: s.dir ? 0o755 : 0o644, mtimeNs: T };
      if (s.dir) yield { ...base, type: EntryType.Dir };
      else yield { ...base, type: EntryType.File, open: async () => chunkedContent((async function* () { yield s.data!; })(), false) };
    }
  }
  const sink = new MemorySink();
  await writeArchive({ recipients: [recipientFromEntry(recoveryRecipientEntry(rc.code, 'crafted'))], entries: entries(), sink, segmentSize: SEG });
  const bytes = Buffer.from(sink.bytes);
  const file = join(home, `tmp-${Math.random().toString(36).slice(2)}.bkp`);
  await writeFile(file, bytes);
  const { index, headerLength } = await mapArchive(file, rc.code);
  return { bytes, index, headerLength };
}

/** A complete, well-formed entry record for a stored file, as a writer would emit it. */
function fakeRecord(path: string, content: Buffer): Buffer {
  const meta: EntryMeta = {
    type: EntryType.File, path, mode: 0o644, mtimeNs: T, codec: Codec.Stored, target: '',
    size: BigInt(content.length), sha256: createHash('sha256').update(content).digest(), flags: 0,
  };
  const len = Buffer.alloc(4);
  len.writeUInt32BE(content.length);
  return Buffer.concat([Buffer.of(REC_ENTRY), encodeHead(meta), len, content, Buffer.alloc(4), encodeTail(meta)]);
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const code = () => ['--recovery-code-file', rc.file];

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-salvage-hostile-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
});
afterAll(() => cleanup());

/** Salvage `bytes` from the file and from stdin into fresh dirs; both results. */
async function salvageBoth(name: string, bytes: Buffer) {
  const file = join(home, `${name}.bkp`);
  await writeFile(file, bytes);
  const dests = [join(home, 'out', `${name}-file`), join(home, 'out', `${name}-stdin`)];
  const runs = await Promise.all([
    runCli(['restore', '--json', '--salvage', file, '-d', dests[0]!, ...code()], { configDir }),
    runCli(['restore', '--json', '--salvage', '-', '-d', dests[1]!, ...code()], { configDir, inputFile: file }),
  ]);
  return Promise.all(runs.map(async (r, k) => {
    expect(r.stderr).not.toMatch(STACK_TRACE);
    return { r, dest: dests[k]!, j: onlyJson<{ ok: boolean; lost: Array<{ path: string | null }>; damagedSegments: number[] }>(r), tree: await snapshot(dests[k]!) };
  }));
}

describe('restore --salvage: hostile archives', () => {
  it('segments spliced in from another archive sealed to the same recovery code release nothing of it', async () => {
    // Two archives of the same paths and sizes, so that B's segments sit where A's would.
    const paths = Array.from({ length: 60 }, (_, i) => `chat/media-${String(i).padStart(2, '0')}.bin`);
    const sizes = paths.map((_, i) => 300 + ((i * 389) % 3000));
    const mk = (): Spec[] => [{ path: 'chat', dir: true }, ...paths.map((p, i) => ({ path: p, data: randomBytes(sizes[i]!) }))];
    const specA = mk();
    const specB = mk();
    const A = await craft(specA);
    const B = await craft(specB);
    expect(B.bytes.length).toBe(A.bytes.length);
    const seg = (i: number) => A.headerLength + i * SEALED;
    const k = 10;
    const spliced = Buffer.concat([A.bytes.subarray(0, seg(k)), B.bytes.subarray(seg(k), seg(k + 3)), A.bytes.subarray(seg(k + 3))]);
    const ofB = new Set(specB.filter((s) => s.data).map((s) => sha(s.data!)));
    for (const { r, j, tree } of await salvageBoth('spliced', spliced)) {
      expect(r.exitCode, r.stderr).toBe(10);
      expect(j.damagedSegments).toEqual([k, k + 1, k + 2]);
      // Nothing of B's; everything restored is A's own content, byte for byte.
      for (const [p, e] of Object.entries(tree)) {
        if (e.type !== 'file') continue;
        expect(ofB.has(e.sha256!), p).toBe(false);
        expect(e.sha256, p).toBe(sha(specA.find((s) => s.path === p)!.data!));
      }
      const lost = A.index.filter((e) => Math.floor((e.offset + e.length - 1) / SEG) >= k && Math.floor(e.offset / SEG) <= k + 2).map((e) => e.path);
      expect(lost.length).toBeGreaterThan(2);
      expect(j.lost.map((l) => l.path).sort()).toEqual(lost.sort());
      expect(Object.keys(tree).length).toBe(A.index.length - lost.length);
    }
    // B's whole tail in place of A's: no segment from k on authenticates, the final one included.
    const tail = Buffer.concat([A.bytes.subarray(0, seg(k)), B.bytes.subarray(seg(k))]);
    for (const { r, j, tree } of await salvageBoth('spliced-tail', tail)) {
      expect(r.exitCode, r.stderr).toBe(10);
      expect(j.damagedSegments[0]).toBe(k);
      for (const e of Object.values(tree)) if (e.type === 'file') expect(ofB.has(e.sha256!)).toBe(false);
    }
  });

  it('records planted in a file\'s content: never outside DEST, and dropped once the index shows they are not entries', async () => {
    const planted = randomBytes(500);
    const carrier = Buffer.concat([
      randomBytes(5000),
      fakeRecord('../escaped.txt', Buffer.from('escaped\n')),
      fakeRecord('/tmp/absolute-escape.txt', Buffer.from('escaped\n')),
      fakeRecord('planted.txt', planted),
      randomBytes(5000),
    ]);
    const after = Array.from({ length: 20 }, (_, i) => ({ path: `after/f${i}.bin`, data: randomBytes(200 + i * 50) }));
    const A = await craft([
      { path: 'before.txt', data: randomBytes(6000) },
      { path: 'carrier.bin', data: carrier },
      { path: 'after', dir: true },
      ...after,
    ]);
    const c = A.index.find((e) => e.path === 'carrier.bin')!;
    // Damage the carrier's head only: a stream has to scan from the next segment, through its content.
    const head = Math.floor(c.offset / SEG);
    expect(Math.floor((c.offset + c.length) / SEG)).toBeGreaterThan(head + 1);
    const bytes = Buffer.from(A.bytes);
    bytes[A.headerLength + head * SEALED + 17]! ^= 1;
    for (const { r, j, tree } of await salvageBoth('planted', bytes)) {
      expect(r.exitCode, r.stderr).toBe(10);
      expect(Object.keys(tree)).not.toContain('planted.txt');
      expect(Object.keys(tree)).not.toContain('escaped.txt');
      expect(j.lost.map((l) => l.path)).toContain('carrier.bin');
      for (const f of after) expect(tree[f.path]?.sha256, f.path).toBe(sha(f.data));
    }
    // Nothing landed beside DEST or at the absolute path.
    expect(await exists(join(home, 'out', 'escaped.txt'))).toBe(false);
    expect(await exists('/tmp/absolute-escape.txt')).toBe(false);
  });

  it('a record from a proven boundary that breaks the path rules makes salvage refuse the archive', async () => {
    // The writer refuses such paths; this archive is what an attacker could write by hand: the
    // first record, read from segment 0, climbs out of DEST.
    const file = join(home, 'climb.bkp');
    const sink = new MemorySink();
    await writeArchive({
      recipients: [recipientFromEntry(recoveryRecipientEntry(rc.code, 'crafted'))],
      entries: (async function* (): AsyncGenerator<SourceEntry> {
        yield { path: '../climbed.txt', type: EntryType.File, mode: 0o644, mtimeNs: T, open: async () => chunkedContent((async function* () { yield Buffer.from('x'); })(), false) };
      })(),
      sink,
      segmentSize: SEG,
    });
    await writeFile(file, sink.bytes);
    const dest = join(home, 'climb-dest');
    for (const args of [[file], ['-']]) {
      const r = await runCli(['restore', '--salvage', ...args, '-d', dest, ...code()], { configDir, ...(args[0] === '-' ? { inputFile: file } : {}) });
      expect(r.exitCode, r.stderr).toBe(5);
      expect(r.stderr).toMatch(/^backupctl: refusing to restore entry "\.\.\/climbed\.txt": it climbs out of the target directory\n$/);
    }
    expect((await readdir(home)).filter((n) => n.startsWith('climb'))).toEqual(['climb.bkp']);
  });
});
