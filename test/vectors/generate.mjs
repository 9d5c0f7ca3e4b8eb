#!/usr/bin/env node
// Generates the format test vectors in fixtures/vectors/ through the library (the CLI cannot fix
// its randomness), in the style of age's testkit: every vector is an archive plus a manifest
// entry naming the exact failure class expected. Run after `npm run build`:
//   node test/vectors/generate.mjs [OUTDIR]
// Vectors whose content is compressed depend on the zstd/zlib build, so only stored-content
// vectors are compared byte for byte when regenerated (see test/unit/vectors.test.ts).
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chunkedContent, writeArchive } from '../../dist/archive/pack.js';
import { MemorySink } from '../../dist/archive/output.js';
import { wrapX25519 } from '../../dist/keys/x25519.js';
import { formatRecoveryCode, recoveryKeyPair } from '../../dist/keys/recovery-code.js';
import { encodeHeader, parseHeader } from '../../dist/archive/header.js';

const out = process.argv[2] ?? new URL('../../fixtures/vectors/', import.meta.url).pathname;
mkdirSync(out, { recursive: true });

const hex = (s) => Buffer.from(s, 'hex');
const CODE_A = formatRecoveryCode('0123456789ABCDEFGHJKMNPQRSTV');
const CODE_B = formatRecoveryCode('WXYZ0123456789ABCDEFGHJKMNPQ');
const FILE_KEY = hex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
const NONCE = hex('a0a1a2a3a4a5a6a7a8a9aaabacadaeaf');
const EPH = [hex('4040404040404040404040404040404040404040404040404040404040404040'), hex('5050505050505050505050505050505050505050505050505050505050505050')];
const CREATED = '2026-11-22T12:00:00Z';
const MTIME = 1700000000123456789n;

/** A recovery-code recipient with a fixed ephemeral key (wrapX25519 zeroes what it is given). */
function recipient(code, label, eph) {
  const { publicKey } = recoveryKeyPair(code);
  return { type: 'recovery', label, wrap: (fk) => wrapX25519('recovery', label, publicKey, fk, undefined, Uint8Array.from(eph)) };
}
const futureRecipient = { type: 'future-x', label: 'a slot type from the future', wrap: () => ({ type: 'future-x', label: 'a slot type from the future', tag: 'AAAAAA', share: 'AAAA', body: 'AAAA', params: { anything: [1, 2, 3] } }) };

function* entriesFrom(files) {
  for (const f of files) {
    const base = { path: f.path, mode: f.mode ?? 0o644, mtimeNs: MTIME };
    if (f.dir) yield { ...base, type: 1, mode: f.mode ?? 0o755 };
    else if (f.link) yield { ...base, type: 2, mode: 0o777, target: f.link };
    else {
      const data = Buffer.from(f.data);
      yield {
        ...base, type: 0,
        open: async () => chunkedContent((async function* () { for (let i = 0; i < data.length; i += 1 << 20) yield data.subarray(i, i + (1 << 20)); })(), !!f.compress),
      };
    }
  }
}

async function build({ files, recipients = [recipient(CODE_A, 'vector code A', EPH[0])], segmentSize = 4096, codec }) {
  const sink = new MemorySink();
  await writeArchive({ recipients, entries: entriesFrom(files), sink, segmentSize, codec, fixed: { fileKey: FILE_KEY, nonce: NONCE, created: CREATED } });
  return sink.bytes;
}

// Deterministic pseudo-random content (media does not compress).
function prng(n, seed) {
  const outb = Buffer.alloc(n);
  let x = createHash('sha256').update(seed).digest();
  for (let o = 0; o < n; o += 32) { x = createHash('sha256').update(x).digest(); x.copy(outb, o, 0, Math.min(32, n - o)); }
  return outb;
}
const chat = Array.from({ length: 400 }, (_, i) => `12/03/2024, 21:${String(i % 60).padStart(2, '0')} - Ana: message ${i} 😀 ¿qué tal?\n`).join('');
const basicFiles = [
  { path: 'Media', dir: true },
  { path: 'Media/IMG-20240312-WA0003.jpg', data: Buffer.concat([hex('ffd8ffe000104a464946'), prng(9000, 'jpg')]) },
  { path: 'Media/PTT-20240312-WA0004.opus', data: Buffer.concat([Buffer.from('OggS'), prng(5000, 'opus')]) },
  { path: 'Media/empty.txt', data: '' },
  { path: 'Media/ñandú.txt', data: 'unicode name\n', mode: 0o640 },
  { path: 'Media/latest.jpg', link: 'IMG-20240312-WA0003.jpg' },
  { path: '_chat.txt', data: chat },
  { path: 'empty-dir', dir: true, mode: 0o700 },
];
const storedFiles = basicFiles; // compress: false everywhere → stable bytes
const compressFiles = basicFiles.map((f) => (f.path === '_chat.txt' ? { ...f, compress: true } : f));

const sha = (b) => createHash('sha256').update(b).digest('hex');
const manifest = { codes: { A: CODE_A, B: CODE_B }, fileKey: FILE_KEY.toString('hex'), vectors: [] };
function emit(name, bytes, v) {
  writeFileSync(join(out, `${name}.bctl`), bytes);
  manifest.vectors.push({ name: `${name}.bctl`, sha256: sha(bytes), ...v });
}
const expectedEntries = basicFiles.map((f) => ({ path: f.path, type: f.dir ? 'dir' : f.link ? 'symlink' : 'file', ...(f.link ? { target: f.link } : {}), ...(f.data !== undefined ? { sha256: sha(Buffer.from(f.data)) } : {}) }));

const SEALED = 4096 + 16;
const ok = await build({ files: storedFiles });
const headerLen = parseHeader(ok).headerLength;
const segs = (b) => Math.ceil((b.length - headerLen) / SEALED);

emit('ok_stored', ok, { expect: 'success', exit: 0, code: 'A', deterministic: true, entries: expectedEntries, description: 'stored content, 4 KiB segments, dir, empty file, unicode name, symlink, empty dir' });
emit('ok_zstd', await build({ files: compressFiles, codec: 1 }), { expect: 'success', exit: 0, code: 'A', entries: expectedEntries, description: 'the chat log zstd-compressed (codec 1)' });
emit('ok_deflate', await build({ files: compressFiles, codec: 2 }), { expect: 'success', exit: 0, code: 'A', entries: expectedEntries, description: 'the chat log raw-deflate-compressed (codec 2)' });
emit('ok_two_slots_and_unknown_type', await build({ files: storedFiles, recipients: [futureRecipient, recipient(CODE_B, 'vector code B', EPH[1]), recipient(CODE_A, 'vector code A', EPH[0])] }), {
  expect: 'success', exit: 0, code: 'A', deterministic: true, entries: expectedEntries, description: 'an unknown slot type is skipped; code A opens the third slot',
});
emit('ok_big_segments', await build({ files: storedFiles, segmentSize: 1 << 20 }), { expect: 'success', exit: 0, code: 'A', deterministic: true, entries: expectedEntries, description: 'one 1 MiB segment: the only segment is the last' });
emit('no_match', await build({ files: storedFiles, recipients: [recipient(CODE_B, 'vector code B', EPH[1])] }), { expect: 'no match', exit: 4, code: 'A', deterministic: true, description: 'only code B has a slot; code A is well-formed but opens nothing' });

const mutate = (f) => { const b = Buffer.from(ok); return f(b) ?? b; };
emit('header_bad_mac', mutate((b) => { b[headerLen - 1] ^= 1; }), { expect: 'header failure', exit: 5, code: 'A', deterministic: true, description: 'last byte of the header MAC flipped' });
emit('header_label_changed', mutate((b) => { const i = b.indexOf('vector code A'); b[i] = 'V'.charCodeAt(0); }), { expect: 'header failure', exit: 5, code: 'A', deterministic: true, description: 'slot label edited (same length): the MAC no longer matches' });
emit('header_unknown_major', mutate((b) => { b[8] = 2; }), { expect: 'unsupported version', exit: 5, code: 'A', deterministic: true, description: 'major version 2' });
emit('header_bad_json', mutate((b) => { b[14] = '['.charCodeAt(0); }), { expect: 'header failure', exit: 5, code: 'A', deterministic: true, description: 'the JSON header is not an object' });
emit('not_an_archive', Buffer.from('PK\x03\x04 this is a zip file, not an archive'), { expect: 'not an archive', exit: 5, code: 'A', deterministic: true, description: 'bad magic' });
emit('payload_truncated_mid_segment', ok.subarray(0, ok.length - 100), { expect: 'payload failure', exit: 5, code: 'A', deterministic: true, description: 'last 100 bytes cut' });
emit('payload_truncated_at_boundary', ok.subarray(0, headerLen + (segs(ok) - 1) * SEALED), { expect: 'payload failure', exit: 5, code: 'A', deterministic: true, description: 'last segment dropped exactly at a segment boundary' });
emit('payload_trailing_garbage', Buffer.concat([ok, Buffer.from('garbage')]), { expect: 'payload failure', exit: 5, code: 'A', deterministic: true, description: 'bytes appended after the last segment' });
emit('payload_segments_swapped', mutate((b) => { const s0 = headerLen, s1 = headerLen + SEALED; const t = Buffer.from(b.subarray(s0, s1)); b.copy(b, s0, s1, s1 + SEALED); t.copy(b, s1); }), { expect: 'payload failure', exit: 5, code: 'A', deterministic: true, description: 'segments 0 and 1 swapped' });
emit('payload_segment_duplicated', Buffer.concat([ok.subarray(0, headerLen + SEALED), ok.subarray(headerLen, ok.length)]), { expect: 'payload failure', exit: 5, code: 'A', deterministic: true, description: 'segment 0 repeated' });
emit('payload_last_segment_flipped', mutate((b) => { b[b.length - 20] ^= 0x80; }), { expect: 'payload failure', exit: 5, code: 'A', deterministic: true, description: 'one bit flipped in the last segment' });
emit('payload_empty', ok.subarray(0, headerLen), { expect: 'payload failure', exit: 5, code: 'A', deterministic: true, description: 'header only, no payload' });
emit('unsafe_entry_dotdot', await build({ files: [{ path: 'a', dir: true }, { path: 'a/../../evil.txt', data: 'x' }] }), { expect: 'unsafe entry', exit: 5, code: 'A', deterministic: true, description: 'an entry climbing out of the target directory (valid crypto, refused on restore)' });
emit('unsafe_entry_through_symlink', await build({ files: [{ path: 'a', link: '/tmp' }, { path: 'a/x', data: 'x' }] }), { expect: 'unsafe entry', exit: 5, code: 'A', deterministic: true, description: 'a symlink followed by an entry beneath it' });

// Keep the header encoder in the loop: re-encoding a parsed header gives the same bytes.
const h = parseHeader(ok);
if (!encodeHeader({ created: h.created, segmentSize: h.segmentSize, nonce: h.nonce, slots: h.slots }, FILE_KEY).equals(ok.subarray(0, headerLen))) {
  throw new Error('header re-encoding is not stable');
}
writeFileSync(join(out, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
console.log(`wrote ${manifest.vectors.length} vectors to ${out}`);
