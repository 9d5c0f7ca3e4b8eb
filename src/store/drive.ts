// A store on Google Drive (`--repo drive:NAME`, `drive-appdata:NAME`; backupctl-repository(5) "ON
// GOOGLE DRIVE"), through the Drive client push and pull use (one retry policy, resumable uploads,
// pinned revisions). A night should cost a handful of calls, so:
// - one query lists every small file of the repository (marker, keys, index, snapshots, locks,
//   folders: appProperties say which repository and path), another every pack; nothing is
//   listed per folder;
// - small files once read are kept in the local cache (drive-cache.ts) by Drive id and MD5 and
//   not downloaded again (index and snapshot files never change; keys files rarely);
// - writes go through the outbox (drive-outbox.ts): spooled locally, then uploaded in order, one
//   multipart request for a small file, a resumable session for a large one. Under a lock they
//   are uploaded behind the caller's back while it goes on (releasing the lock waits for them);
//   outside a lock each write waits for its upload.
// A file on Drive is complete by construction (an upload's file appears only when it finished).
// A create retried after a lost reply may leave two files for one path: the oldest is the one
// read, a listing shows the path once, a delete removes every copy, prune removes the others.
import { createHash } from 'node:crypto';
import { access, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupctlError, Exit, corruptError, ioError, usageError } from '../errors.js';
import type { DriveClient } from '../drive/client.js';
import { downloadRange } from '../drive/download.js';
import type { Space } from '../drive/remote.js';
import { createFolder, createRepoFolder, deleteRepoFile, findRepoFolder, findRepoPath, isFolderPath, listRepo, RPROP, uploadSmall, type RepoFile } from '../drive/repo-files.js';
import { DEFAULT_CHUNK, CHUNK_UNIT, resumableUpload } from '../drive/upload.js';
import { sleep, testableMs } from '../drive/retry.js';
import { MARKER } from '../repo/repository.js';
import { termSafe } from '../util/terminal-text.js';
import { DriveCache, type CachedState } from './drive-cache.js';
import { Outbox, type OutboxEntry } from './drive-outbox.js';
import type { Store, StoredFile } from './store.js';

export interface DriveRepoSpec {
  space: Space;
  name: string;
}

/** `drive:NAME` (My Drive/backupctl/NAME) or `drive-appdata:NAME` (the app-data folder); null for a local path. */
export function parseDriveRepo(repo: string): DriveRepoSpec | null {
  const m = /^drive(-appdata)?:(.*)$/s.exec(repo);
  if (!m) return null;
  const name = m[2]!;
  if (!name || name.includes('/') || name.length > 200 || /[\u0000-\u001f\u007f]/.test(name) || name === '.' || name === '..') {
    throw usageError(`bad repository name ${JSON.stringify(termSafe(name))} in ${termSafe(repo)}: give drive:NAME, NAME without '/' or control characters`);
  }
  return { space: m[1] ? 'appDataFolder' : 'drive', name };
}

/** Files above this many bytes go up through a resumable session; smaller ones in one request. */
const SMALL_MAX = 5 << 20;
/**
 * Outbox entries older than this are not resumed but dropped (the next backup stores their
 * chunks again), and prune keeps packs no index names for longer: an index file still in some
 * machine's outbox never names a pack prune deleted.
 */
export const OUTBOX_MAX_AGE_MS = 6 * 86_400_000;
const ORPHAN_GRACE_MS = 7 * 86_400_000;
/** Spooled bytes not yet on Drive at which a writer waits (the disk is not filled with a whole backup). */
const MAX_QUEUED = 64 << 20;

/**
 * How long Drive's listings may lag behind its writes: prune lists again this long after its lock
 * before deleting, and a listing taken this long after a snapshot was listed shows its index files
 * (RepoReader.relist). BACKUPCTL_DRIVE_LIST_SETTLE_MS shortens it.
 */
const listSettleMs = () => testableMs('BACKUPCTL_DRIVE_LIST_SETTLE_MS', 10_000);

/** The upload chunk (BACKUPCTL_DRIVE_CHUNK_SIZE for tests: a multiple of 256 KiB). */
function chunkSize(): number {
  const v = testableMs('BACKUPCTL_DRIVE_CHUNK_SIZE', DEFAULT_CHUNK);
  return v > 0 && v % CHUNK_UNIT === 0 ? v : DEFAULT_CHUNK;
}

/** Small files kept in the local cache by Drive id and MD5 (so a file replaced on Drive is another entry): all but locks and packs. */
const cacheable = (path: string) => !path.startsWith('locks/') && !path.startsWith('data/');
/** Paths a write may replace (a new revision of the same file): the keys file, lock refreshes. */
const replaceable = (path: string) => !/^(data|index|snapshots)\//.test(path);

/** data/3f/3f9a... goes into the folder data/3/: 16 folders, each far below Drive's ~500,000 items. */
export function folderOf(path: string): string {
  const slash = path.lastIndexOf('/');
  if (slash < 0) return '';
  if (path.startsWith('data/')) return `data/${path[slash + 1]}/`;
  return path.slice(0, slash + 1);
}

const byAge = (a: RepoFile, b: RepoFile) => a.createdTime.localeCompare(b.createdTime) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

/** A write spooled but not yet on Drive (listed and readable as written, from the spool). */
interface Pending extends RepoFile {
  entry: OutboxEntry;
}
const PENDING_ID = '';
/** Released lock files: kept (path "free-locks/ID") for the machine that released them to take again. */
const FREE_LOCKS = 'free-locks/';

export class DriveStore implements Store {
  readonly orphanGraceMs = ORPHAN_GRACE_MS;
  readonly listingLagMs = listSettleMs();
  /**
   * A range request costs a round trip of 100-300 ms, in which 1-3 MB would have come at 10 MB/s;
   * no more, so that a one-file restore stays within its stored size and 2 MB (the bench's bound).
   */
  readonly readThrough = 2 << 20;
  private client: Promise<DriveClient> | null = null;
  private readonly cache: DriveCache;
  private readonly outbox: Outbox;
  private state: CachedState | null | undefined;
  /** The small files and folders, path -> copies oldest first, as listed after our last lock write. */
  private meta: Map<string, RepoFile[]> | null = null;
  private packs: Map<string, RepoFile[]> | null = null;
  /** Lock files this run wrote: path -> Drive id. */
  private readonly ownLocks = new Map<string, string>();
  private adopted = false;
  /** When this run's exclusive lock went up (prune), and whether a second listing confirmed the first. */
  private exclusiveSince: number | null = null;
  private confirmed = false;
  private readonly queue: OutboxEntry[] = [];
  private queuedBytes = 0;
  private running: Promise<void> | null = null;
  private failure: unknown = null;
  private waiters: Array<() => void> = [];

  constructor(
    readonly name: string,
    private readonly spec: DriveRepoSpec,
    private readonly openClient: () => Promise<DriveClient>,
  ) {
    this.cache = new DriveCache(spec.space, spec.name);
    this.outbox = new Outbox(join(this.cache.dir, 'outbox'));
  }

  private drive(): Promise<DriveClient> {
    this.client ??= this.openClient();
    return this.client;
  }

  // ---- where the repository is -------------------------------------------------------------

  private async loadState(): Promise<CachedState | null> {
    if (this.state === undefined) this.state = await this.cache.load();
    return this.state;
  }

  /** The repository folder's id: cached, else found on Drive (2 calls), else created when `create`. */
  private async root(create: boolean): Promise<string | null> {
    const s = await this.loadState();
    if (s) return s.root;
    const drive = await this.drive();
    let id = await findRepoFolder(drive, this.spec.space, this.spec.name);
    if (!id && !create) return null;
    id ??= await createRepoFolder(drive, this.spec.space, this.spec.name);
    this.state = { version: 1, root: id, folders: {} };
    await this.cache.save(this.state);
    return id;
  }

  private async forgetState(): Promise<void> {
    this.state = null;
    this.meta = null;
    this.packs = null;
    await this.cache.reset();
  }

  /** The Drive folder for `path`'s file. */
  private folderFor(path: string): Promise<string> {
    return this.folder(folderOf(path));
  }

  /** The Drive folder `dir` ('' is the repository's, "data/3/" one of data's), made when missing (its parents first). */
  private async folder(dir: string): Promise<string> {
    const root = (await this.root(true))!;
    if (!dir) return root;
    const s = this.state!;
    const known = s.folders[dir] ?? this.meta?.get(dir)?.[0]?.id;
    if (known) return (s.folders[dir] = known);
    const parentDir = dir.slice(0, dir.slice(0, -1).lastIndexOf('/') + 1);
    const parent = await this.folder(parentDir);
    if (s.folders[dir]) return s.folders[dir]; // made with its parent (data/'s shards)
    const id = await createFolder(await this.drive(), parent, dir.slice(parentDir.length, -1), { [RPROP.repo]: root, [RPROP.path]: dir, [RPROP.kind]: 'meta' });
    s.folders[dir] = id;
    const now = new Date().toISOString();
    this.remember({ id, path: dir, size: 0, md5: null, createdTime: now, modifiedTime: now, revisionId: null });
    await this.cache.save(s);
    // The shards of data/ all at once, with data/ itself: no night of backups makes a folder afterwards.
    if (dir === 'data/') for (const h of '0123456789abcdef') await this.folder(`data/${h}/`);
    return id;
  }

  // ---- listings ----------------------------------------------------------------------------

  private static group(files: RepoFile[]): Map<string, RepoFile[]> {
    const m = new Map<string, RepoFile[]>();
    for (const f of files) m.set(f.path, [...(m.get(f.path) ?? []), f]);
    for (const copies of m.values()) copies.sort(byAge);
    return m;
  }

  /** The small files, listed once (again after each lock write), with this run's writes in it. */
  private async metaMap(): Promise<Map<string, RepoFile[]>> {
    if (this.meta) return this.meta;
    const root = await this.root(false);
    if (!root) return (this.meta = new Map());
    const listed = DriveStore.group(await listRepo(await this.drive(), this.spec.space, root, 'meta'));
    const s = this.state!;
    if (s.marker !== undefined && !listed.has(MARKER)) {
      // The folder the cache names is no longer the repository (deleted, or made again): find it
      // again, once; never go on writing into a folder that is no repository.
      await this.forgetState();
      const again = await this.metaMap();
      if (!again.has(MARKER)) throw new BackupctlError(Exit.io, `${this.name} is no longer a backupctl repository (its ${MARKER} file is gone from Drive); create one with: backupctl repo init ${this.name}`);
      return again;
    }
    for (const [path, copies] of listed) if (isFolderPath(path)) s.folders[path] = copies[0]!.id;
    for (const e of this.queue) listed.set(e.path, [this.pendingFile(e)]);
    this.meta = listed;
    return listed;
  }

  private async packMap(): Promise<Map<string, RepoFile[]>> {
    if (this.packs) return this.packs;
    const root = await this.root(false);
    const listed = root ? DriveStore.group(await listRepo(await this.drive(), this.spec.space, root, 'pack')) : new Map<string, RepoFile[]>();
    for (const e of this.queue) if (e.path.startsWith('data/')) listed.set(e.path, [this.pendingFile(e)]);
    this.packs = listed;
    return listed;
  }

  private mapFor(path: string): Promise<Map<string, RepoFile[]>> {
    return path.startsWith('data/') ? this.packMap() : this.metaMap();
  }

  private pendingFile(e: OutboxEntry): Pending {
    const now = new Date().toISOString();
    return { id: PENDING_ID, path: e.path, size: e.size, md5: e.md5, createdTime: now, modifiedTime: now, revisionId: null, entry: e };
  }

  /** Note a file this run wrote (or a folder it made) in the listings taken. */
  private remember(f: RepoFile): void {
    const m = f.path.startsWith('data/') ? this.packs : this.meta;
    if (!m) return;
    const copies = (m.get(f.path) ?? []).filter((c) => c.id !== PENDING_ID && c.id !== f.id);
    m.set(f.path, [...copies, f].sort(byAge));
  }

  /**
   * The copies of `path`: from the listing, or (not in it: listings lag) one lookup of that path.
   * Files at the top (marker, keys, read key) are old when they exist, or written under an
   * exclusive lock before ours: the listing taken after our lock is their answer.
   */
  private async copies(path: string): Promise<RepoFile[]> {
    const listed = (await this.mapFor(path)).get(path);
    if (listed?.length || !path.includes('/')) return listed ?? [];
    const root = await this.root(false);
    if (!root) return [];
    const found = (await findRepoPath(await this.drive(), this.spec.space, root, path)).sort(byAge);
    if (found.length) (await this.mapFor(path)).set(path, found);
    return found;
  }

  /** After our lock is on Drive: uploads a killed run of this machine left are finished first. */
  private async adoptOrphans(): Promise<void> {
    if (this.adopted || this.ownLocks.size === 0) return;
    this.adopted = true;
    const orphans = await this.outbox.adoptOrphans(OUTBOX_MAX_AGE_MS);
    if (!orphans.length) return;
    for (const e of orphans) this.enqueue(e);
    await this.flush();
  }

  async list(dir: string): Promise<StoredFile[]> {
    this.rethrow();
    if (dir !== 'locks') await this.adoptOrphans();
    const m = dir === 'data' ? await this.packMap() : await this.metaMap();
    const out: StoredFile[] = [];
    for (const [path, copies] of m) {
      if (!path.startsWith(`${dir}/`) || isFolderPath(path)) continue;
      const f = copies[0]!;
      out.push({ path, size: f.size, mtimeMs: Date.parse(f.createdTime) || Date.now() });
    }
    return out.sort((a, b) => (a.path < b.path ? -1 : 1));
  }

  /**
   * One more listing of Drive; only the files it adds under `dir` join this run's (the other
   * folders stay as first listed: prune compares snapshots and locks with that listing).
   */
  async listAgain(dir: string): Promise<StoredFile[]> {
    this.rethrow();
    const root = await this.root(false);
    if (root) {
      const m = await this.mapFor(`${dir}/`);
      const listed = DriveStore.group(await listRepo(await this.drive(), this.spec.space, root, dir === 'data' ? 'pack' : 'meta'));
      for (const [path, copies] of listed) if (path.startsWith(`${dir}/`) && !m.has(path)) m.set(path, copies);
    }
    return this.list(dir);
  }

  /**
   * Drive has no half-written files (an upload's file appears whole). What is left over are the
   * extra copies a retried create made: listed as PATH#ID, so that prune removes them.
   */
  async leftovers(dir: string): Promise<StoredFile[]> {
    const m = dir === 'data' ? await this.packMap() : await this.metaMap();
    const out: StoredFile[] = [];
    for (const [path, copies] of m) {
      if (!path.startsWith(`${dir}/`) || isFolderPath(path)) continue;
      for (const c of copies.slice(1)) if (c.id !== PENDING_ID) out.push({ path: `${path}#${c.id}`, size: c.size, mtimeMs: Date.parse(c.createdTime) || 0 });
    }
    // Released lock files of machines that have not been back for a week (or lost their cache).
    if (dir === 'locks') {
      for (const [path, copies] of m) {
        const c = copies[0]!;
        if (path.startsWith(FREE_LOCKS) && c.id !== this.state?.freeLock && Date.now() - Date.parse(c.modifiedTime) > 7 * 86_400_000) {
          out.push({ path: `${path}#${c.id}`, size: c.size, mtimeMs: Date.parse(c.createdTime) || 0 });
        }
      }
    }
    return out;
  }

  // ---- reading -----------------------------------------------------------------------------

  private missing(path: string) {
    return corruptError(`${path} is missing from the repository ${this.name}`, { missing: path });
  }

  async read(path: string): Promise<Buffer> {
    this.rethrow();
    const s = await this.loadState();
    if (path === MARKER && s?.marker !== undefined) return Buffer.from(s.marker, 'utf8');
    const copies = await this.copies(path);
    if (!copies.length) throw this.missing(path);
    let last: unknown;
    for (const f of copies) {
      try {
        const data = await this.readWhole(f);
        if (path === MARKER && this.state) {
          this.state.marker = data.toString('utf8');
          await this.cache.save(this.state);
        }
        return data;
      } catch (err) {
        last = err; // that copy went away meanwhile: the next one
      }
    }
    throw last;
  }

  private async readWhole(f: RepoFile): Promise<Buffer> {
    if (f.id === PENDING_ID) return this.readSpooled((f as Pending).entry, 0, f.size);
    const keep = cacheable(f.path) && f.md5 !== null;
    if (keep) {
      const held = await this.cache.content(f.id, f.md5!);
      if (held) return held;
    }
    const data = await downloadRange(await this.drive(), this.pinned(f), 0, f.size, () => this.missing(f.path));
    if (f.md5 !== null && createHash('md5').update(data).digest('hex') !== f.md5) {
      throw new BackupctlError(Exit.corrupt, `the download of ${f.path} does not match Drive's checksum`);
    }
    if (keep) await this.cache.keep(f.id, f.md5!, data);
    return data;
  }

  private pinned(f: RepoFile) {
    if (!f.revisionId) throw new BackupctlError(Exit.unavailable, `Drive listed ${f.path} without a revision: try again later`);
    return { id: f.id, name: `${this.name}/${f.path}`, revisionId: f.revisionId, size: f.size, md5: f.md5 ?? '' };
  }

  private async readSpooled(e: OutboxEntry, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    const path = this.outbox.bin(e.seq);
    const fh = await open(path, 'r').catch((err: unknown) => {
      throw ioError(err, path, 'open');
    });
    try {
      const n = Math.max(0, Math.min(length, e.size - offset));
      const buf = into ? Buffer.from(into.buffer, into.byteOffset, n) : Buffer.alloc(n);
      await fh.read(buf, 0, n, offset);
      return buf;
    } finally {
      await fh.close();
    }
  }

  /** By HTTP Range, pinned to the revision listed: a pack replaced meanwhile is never spliced. */
  async readRange(path: string, offset: number, length: number, into?: Uint8Array): Promise<Buffer> {
    this.rethrow();
    const copies = await this.copies(path);
    const f = copies[0];
    if (!f) throw this.missing(path);
    if (f.id === PENDING_ID) return this.readSpooled((f as Pending).entry, offset, length, into);
    return downloadRange(await this.drive(), this.pinned(f), offset, length, () => this.missing(path), into);
  }

  async exists(path: string): Promise<boolean> {
    const s = await this.loadState();
    if (path === MARKER && s?.marker !== undefined) return true;
    if (!(await this.root(false))) return false;
    return (await this.copies(path)).length > 0;
  }

  async isEmpty(): Promise<boolean> {
    if (!(await this.root(false))) return true;
    return [...(await this.metaMap()).keys()].every(isFolderPath) && (await this.packMap()).size === 0;
  }

  // ---- writing -----------------------------------------------------------------------------

  private rethrow(): void {
    if (this.failure) throw this.failure;
  }

  async write(path: string, data: Uint8Array[], opts: { exclusive?: boolean } = {}): Promise<void> {
    this.rethrow();
    if (path.startsWith('locks/')) return this.writeLock(path, Buffer.concat(data)); // random names
    // Against the listing only: exclusive paths are the marker (checked beside isEmpty) and random names.
    if (opts.exclusive && (await this.mapFor(path)).get(path)?.length) throw Object.assign(new Error(`${path} already exists in ${this.name}`), { code: 'EEXIST' });
    const root = (await this.root(true))!;
    const e = await this.outbox.add(root, path, data);
    const m = path.startsWith('data/') ? this.packs : this.meta;
    m?.set(path, [...(m.get(path) ?? []).filter((c) => c.id !== PENDING_ID), this.pendingFile(e)]);
    this.enqueue(e);
    if (this.ownLocks.size === 0) return this.flush();
    while (this.queuedBytes > MAX_QUEUED && this.running) await new Promise<void>((r) => this.waiters.push(r));
    this.rethrow();
  }

  /**
   * Locks go up at once (the lock protocol lists after writing), not through the outbox; a
   * refresh is a new revision of the same file. The next listing is taken afresh, after it.
   */
  private async writeLock(path: string, data: Buffer): Promise<void> {
    const root = (await this.root(true))!;
    // This machine's released lock file is taken again rather than a new one made (one file fewer a night).
    const own = this.ownLocks.get(path) ?? this.state!.freeLock;
    const req = { name: path.slice(path.lastIndexOf('/') + 1), props: { [RPROP.repo]: root, [RPROP.path]: path, [RPROP.kind]: 'meta' }, data };
    const drive = await this.drive();
    // A released lock file removed meanwhile (prune): a new one instead.
    const f = (own && (await uploadSmall(drive, { ...req, fileId: own, parent: '' }))) || (await this.uploadNew(path, req));
    this.ownLocks.set(path, f.id);
    if (this.exclusiveSince === null && /"kind":"exclusive"/.test(data.toString('utf8'))) this.exclusiveSince = Date.now();
    if (this.state!.freeLock === f.id) {
      delete this.state!.freeLock;
      await this.cache.save(this.state!);
    }
    this.meta = null;
  }

  /** A new file for `path`; a folder the cache names but Drive lost is made again, once. */
  private async uploadNew(path: string, req: { name: string; props: Record<string, string>; data: Buffer }): Promise<RepoFile> {
    const drive = await this.drive();
    const f = await uploadSmall(drive, { ...req, parent: await this.folderFor(path) });
    if (f) return f;
    const dir = folderOf(path);
    if (this.state && dir) delete this.state.folders[dir];
    this.meta?.delete(dir);
    const again = await uploadSmall(drive, { ...req, parent: await this.folderFor(path) });
    if (!again) throw new BackupctlError(Exit.unavailable, `Drive lost the folder ${dir || this.name} while ${path} was written: run the command again`);
    return again;
  }

  private enqueue(e: OutboxEntry): void {
    this.queue.push(e);
    this.queuedBytes += e.size;
    this.running ??= this.run();
  }

  private async run(): Promise<void> {
    try {
      while (this.queue.length) {
        const e = this.queue[0]!;
        await this.send(e);
        this.queue.shift();
        this.queuedBytes -= e.size;
        for (const w of this.waiters.splice(0)) w();
      }
    } catch (err) {
      // The entries stay in the outbox: the next run that locks the repository resumes them.
      this.failure ??= err;
    } finally {
      this.running = null;
      for (const w of this.waiters.splice(0)) w();
    }
  }

  /** Everything written so far is on Drive (or the upload's failure is thrown). */
  private async flush(): Promise<void> {
    while (this.running) await this.running;
    this.rethrow();
  }

  /** Upload one spooled file and note it; the spool goes (into the cache, for the small files it holds). */
  private async send(e: OutboxEntry): Promise<void> {
    const root = (await this.root(true))!;
    if (e.root !== root) return this.outbox.remove(e); // for a repository that is no longer there
    const drive = await this.drive();
    const name = e.path.slice(e.path.lastIndexOf('/') + 1);
    const props = { [RPROP.repo]: root, [RPROP.path]: e.path, [RPROP.kind]: e.path.startsWith('data/') ? 'pack' : 'meta' };
    const chunk = chunkSize();
    const bin = this.outbox.bin(e.seq);
    if (!(await access(bin).then(() => true, () => false))) {
      // Killed after the upload, once the spool had gone into the cache: the note is all that is left.
      return this.outbox.remove(e);
    }
    let f: RepoFile;
    if (e.size <= Math.min(SMALL_MAX, chunk)) {
      const existing = replaceable(e.path) ? (await this.metaMap()).get(e.path)?.find((c) => c.id !== PENDING_ID) : undefined;
      const req = { name, props, data: await readFile(bin) };
      f = (existing && (await uploadSmall(drive, { ...req, fileId: existing.id, parent: '' }))) || (await this.uploadNew(e.path, req));
    } else {
      const uploaded = await resumableUpload(drive, {
        path: bin,
        digest: { size: e.size, md5: e.md5, sha256: e.sha256 },
        metadata: { name, parents: [await this.folderFor(e.path)], mimeType: 'application/octet-stream', appProperties: props },
        chunkSize: chunk,
        session: e.session,
        saveSession: async (uri) => {
          e.session = uri;
          await this.outbox.save(e);
        },
      });
      f = { id: uploaded.id!, path: e.path, size: Number(uploaded.size ?? -1), md5: uploaded.md5Checksum ?? null, createdTime: uploaded.createdTime ?? '', modifiedTime: uploaded.modifiedTime ?? '', revisionId: uploaded.headRevisionId ?? null };
    }
    if (f.size !== e.size || f.md5 !== e.md5) {
      await deleteRepoFile(drive, f.id).catch(() => {});
      throw new BackupctlError(Exit.unavailable, `Drive's copy of ${e.path} does not match what was sent (${f.size} bytes, md5 ${f.md5}; sent ${e.size}, md5 ${e.md5}): it was deleted; run the command again`);
    }
    this.remember(f);
    if (cacheable(e.path) && f.md5) await this.cache.adopt(f.id, f.md5, bin);
    await this.outbox.remove(e);
  }

  /**
   * Never delete on one listing (Drive's lags behind writes): before prune's first delete, list
   * again, at least LIST_SETTLE_MS after its lock went up. A snapshot or a lock that the first
   * listing did not show (a backup that ended, or began, just before) stops it: nothing deleted.
   */
  private async confirmBeforeDeleting(): Promise<void> {
    if (this.exclusiveSince === null || this.confirmed) return;
    const first = this.meta ?? (await this.metaMap());
    const wait = this.exclusiveSince + this.listingLagMs - Date.now();
    if (wait > 0) await sleep(wait, (await this.drive()).signal);
    const root = (await this.root(false))!;
    const again = await listRepo(await this.drive(), this.spec.space, root, 'meta');
    const unseen = again.find((f) => /^(snapshots|locks)\//.test(f.path) && !first.has(f.path) && !this.ownLocks.has(f.path));
    if (unseen) {
      throw new BackupctlError(Exit.locked, `${this.name} changed while prune looked at it (${unseen.path} was not listed by Drive yet): nothing was deleted; try again when other runs have finished`);
    }
    this.confirmed = true;
  }

  async delete(path: string): Promise<void> {
    const own = this.ownLocks.get(path);
    if (own !== undefined) {
      // Releasing our lock: what was written under it goes up first; the lock goes either way.
      let failed: unknown = null;
      await this.flush().catch((err: unknown) => (failed = err));
      // Not deleted but renamed out of locks/ (its path no longer starts so), to be taken again next time.
      const drive = await this.drive();
      const freed = `${FREE_LOCKS}${own}`;
      await drive.call('release lock', (o) => drive.api.files.update({ fileId: own, requestBody: { appProperties: { [RPROP.path]: freed } }, fields: 'id' }, o), () => undefined);
      this.ownLocks.delete(path);
      if (this.state) {
        if (this.state.freeLock && this.state.freeLock !== own) await deleteRepoFile(drive, this.state.freeLock).catch(() => {});
        this.state.freeLock = own;
        await this.cache.save(this.state);
      }
      this.meta?.delete(path);
      if (failed) throw failed;
      return;
    }
    await this.flush();
    if (!path.startsWith('locks/')) await this.confirmBeforeDeleting(); // a stale lock goes at once
    const drive = await this.drive();
    const hash = path.indexOf('#');
    if (hash >= 0) {
      // One extra copy (see leftovers).
      const [p, id] = [path.slice(0, hash), path.slice(hash + 1)];
      await deleteRepoFile(drive, id);
      const m = await this.mapFor(p);
      m.set(p, (m.get(p) ?? []).filter((c) => c.id !== id));
      return;
    }
    for (const c of await this.copies(path)) {
      await deleteRepoFile(drive, c.id);
      if (c.md5 && cacheable(path)) await this.cache.drop(c.id, c.md5);
    }
    (await this.mapFor(path)).delete(path);
  }
}
