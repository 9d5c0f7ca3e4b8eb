// A directory as archive entries: a stable, byte-wise sorted walk that never follows symlinks.
// Files are opened with O_NOFOLLOW and checked to be the inode that was listed; a file that
// changes while read is stored as read and flagged.
//
// The listing, reading and hashing run on a thread of their own (walk-worker.ts), up to SLOTS
// chunks ahead, handing the data over in a shared ring: this thread is left the compressing,
// sealing and writing, and the two cores of a small machine both work.
import { Worker } from 'node:worker_threads';
import { extname } from 'node:path';
import { EntryType } from './format.js';
import { SkipEntry, type OpenedContent, type SourceEntry } from './pack.js';
import { BackupctlError, Exit } from '../errors.js';
import { CHUNK, RELEASED, SLOTS, STOP, type WalkMessage, type WalkSetup } from './walk-protocol.js';

/** Extensions whose content is already compressed: stored, never run through the compressor. */
const STORED = new Set(
  'jpg jpeg png gif webp heic heif avif mp4 m4v mov mkv webm 3gp avi opus ogg oga mp3 m4a aac amr flac wav zip gz tgz zst xz bz2 7z rar apk pdf crypt14 crypt15 docx xlsx pptx'
    .split(' ')
    .map((e) => '.' + e),
);

/** The reading thread's messages, in order. */
class Inbox {
  private queue: WalkMessage[] = [];
  private head = 0;
  private waiting: ((m: WalkMessage) => void) | null = null;
  constructor(worker: Worker) {
    const deliver = (m: WalkMessage) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = null;
        w(m);
      } else this.queue.push(m);
    };
    worker.on('message', deliver);
    worker.on('error', (err) => deliver({ t: 'error', code: Exit.internal, message: String(err?.stack ?? err) }));
    worker.on('exit', () => deliver({ t: 'error', code: Exit.internal, message: 'the directory walk stopped unexpectedly' }));
  }
  next(): Promise<WalkMessage> | WalkMessage {
    if (this.head < this.queue.length) {
      const m = this.queue[this.head++]!;
      if (this.head > 1024) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      return m;
    }
    return new Promise((resolve) => (this.waiting = resolve));
  }
}

function failure(m: { code: ExitCode; message: string }): Error {
  return m.code === Exit.internal ? new Error(m.message) : new BackupctlError(m.code, m.message);
}
type ExitCode = (typeof Exit)[keyof typeof Exit];

/**
 * Walk `root`; entry paths are relative with '/' separators. Special files (sockets, FIFOs,
 * devices) and unreadable directories are reported through `warn` and skipped. A file's chunks
 * are valid until the consumer asks for the next one; a file passed over unopened is skipped.
 */
export async function* walkDirectory(root: string, warn: (msg: string) => void, skipped: { count: number }): AsyncGenerator<SourceEntry> {
  const setup: WalkSetup = { root, ring: new SharedArrayBuffer(SLOTS * CHUNK), ctrl: new Int32Array(new SharedArrayBuffer(8)) };
  const worker = new Worker(new URL('./walk-worker.js', import.meta.url), { workerData: setup });
  const inbox = new Inbox(worker);
  const release = () => {
    Atomics.add(setup.ctrl, RELEASED, 1);
    Atomics.notify(setup.ctrl, RELEASED);
  };
  /** Read a file's messages up to its `end` (or `skip`), releasing its chunks. */
  const finishFile = async (m: WalkMessage): Promise<Extract<WalkMessage, { t: 'end' | 'skip' }>> => {
    for (;;) {
      if (m.t === 'end' || m.t === 'skip') return m;
      if (m.t === 'error') throw failure(m);
      if (m.t !== 'chunk') throw new Error(`directory walk: unexpected ${m.t} inside a file`);
      release();
      m = await inbox.next();
    }
  };
  try {
    for (;;) {
      const m = await inbox.next();
      if (m.t === 'warn') {
        skipped.count++;
        warn(m.message);
        continue;
      }
      if (m.t === 'error') throw failure(m);
      if (m.t === 'done') return;
      if (m.t !== 'entry') throw new Error(`directory walk: unexpected ${m.t}`);
      const { t: _, ...entry } = m;
      if (m.type !== EntryType.File) {
        yield entry;
        continue;
      }
      // The file's messages are read by the consumer (through open and its chunks), or below.
      let pending: WalkMessage | null = null; // a message taken but not yet dealt with
      let held = false; // a chunk handed out and not yet released
      let done = false;
      let sha256: Uint8Array | null = null;
      let changed = false;
      const open = async (): Promise<OpenedContent> => {
        const first = await inbox.next();
        if (first.t === 'skip') {
          done = true;
          throw new SkipEntry(first.message);
        }
        if (first.t === 'error') throw failure(first);
        pending = first;
        async function* chunks(): AsyncGenerator<Uint8Array> {
          for (;;) {
            const c = pending ?? (await inbox.next());
            pending = null;
            if (c.t !== 'chunk') {
              const end = await finishFile(c);
              done = true;
              if (end.t === 'end') ({ sha256, changed } = end);
              return;
            }
            held = true;
            yield Buffer.from(setup.ring, c.slot * CHUNK, c.length);
            held = false;
            release();
          }
        }
        return {
          chunks: chunks(),
          compressible: !STORED.has(extname(m.path).toLowerCase()),
          changed: () => changed,
          sha256: () => Buffer.from(sha256!),
        };
      };
      yield { ...entry, open };
      if (held) release();
      if (!done) await finishFile(pending ?? (await inbox.next()));
    }
  } finally {
    Atomics.store(setup.ctrl, STOP, 1);
    Atomics.notify(setup.ctrl, RELEASED);
    await worker.terminate();
  }
}
