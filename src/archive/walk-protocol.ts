// What walk.ts and its reading thread (walk-worker.ts) share: the ring's geometry, the control
// words and the messages, in walk order.
import type { EntryType } from './format.js';
import type { ExitCode } from '../errors.js';

/** Bytes per read, and per ring slot. */
export const CHUNK = 1 << 20;
/** Ring slots: how far (in chunks) the reading thread may run ahead of the archive writer. */
export const SLOTS = 8;
/** Control words (Int32Array indices): chunks the main thread is done with; stop request. */
export const RELEASED = 0;
export const STOP = 1;

export interface WalkSetup {
  root: string;
  ring: SharedArrayBuffer;
  ctrl: Int32Array;
}

/**
 * An entry, then for a file either `skip` or its `chunk`s (in ring order) and `end`. A `warn` is
 * a skipped name; `error` ends the walk (a BackupctlError's code and message), as does `done`.
 */
export type WalkMessage =
  | { t: 'entry'; path: string; type: EntryType; mode: number; mtimeNs: bigint; target?: string }
  | { t: 'skip'; message: string }
  | { t: 'chunk'; slot: number; length: number }
  | { t: 'end'; sha256: Uint8Array; changed: boolean }
  | { t: 'warn'; message: string }
  | { t: 'error'; code: ExitCode; message: string }
  | { t: 'done' };
