// The terminal the CLI talks to: the one live progress spinner, which every line and every
// prompt goes around (a prompt drawn under a spinner is overwritten by its next frame), and where
// a prompt reads from — stdin and stderr when both are terminals, else the controlling terminal
// (/dev/tty, as age and ssh do: `pull NAME -o - | backupctl restore - -d out` has the archive on
// stdin and the user at the terminal), else nowhere: no prompt that nobody can answer.
import { openSync, closeSync } from 'node:fs';
import { ReadStream, WriteStream } from 'node:tty';

interface Spinner {
  stop(): void;
  start(): void;
  clear(): void;
  render(): void;
}

let live: Spinner | null = null;
let paused = 0;

/** Progress registers its spinner while it spins (null when it stops). */
export function setLiveSpinner(s: Spinner | null): void {
  live = s;
}

/** Write a whole line to stderr without the spinner drawing over it. */
export function writeAboveSpinner(text: string): void {
  if (!live || paused) return void process.stderr.write(text);
  live.clear();
  process.stderr.write(text);
  live.render();
}

/** Run `fn` (a prompt) with the spinner stopped and its line cleared; it spins again after. */
export async function withoutSpinner<T>(fn: () => Promise<T>): Promise<T> {
  const s = paused ? null : live;
  paused++;
  s?.stop();
  try {
    return await fn();
  } finally {
    paused--;
    if (s && live === s && !paused) s.start();
  }
}

export interface PromptStreams {
  input: NodeJS.ReadableStream & { isTTY?: boolean };
  output: NodeJS.WritableStream;
  close(): void;
}

function openTty(): PromptStreams | null {
  if (process.platform === 'win32') return null;
  let rfd = -1;
  let wfd = -1;
  try {
    rfd = openSync('/dev/tty', 'r');
    wfd = openSync('/dev/tty', 'w');
  } catch {
    // ENXIO: no controlling terminal (cron, setsid, a service); ENOENT: no /dev/tty at all.
    if (rfd >= 0) closeSync(rfd);
    return null;
  }
  const input = new ReadStream(rfd);
  const output = new WriteStream(wfd);
  return {
    input,
    output,
    close() {
      input.destroy();
      output.destroy();
    },
  };
}

/** Where a prompt can be shown and answered, or null; the caller closes it when done. */
export function promptStreams(): PromptStreams | null {
  if (process.stdin.isTTY && process.stderr.isTTY) return { input: process.stdin, output: process.stderr, close() {} };
  return openTty();
}

/** Whether someone could answer a prompt (without keeping the terminal open). */
export function canPrompt(): boolean {
  const s = promptStreams();
  s?.close();
  return s !== null;
}
