// An archive streamed to standard output (`create -o -`, `pull -o -`). Its reader going away
// (`| head -c 50M`, a dropped ssh) leaves it truncated: that is a failure, unlike a listing cut
// short by `| head`, which main.ts ends quietly. While a DataOutput is open it owns stdout's
// errors (main.ts leaves them to it); a write that fails rejects with exit 6, so the command
// unwinds and reports it, and nothing waits for a 'drain' that will never come.
import type { Writable } from 'node:stream';
import { BackupctlError, Exit, ioError } from '../errors.js';

/** Is someone streaming data on `out` (so a broken pipe is theirs to report)? */
export const carriesData = (out: Writable): boolean => open.has(out);
const open = new Set<Writable>();

export class DataOutput {
  /** Bytes the pipe accepted (what the reader could have had). */
  private accepted = 0;
  private failure: BackupctlError | null = null;
  private wake: (() => void) | null = null;
  private readonly onError = (err: NodeJS.ErrnoException) => this.fail(err);

  constructor(private readonly out: Writable = process.stdout) {
    open.add(out);
    out.on('error', this.onError);
  }

  private fail(err: NodeJS.ErrnoException): void {
    this.failure ??=
      err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED'
        ? new BackupctlError(Exit.io, `the reader of standard output went away after ${this.accepted} bytes: the archive is incomplete`)
        : ioError(err, 'standard output', 'write');
    this.wake?.();
  }

  /** Queue `buf`; waits while the pipe is full. `done` runs once the bytes have left (buffer reuse). */
  async write(buf: Buffer, done?: () => void): Promise<void> {
    if (this.failure) throw this.failure;
    const n = buf.length;
    const more = this.out.write(buf, (err) => {
      if (err) this.fail(err);
      else this.accepted += n;
      done?.();
    });
    if (!more && !this.failure) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.out.once('drain', resolve);
      });
      this.wake = null;
    }
    if (this.failure) throw this.failure;
  }

  /** Everything written has reached the pipe (or the failure is thrown). */
  async flush(): Promise<void> {
    if (!this.failure) await new Promise<void>((resolve) => this.out.write('', (err) => (err && this.fail(err), resolve())));
    if (this.failure) throw this.failure;
  }

  /** Give stdout's errors back to main.ts. */
  close(): void {
    this.out.off('error', this.onError);
    open.delete(this.out);
  }
}
