// Typed errors that carry their exit code. Every failure a user can meet is one of these;
// the CLI prints `backupctl: <message>` (one line) and exits with `code`. Anything else is a bug
// and exits 1. The numbers are documented in man/backupctl.1 and README.md: never renumber.

export const Exit = {
  ok: 0,
  /** An unexpected internal error (a bug): please report it. */
  internal: 1,
  /** Bad command line: unknown option, missing argument, bad value. */
  usage: 2,
  /** Done, but some files were skipped or changed while being read (see the warnings). */
  partial: 3,
  /** Wrong recovery code, wrong PIN, no slot this key/code opens. Retrying will not help. */
  noKey: 4,
  /** Not an archive, unsupported version, or damaged / tampered data. */
  corrupt: 5,
  /** A local file problem: missing, unreadable, exists already, no space. */
  io: 6,
  /** A device or remote is unavailable right now (no key plugged in, timeout, network, 5xx): try again. */
  unavailable: 7,
  /** Refused and needs the user to act: PIN blocked, access revoked, quota exceeded, permission. */
  refused: 8,
  /** Another backupctl run holds the lock on this file or config: try again later. */
  locked: 9,
  /** restore --salvage: everything intact was restored, but the entries named are lost (damaged or missing data). */
  salvaged: 10,
  /** pull: the copy on Drive is not the one this machine pushed (use --allow-foreign if that is expected). */
  foreign: 11,
  /** Interrupted by Ctrl-C or SIGTERM; nothing was left half-written. */
  interrupted: 130,
} as const;

export type ExitCode = (typeof Exit)[keyof typeof Exit];

/** A short stable name per exit code, used in `--json` error objects. */
export const exitName: Record<ExitCode, string> = {
  0: 'ok',
  1: 'internal',
  2: 'usage',
  3: 'partial',
  4: 'no-key',
  5: 'corrupt',
  6: 'io',
  7: 'unavailable',
  8: 'refused',
  9: 'locked',
  10: 'salvaged',
  11: 'foreign',
  130: 'interrupted',
};

export class BackupctlError extends Error {
  constructor(
    readonly code: ExitCode,
    message: string,
    /** Optional machine-readable detail for --json output (never secrets). */
    readonly detail?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'BackupctlError';
  }
}

export const usageError = (msg: string) => new BackupctlError(Exit.usage, msg);
export const corruptError = (msg: string, detail?: Record<string, unknown>) =>
  new BackupctlError(Exit.corrupt, msg, detail);
export const noKeyError = (msg: string) => new BackupctlError(Exit.noKey, msg);

/** Map a Node system error (ENOENT, EACCES, ENOSPC, ...) on `path` to one clear line. */
export function ioError(err: unknown, path: string, doing: string): BackupctlError {
  const code = (err as NodeJS.ErrnoException)?.code;
  const why: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    EEXIST: 'already exists',
    ENOSPC: 'no space left on device',
    EDQUOT: 'disk quota exceeded',
    EISDIR: 'is a directory',
    ENOTDIR: 'not a directory',
    EROFS: 'read-only file system',
    ELOOP: 'is a symbolic link',
    EMFILE: 'too many open files',
    EIO: 'input/output error',
  };
  const reason = (code && why[code]) ?? (err as Error)?.message ?? String(err);
  return new BackupctlError(Exit.io, `cannot ${doing} ${path}: ${reason}`);
}

/** Thrown when the user interrupts; the CLI maps it to exit 130 after cleanup has run. */
export class InterruptedError extends BackupctlError {
  constructor(what = 'interrupted') {
    super(Exit.interrupted, what);
  }
}
