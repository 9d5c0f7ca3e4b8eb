// Changing who can open an existing archive (backupctl-rotate(1)):
// - re-wrap: the same file key in a new set of slots, so a new header and MAC, and the payload
//   bytes copied untouched (disk speed). Anyone who kept an older copy of the header can still
//   open the payload with a slot that was removed: the file key has not changed.
// - re-key: a new file key and payload nonce, the same plaintext re-sealed segment by segment
//   (record offsets are plaintext offsets, so the index stays valid). Old headers open nothing.
// Both write through a Sink; `placeVerified` checks the result before it takes the final name.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { rename } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { BackupctlError, corruptError, ioError } from '../errors.js';
import type { Recipient, Slot } from '../keys/types.js';
import { publishNew, syncDir } from '../util/fsutil.js';
import { PAYLOAD_NONCE_LEN } from './format.js';
import { encodeHeader, readArchiveHeader, verifyMac } from './header.js';
import { openSink, type Sink } from './output.js';
import { ArchiveFile } from './reader.js';
import { payloadKey, SegmentSealer } from './stream.js';
import { verifyArchive } from './verify.js';

async function* fileBytes(path: string, start: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
  try {
    yield* createReadStream(path, { start, highWaterMark: 1 << 20, ...(signal ? { signal } : {}) }) as AsyncIterable<Buffer>;
  } catch (err) {
    if ((err as Error)?.name === 'AbortError') throw signal?.reason ?? err;
    throw ioError(err, path, 'read');
  }
}

/** SHA-256 of the payload bytes of the archive at `path` (everything after its header). */
async function payloadDigest(path: string, headerLength: number, signal?: AbortSignal): Promise<Buffer> {
  const h = createHash('sha256');
  for await (const c of fileBytes(path, headerLength, signal)) h.update(c);
  return h.digest();
}

export interface RewrapResult {
  /** SHA-256 of the payload as copied: the verification compares the written file with it. */
  payloadSha256: Buffer;
}

/**
 * Write `source` with a new header holding `slots` (each must wrap `fileKey`, the key the source
 * header verified with) and its payload copied byte for byte. Every segment is authenticated
 * first: a damaged archive is refused, not given a fresh header that would vouch for it.
 */
export async function rewrapArchive(o: {
  source: ArchiveFile;
  fileKey: Uint8Array;
  slots: Slot[];
  sink: Sink;
  signal?: AbortSignal;
  onProgress?: (p: { bytes: number; total: number }) => void;
}): Promise<RewrapResult> {
  try {
    o.source.attachKey(o.fileKey);
    for (let i = 0; i < o.source.segmentCount; i++) {
      o.signal?.throwIfAborted();
      await o.source.checkSegment(i).catch((err: unknown) => {
        if (err instanceof BackupctlError) throw corruptError(`${o.source.path} is damaged (${err.message}): it was left as it is; backupctl verify names the affected files`, err.detail);
        throw err;
      });
    }
    const { created, segmentSize, nonce, headerLength } = o.source.header;
    await o.sink.write(encodeHeader({ created, segmentSize, nonce, slots: o.slots }, o.fileKey));
    const h = createHash('sha256');
    let bytes = 0;
    for await (const c of fileBytes(o.source.path, headerLength, o.signal)) {
      h.update(c);
      await o.sink.write(c);
      bytes += c.length;
      o.onProgress?.({ bytes, total: o.source.size - headerLength });
    }
    await o.sink.commit();
    return { payloadSha256: h.digest() };
  } catch (err) {
    await o.sink.abort();
    throw err;
  }
}

/**
 * Re-seal the plaintext of `source` (its key attached) under a fresh file key wrapped to
 * `recipients`. Returns a copy of the new file key for verification; the caller zeroes it.
 */
export async function rekeyArchive(o: {
  source: ArchiveFile;
  recipients: Recipient[];
  sink: Sink;
  signal?: AbortSignal;
  onProgress?: (p: { bytes: number; total: number }) => void;
}): Promise<Uint8Array> {
  const fileKey = new Uint8Array(randomBytes(32));
  try {
    const nonce = new Uint8Array(randomBytes(PAYLOAD_NONCE_LEN));
    const { segmentSize } = o.source.header;
    const created = new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
    await o.sink.write(encodeHeader({ created, segmentSize, nonce, slots: o.recipients.map((r) => r.wrap(fileKey)) }, fileKey));
    const sealer = new SegmentSealer(o.sink.segments(payloadKey(fileKey, nonce), segmentSize), segmentSize);
    let bytes = 0;
    for await (const plain of o.source.plaintext()) {
      o.signal?.throwIfAborted();
      await sealer.write(plain);
      bytes += plain.length;
      o.onProgress?.({ bytes, total: o.source.plainSize });
    }
    await sealer.finish();
    await o.sink.commit();
    return fileKey;
  } catch (err) {
    fileKey.fill(0);
    await o.sink.abort();
    throw err;
  }
}

/**
 * Where an archive for `dest` waits while it is verified. One fixed name per destination (the
 * caller holds the lock on `dest`): the writer's own temporary files beside it are named after
 * it, so the next run's openSink(verifyingName) removes any that a killed run left behind.
 */
export const verifyingName = (dest: string) => join(dirname(dest), `.${basename(dest)}.backupctl-verify`);

/** Open the sink for `verifyingName(dest)` (replacing a stale one a killed run left). */
export const openVerifyingSink = (dest: string) => openSink(verifyingName(dest), { force: true });

/**
 * Check the archive written at `tmp` before it takes its final name `dest` (atomic rename):
 * the header must authenticate with `fileKey` and hold exactly `slotTags`; then either the
 * payload equals the copied one (re-wrap) or every record verifies (re-key, migrate). A failure
 * here is a bug or a failing disk, never the user's doing: the original is left as it was.
 */
export async function placeVerified(o: {
  tmp: string;
  dest: string;
  fileKey: Uint8Array;
  /** slotTags: the header's slots, in order; payloadSha256: a re-wrap's copied payload; paths: entries that must be present. */
  expect: { slotTags?: string[]; payloadSha256?: Buffer; paths?: string[] };
  /** Replace `dest` if it exists; else an existing `dest` (made meanwhile) is an error (exit 6) and left alone. */
  replace: boolean;
  signal?: AbortSignal;
}): Promise<{ entries: number; paths: string[] }> {
  const fail = (why: string) => corruptError(`the archive just written did not verify (${why}); nothing was replaced`);
  let entries = 0;
  let paths: string[] = [];
  if (o.expect.payloadSha256) {
    const h = await readArchiveHeader(o.tmp);
    if (!verifyMac(h, o.fileKey)) throw fail('its header does not authenticate');
    if (o.expect.slotTags && h.slots.map((s) => s.tag).join() !== o.expect.slotTags.join()) throw fail('unexpected slots');
    if (!(await payloadDigest(o.tmp, h.headerLength, o.signal)).equals(o.expect.payloadSha256)) throw fail('the payload differs from the original');
  } else {
    const a = await ArchiveFile.open(o.tmp);
    try {
      if (!verifyMac(a.header, o.fileKey)) throw fail('its header does not authenticate');
      if (o.expect.slotTags && a.header.slots.map((s) => s.tag).join() !== o.expect.slotTags.join()) throw fail('unexpected slots');
      a.attachKey(o.fileKey);
      const v = await verifyArchive(a, undefined, o.signal);
      entries = v.entries;
      paths = v.index.map((e) => e.path);
      const missing = (o.expect.paths ?? []).filter((p) => !paths.includes(p));
      if (missing.length) throw fail(`it lacks ${missing.join(', ')}`);
    } finally {
      await a.close();
    }
  }
  o.signal?.throwIfAborted();
  if (o.replace) {
    try {
      await rename(o.tmp, o.dest);
    } catch (err) {
      throw ioError(err, o.dest, 'write');
    }
  } else await publishNew(o.tmp, o.dest);
  await syncDir(dirname(o.dest));
  return { entries, paths };
}

