// Resumable upload (developers.google.com/drive/api/guides/manage-uploads#resumable): open a
// session, PUT chunks of a multiple of 256 KiB with Content-Range, follow what Drive acknowledges
// (308 + Range: bytes=0-N, or no Range = nothing stored), and after any error or timeout ask
// Drive what it has (`bytes */TOTAL`) instead of guessing. A 404 on the session means it expired:
// start again from byte 0. A lost reply to the last chunk is not a failure: the probe answers
// 200 with the file. The caller persists the session URI so a later run resumes.
import { open, type FileHandle } from 'node:fs/promises';
import { BackupctlError, Exit, ioError } from '../errors.js';
import { REQUEST_TIMEOUT_MS, type DriveClient } from './client.js';
import type { FileDigest } from './hash.js';
import { fileResource } from './replies.js';
import { Recovery } from './retry.js';

export const CHUNK_UNIT = 256 * 1024;
export const DEFAULT_CHUNK = 8 * 1024 * 1024;
const MAX_SESSION_RESTARTS = 3;

/** The file resource fields every upload and listing asks for. */
export const FILE_FIELDS = 'id,name,size,md5Checksum,createdTime,modifiedTime,headRevisionId,appProperties,parents';

export interface DriveFileResource {
  id?: string | null;
  name?: string | null;
  size?: string | null;
  md5Checksum?: string | null;
  createdTime?: string | null;
  modifiedTime?: string | null;
  headRevisionId?: string | null;
  appProperties?: Record<string, string> | null;
  parents?: string[] | null;
}

export interface UploadRequest {
  path: string;
  digest: FileDigest;
  metadata: { name: string; parents: string[]; mimeType: string; appProperties: Record<string, string> };
  chunkSize: number;
  /** A session URI a previous run left, if any. */
  session: string | null;
  /** Persist (or forget, with null) the session URI before any byte is sent to it. */
  saveSession(uri: string | null): Promise<void>;
  /** `acked` = bytes Drive holds; `sent` = bytes this run has sent. */
  onProgress?(acked: number, sent: number): void;
  onInfo?(message: string): void;
}

type ChunkReply = { done: true; file: DriveFileResource } | { done: false; acked: number };

/** `Range: bytes=0-N` -> N+1; no header -> 0 (Drive stored nothing yet). */
function ackedFrom(range: string | null): number {
  if (!range) return 0;
  const m = /^bytes=0-(\d+)$/.exec(range.trim());
  if (!m) throw new BackupctlError(Exit.unavailable, `Drive sent an unexpected Range header: ${range}`);
  return Number(m[1]) + 1;
}

export async function resumableUpload(drive: DriveClient, req: UploadRequest): Promise<DriveFileResource> {
  if (req.chunkSize <= 0 || req.chunkSize % CHUNK_UNIT !== 0) throw new BackupctlError(Exit.usage, 'the chunk size must be a multiple of 256 KiB');
  const total = req.digest.size;
  const signal = drive.signal;
  let fh: FileHandle;
  try {
    fh = await open(req.path, 'r');
  } catch (err) {
    throw ioError(err, req.path, 'open');
  }
  const buf = Buffer.allocUnsafe(Math.min(req.chunkSize, Math.max(total, 1)));
  const recovery = new Recovery(signal, drive.auth, drive.onRetry);
  let uri = req.session;
  /** Bytes Drive is known to hold; null = unknown, ask before sending. */
  let acked: number | null = null;
  let sent = 0;
  let restarts = 0;
  /** Say once where a session left by an earlier run stands; retries within this run stay quiet. */
  let announceResume = req.session !== null;

  const reply = (res: { status: number; data: unknown; headers: Headers }): ChunkReply =>
    res.status === 308 ? { done: false, acked: ackedFrom(res.headers.get('range')) } : { done: true, file: fileResource(res.data, 'upload') };

  const openSession = async (): Promise<string> => {
    const res = await drive.raw(`upload/drive/v3/files?uploadType=resumable&fields=${encodeURIComponent(FILE_FIELDS)}`, {
      method: 'POST',
      headers: {
        'Content-Type': 'application/json; charset=UTF-8',
        'X-Upload-Content-Type': req.metadata.mimeType,
        'X-Upload-Content-Length': String(total),
      },
      data: JSON.stringify(req.metadata),
      timeout: REQUEST_TIMEOUT_MS,
    });
    const location = res.headers.get('location');
    if (!location) throw new BackupctlError(Exit.unavailable, 'Drive opened an upload session without a Location');
    return location;
  };

  const probe = async (u: string): Promise<ChunkReply> =>
    reply(await drive.raw(u, { method: 'PUT', headers: { 'Content-Range': `bytes */${total}` }, data: Buffer.alloc(0), validateStatus: (s) => (s >= 200 && s < 300) || s === 308, timeout: REQUEST_TIMEOUT_MS }));

  const sendChunk = async (u: string, from: number): Promise<ChunkReply> => {
    const len = Math.min(req.chunkSize, total - from);
    const { bytesRead } = await fh.read(buf, 0, len, from).catch((err: unknown) => {
      throw ioError(err, req.path, 'read');
    });
    if (bytesRead !== len) throw new BackupctlError(Exit.io, `${req.path} shrank while being uploaded`);
    const body = buf.subarray(0, len);
    const res = await drive.raw(u, {
      method: 'PUT',
      headers: { 'Content-Range': `bytes ${from}-${from + len - 1}/${total}`, 'Content-Type': req.metadata.mimeType },
      data: body,
      validateStatus: (s) => (s >= 200 && s < 300) || s === 308,
      // Generous: a chunk at 32 KiB/s still makes it; a stalled connection does not hang forever.
      timeout: 120_000 + Math.ceil(len / 32),
    });
    sent += len;
    return reply(res);
  };

  try {
    for (;;) {
      let phase = 'upload session';
      try {
        if (!uri) {
          uri = await openSession();
          await req.saveSession(uri);
          acked = 0;
        }
        let r: ChunkReply;
        if (acked === null) {
          phase = 'upload status probe';
          r = await probe(uri);
        } else {
          phase = 'upload';
          r = await sendChunk(uri, acked);
        }
        recovery.succeeded();
        if (r.done) return r.file;
        if (r.acked > total) throw new BackupctlError(Exit.unavailable, `Drive claims ${r.acked} bytes of a ${total}-byte file`);
        if (acked !== null && r.acked <= acked && phase === 'upload') {
          // Drive took none of the chunk: a failure like any other, so it cannot loop forever.
          await recovery.stalled('Drive acknowledged none of the chunk');
        } else if (phase === 'upload') {
          recovery.progressed();
        }
        if (announceResume && r.acked > 0) req.onInfo?.(`resuming the upload at ${r.acked} of ${total} bytes`);
        announceResume = false;
        acked = r.acked;
        req.onProgress?.(acked, sent);
      } catch (err) {
        if ((await recovery.recover(err, phase)) === 'notFound') {
          if (phase === 'upload session') throw new BackupctlError(Exit.refused, 'Drive refused to open an upload session (the destination folder is gone?)');
          if (++restarts > MAX_SESSION_RESTARTS) throw new BackupctlError(Exit.unavailable, 'Drive keeps expiring the upload session; try again later');
          req.onInfo?.('the upload session expired on Drive: starting again from the beginning');
          uri = null;
          acked = null;
          await req.saveSession(null);
          continue;
        }
        // After a 5xx, timeout, cut or refused token we do not know what Drive kept: ask it.
        if (uri) acked = null;
      }
    }
  } finally {
    await fh.close();
  }
}
