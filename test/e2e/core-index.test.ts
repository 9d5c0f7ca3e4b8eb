// An archive whose index disagrees with its entries, or whose content disagrees with its recorded
// hash, but whose every segment authenticates (made by someone holding the file key): restore
// from a file, restore from a pipe and verify must all refuse it (exit 5), writing nothing. Built
// by decrypting a real archive, editing one byte of the plaintext, and sealing it again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { chunkedContent, writeArchive, type SourceEntry } from '../../src/archive/pack.js';
import { MemorySink } from '../../src/archive/output.js';
import { decodeFooter } from '../../src/archive/entries.js';
import { EntryType, FOOTER_LEN } from '../../src/archive/format.js';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import { STACK_TRACE, exists, makeHome, newRecoveryCode, runCli, type RecoveryCode } from '../support/cli.js';
import { openPayload, sealPayload } from '../support/forge.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;
let forged: string;
let forgedContent: string;

const FILE_KEY = new Uint8Array(32).fill(7);
const NONCE = new Uint8Array(16).fill(9);
const SEG = 4096;

async function* entries(): AsyncGenerator<SourceEntry> {
  for (let i = 0; i < 20; i++) {
    const data = Buffer.alloc(1000, i);
    yield {
      path: `file-${String(i).padStart(2, '0')}.bin`, type: EntryType.File, mode: 0o644, mtimeNs: 1700000000000000000n,
      open: async () => chunkedContent((async function* () { yield data; })(), false),
    };
  }
}

const FORGE = { fileKey: FILE_KEY, nonce: NONCE, segmentSize: SEG };

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-core-index-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  const sink = new MemorySink();
  await writeArchive({
    recipients: [recipientFromEntry(recoveryRecipientEntry(rc.code, 'index test'))], entries: entries(), sink, segmentSize: SEG,
    fixed: { fileKey: FILE_KEY, nonce: NONCE, created: '2026-11-22T12:00:00Z' },
  });
  const { header, plain } = await openPayload(sink.bytes, FORGE);
  const footer = decodeFooter(plain.subarray(plain.length - FOOTER_LEN), plain.length);
  // First index record: 'I' | offset(8) length(8) | type(1) pathLen(2) path | mode(4) ... → flip the mode.
  const rec = footer.indexOffset + 1 + 16;
  const modeAt = rec + 1 + 2 + plain.readUInt16BE(rec + 1) + 3;
  expect(plain[modeAt]).toBe(0o644 & 0xff);
  plain[modeAt] = 0o600 & 0xff;
  forged = join(home, 'forged.bkp');
  await writeFile(forged, await sealPayload(header, plain, FORGE));
  // Control: sealing the untouched plaintext again gives a good archive (so only the edit matters).
  plain[modeAt] = 0o644 & 0xff;
  await writeFile(join(home, 'control.bkp'), await sealPayload(header, plain, FORGE));
  // One byte of file-05.bin's content (its frame: length 1000, then 1000 bytes of 5) changed,
  // its tail and index entry left alone.
  const frame = plain.indexOf(Buffer.concat([Buffer.from([0, 0, 0x03, 0xe8]), Buffer.alloc(1000, 5)]));
  expect(frame).toBeGreaterThan(0);
  plain[frame + 4 + 500] ^= 1;
  forgedContent = join(home, 'forged-content.bkp');
  await writeFile(forgedContent, await sealPayload(header, plain, FORGE));
});
afterAll(() => cleanup());

describe('an archive that disagrees with itself, sealed with its own key', () => {
  const code = () => ['--recovery-code-file', rc.file];

  it('control: the re-sealed untouched archive restores and verifies', async () => {
    const r = await runCli(['verify', join(home, 'control.bkp'), ...code()], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
  });

  for (const [what, file, message] of [
    ['an edited index entry', () => forged, /^backupctl: .*index/],
    ['content that does not match its hash', () => forgedContent, /^backupctl: file-05\.bin: content hash mismatch/],
  ] as const) {
    for (const how of ['verify', 'restore from a file', 'restore from a pipe'] as const) {
      it(`${what}, ${how}: exit 5, one line, nothing written`, async () => {
        const out = join(home, `out-${what.replace(/ /g, '-')}-${how.replace(/ /g, '-')}`);
        const args = how === 'verify' ? ['verify', file()] : ['restore', how === 'restore from a pipe' ? '-' : file(), '-d', out];
        const r = await runCli([...args, ...code()], { configDir, ...(how === 'restore from a pipe' ? { inputFile: file() } : {}) });
        expect(r.exitCode, r.stderr).toBe(5);
        expect(r.stderr).toMatch(message);
        expect(r.stderr).not.toMatch(STACK_TRACE);
        expect(r.stderr.trim().split('\n')).toHaveLength(1);
        expect(await exists(out)).toBe(false);
      });
    }
  }

  it('leaves no staging debris beside the archives', async () => {
    expect((await readdir(home)).filter((n) => n.startsWith('.backupctl'))).toEqual([]);
  });
});
