// Streaming download of one pinned revision (GET files/{id}/revisions/{rev}?alt=media), resumed
// with `Range: bytes=N-` (206) after a cut: pinning the revision means a file replaced on Drive
// meanwhile is never spliced from two versions. To a file: written to FILE.part (with a sidecar
// naming the revision, so a later run resumes it), checked (size, MD5, archive header) and renamed
// only when complete. To a stream (`-o -`): the same bytes, checked at the end.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { readArchiveHeader } from '../archive/header.js';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { publishNew, syncDir, writeFileAtomic } from '../util/fsutil.js';
import { DataOutput } from '../util/stdout-data.js';
import { termSafe } from '../util/terminal-text.js';
import type { DriveClient } from './client.js';
import { Recovery, testableMs } from './retry.js';

/** What is being fetched: fixed before the first byte. */
export interface PinnedFile {
  id: string;
  name: string;
  revisionId: string;
  size: number;
  md5: string;
}

export interface DownloadResult {
  size: number;
  md5: string;
  sha256: string;
}

/** A connection that delivers nothing for this long is cut and resumed (BACKUPCTL_DRIVE_STALL_MS shortens it). */
const stallMs = () => testableMs('BACKUPCTL_DRIVE_STALL_MS', 60_000);

/** Iterate a response body, failing it when it stalls. */
async function* withStallTimeout(body: Readable, ms: number): AsyncGenerator<Buffer> {
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => body.destroy(Object.assign(new Error('download stalled'), { code: 'ETIMEDOUT' })), ms);
  };
  arm();
  try {
    for await (const chunk of body) {
      clearTimeout(timer); // time spent by the consumer (a slow reader of stdout) is not a stall
      yield chunk as Buffer;
      arm();
    }
  } finally {
    clearTimeout(timer);
  }
}

/** A 404 during a download of a whole file: it went away while being read. */
const replacedMeanwhile = (f: PinnedFile) => new BackupctlError(Exit.unavailable, `${termSafe(f.name)} was deleted or replaced on Drive during the download: run pull again`);

/**
 * Fetch bytes [offset, end) of the pinned revision into `write`, resuming after cuts. `hashes`
 * already cover bytes [0, offset). A 404 throws `gone()`.
 */
async function fetchInto(
  drive: DriveClient,
  f: PinnedFile,
  offset: number,
  hashes: Hash[],
  write: (chunk: Buffer) => Promise<void>,
  onProgress?: (bytes: number) => void,
  end = f.size,
  gone: () => Error = () => replacedMeanwhile(f),
): Promise<void> {
  const recovery = new Recovery(drive.signal, drive.auth, drive.onRetry);
  while (offset < end) {
    try {
      // Through the auth transport rather than the generated client, which forces
      // `Accept-Encoding: gzip`: a compressed body would make byte ranges meaningless.
      const res = await drive.raw<Readable>(`drive/v3/files/${encodeURIComponent(f.id)}/revisions/${encodeURIComponent(f.revisionId)}?alt=media`, {
        method: 'GET',
        responseType: 'stream',
        headers: { 'Accept-Encoding': 'identity', ...(offset > 0 || end < f.size ? { Range: `bytes=${offset}-${end < f.size ? end - 1 : ''}` } : {}) },
        validateStatus: (s) => s === 200 || s === 206,
      });
      recovery.succeeded();
      // Drive's MD5 is of the stored bytes, and ranges count them: a body re-encoded in transit
      // (gzip although identity was asked for) is refused rather than guessed at.
      const encoding = res.headers.get('content-encoding')?.trim().toLowerCase();
      if (encoding && encoding !== 'identity') {
        res.data.destroy();
        throw new BackupctlError(Exit.unavailable, `Google Drive sent ${termSafe(f.name)} with Content-Encoding ${JSON.stringify(termSafe(encoding))} although identity was asked for: refused (Drive's checksum is of the stored bytes); try again later`);
      }
      // A server that ignored Range (200) sends from byte 0: skip what we already have.
      let skip = 0;
      if (offset > 0 || end < f.size) {
        const contentRange = res.headers.get('content-range') ?? '';
        if (res.status === 200) skip = offset;
        else if (!contentRange.startsWith(`bytes ${offset}-`)) {
          throw new BackupctlError(Exit.unavailable, `Drive answered a resumed download with Content-Range ${JSON.stringify(contentRange)}`);
        }
      }
      for await (let chunk of withStallTimeout(res.data, stallMs())) {
        if (skip > 0) {
          const n = Math.min(skip, chunk.length);
          skip -= n;
          chunk = chunk.subarray(n);
          if (!chunk.length) continue;
        }
        if (offset + chunk.length > end) {
          if (end === f.size) throw new BackupctlError(Exit.corrupt, `Drive sent more than the ${f.size} bytes of ${termSafe(f.name)}`);
          chunk = chunk.subarray(0, end - offset); // a server that ignored the range's end
        }
        for (const h of hashes) h.update(chunk);
        await write(chunk);
        offset += chunk.length;
        recovery.progressed();
        onProgress?.(offset);
        if (offset === end) break;
      }
      if (offset === end && end < f.size) res.data.destroy();
      if (offset < end) throw Object.assign(new Error('premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    } catch (err) {
      if ((await recovery.recover(err, 'download')) === 'notFound') throw gone();
    }
  }
}

function checkDigest(f: PinnedFile, size: number, md5: string): void {
  if (size !== f.size || md5 !== f.md5) {
    throw new BackupctlError(Exit.corrupt, `the download of ${termSafe(f.name)} does not match Drive's checksum (got ${size} bytes, md5 ${md5}; Drive says ${f.size} bytes, md5 ${f.md5})`);
  }
}

interface PartInfo {
  id: string;
  revisionId: string;
  md5: string;
  size: number;
}

/**
 * Download to `out` via `out.part`; resumes a part left by an earlier run of the same revision.
 * Without `replace`, a file something else put at `out` during the download is left as it is.
 */
export async function downloadToFile(drive: DriveClient, f: PinnedFile, out: string, replace: boolean, onProgress?: (bytes: number) => void): Promise<DownloadResult> {
  const part = `${out}.part`;
  const sidecar = `${out}.part.json`;
  const want: PartInfo = { id: f.id, revisionId: f.revisionId, md5: f.md5, size: f.size };
  const md5 = createHash('md5');
  const sha = createHash('sha256');
  let offset = 0;
  const prev = await readFile(sidecar, 'utf8').then((t) => JSON.parse(t) as PartInfo, () => null);
  const partSize = await stat(part).then((s) => s.size, () => -1);
  if (prev && JSON.stringify(prev) === JSON.stringify(want) && partSize >= 0 && partSize <= f.size) {
    for await (const c of createReadStream(part)) {
      md5.update(c as Buffer);
      sha.update(c as Buffer);
    }
    offset = partSize;
  } else {
    await writeFileAtomic(sidecar, JSON.stringify(want) + '\n', 0o600);
  }
  let fh: FileHandle;
  try {
    fh = await open(part, offset > 0 ? 'r+' : 'w', 0o600);
  } catch (err) {
    throw ioError(err, part, 'create');
  }
  let pos = offset;
  try {
    await fetchInto(drive, f, offset, [md5, sha], async (chunk) => {
      try {
        await fh.write(chunk, 0, chunk.length, pos);
      } catch (err) {
        throw ioError(err, part, 'write');
      }
      pos += chunk.length;
    }, onProgress);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const result = { size: pos, md5: md5.digest('hex'), sha256: sha.digest('hex') };
  try {
    checkDigest(f, result.size, result.md5);
    await readArchiveHeader(part);
  } catch (err) {
    // A bad download is useless for resuming too.
    await unlink(part).catch(() => {});
    await unlink(sidecar).catch(() => {});
    throw err;
  }
  try {
    if (replace) await rename(part, out);
    else await publishNew(part, out); // no-clobber: the output was checked absent before the download only
  } catch (err) {
    if (err instanceof BackupctlError) {
      await unlink(sidecar).catch(() => {});
      throw err;
    }
    throw ioError(err, out, 'rename the download to');
  }
  await unlink(sidecar).catch(() => {});
  await syncDir(dirname(out));
  return result;
}

/**
 * Stream the file to `sink` (standard output). Bytes already written cannot be taken back: the
 * check comes at the end. A reader that goes away first fails the pull (exit 6), not retried as
 * if the network had failed.
 */
export async function downloadToStream(drive: DriveClient, f: PinnedFile, sink: Writable, onProgress?: (bytes: number) => void): Promise<DownloadResult> {
  const md5 = createHash('md5');
  const sha = createHash('sha256');
  const out = new DataOutput(sink);
  let size = 0;
  await fetchInto(drive, f, 0, [md5, sha], async (chunk) => {
    size += chunk.length;
    await out.write(chunk);
  }, onProgress);
  await out.flush();
  out.close();
  const result = { size, md5: md5.digest('hex'), sha256: sha.digest('hex') };
  checkDigest(f, result.size, result.md5);
  return result;
}

/**
 * Bytes [offset, offset+length) of the pinned revision (fewer only at its end), by HTTP Range,
 * resumed after cuts like a whole download, into `into` when given; a 404 throws `gone()` (the
 * file is not there).
 */
export async function downloadRange(drive: DriveClient, f: PinnedFile, offset: number, length: number, gone: () => Error, into?: Uint8Array): Promise<Buffer> {
  const n = Math.max(0, Math.min(f.size, offset + length) - offset);
  const out = into ? Buffer.from(into.buffer, into.byteOffset, n) : Buffer.allocUnsafe(n);
  let at = 0;
  if (n > 0) await fetchInto(drive, f, offset, [], async (c) => void (at += c.copy(out, at)), undefined, offset + n, gone);
  return out.subarray(0, at);
}
