// The storage a repository lives on, as small as restic's and rclone's backends: list a folder,
// read a file or a range of it, write a file whole and atomically, delete one. The repository
// (src/repo) never knows whether it writes to a directory (local.ts) or to Google Drive (drive.ts).

export interface StoredFile {
  /** Path relative to the store's root, '/'-separated (e.g. "data/3f/3f9a..."). */
  path: string;
  size: number;
  /** Last modification, ms since the epoch (to age temporary leftovers). */
  mtimeMs: number;
}

/** A file being written through its descriptor (by any thread of this process), not yet in place. */
export interface StagedWrite {
  readonly fd: number;
  /** `fd` was opened with O_DIRECT: written from aligned memory in aligned pieces (util/direct-io.ts). */
  readonly direct: boolean;
  /** Synced and moved into place as write() does (all or nothing, also after a crash); closes the descriptor. */
  commit(): Promise<void>;
  /** The temporary file removed and the descriptor closed; what to throw for `err` (an I/O error naming the file). */
  abort(err: unknown): Promise<unknown>;
}

export interface Store {
  /** What to call the store in messages (a directory path, drive:NAME). */
  readonly name: string;
  /** The directory the store's files are in, when they are on this machine (a backup leaves it out). */
  readonly localDir?: string;
  /**
   * The complete files under `dir` (recursively), never a file still being written. Temporary
   * leftovers of writes that were killed are listed apart by `leftovers`.
   */
  list(dir: string): Promise<StoredFile[]>;
  /**
   * The same from a new listing, for a store that lists once and remembers (Drive): the files it
   * adds under `dir` join what this run had listed, of `dir` only.
   */
  listAgain(dir: string): Promise<StoredFile[]>;
  /**
   * How long a listing may leave out a file written before it began (Drive's listings lag behind
   * its writes; none: a listing shows every file written before it).
   */
  readonly listingLagMs?: number;
  /** Temporary files of writes that never finished (to be removed by prune). */
  leftovers(dir: string): Promise<StoredFile[]>;
  /** A whole file; a missing one is an exit-5 "missing" error naming it. */
  read(path: string): Promise<Buffer>;
  /**
   * `length` bytes from `offset`; fewer only at the end of the file. Given `into` (at least
   * `length` bytes), they are read into it and a view of it is returned: a caller reading many
   * ranges reuses its memory instead of faulting in fresh pages for each.
   */
  readRange(path: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer>;
  /**
   * Unwanted bytes between two wanted ranges of one file that cost less to read through than to
   * skip with a read of their own: a request to a remote store is worth megabytes.
   */
  readonly readThrough: number;
  /**
   * Write `data` as `path`, all or nothing: readers see either no file or the whole of it, also
   * after a crash. `exclusive`: fail with EEXIST instead of replacing an existing file.
   */
  write(path: string, data: Uint8Array[], opts?: { exclusive?: boolean }): Promise<void>;
  /**
   * Stores on this machine only: write `path` through a file descriptor instead, so that a thread
   * can write it as it produces it (a pack, segment by segment as it is sealed) and none of it is
   * gathered in memory first.
   */
  stage?(path: string): Promise<StagedWrite>;
  /** Delete a file; one that is already gone is not an error. */
  delete(path: string): Promise<void>;
  /** Is `path` there as a complete file? (the repository marker, before anything else) */
  exists(path: string): Promise<boolean>;
  /** Does the store hold nothing at all (a new repository goes only where nothing is)? */
  isEmpty(): Promise<boolean>;
  /**
   * A pack no index file names is kept this long by prune (ms; none: removed at once): on a store
   * whose writes wait locally to be resumed (Drive's outbox), its index file may still be on its way.
   */
  readonly orphanGraceMs?: number;
}
