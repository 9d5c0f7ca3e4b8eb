// A Google Drive v3 fake: a real HTTP server on 127.0.0.1 implementing the subset backupctl uses,
// as Drive documents it, with per-request fault injection. Nothing here is mocked inside the
// client: backupctl talks HTTP to it through googleapis/gaxios exactly as it talks to Google.
//
// Implemented (developers.google.com/drive/api/reference/rest/v3, .../guides/manage-uploads):
// - files.list (q subset, spaces, fields, pageSize, pageToken; pages deliberately short, even
//   empty, while still carrying nextPageToken), files.get (metadata; alt=media with Range -> 206),
//   revisions.get alt=media, files.create (metadata only), files.update (name, appProperties,
//   addParents/removeParents), files.delete, about.get.
// - simple uploads (multipart, media): POST to create, PATCH .../files/{id} to add a revision.
// - files.list lagging behind writes (hideFromListings: a file left out of the next N listings).
// - counters: API calls, files created, bytes received in uploads, media bytes sent.
// - uploads: multipart, media, and the resumable state machine: session create (POST, or PATCH to
//   replace content) -> Location; PUT chunks with Content-Range (all but the last a multiple of
//   256 KiB); 308 with `Range: bytes=0-N` or without Range when nothing is stored; status probe
//   `bytes */TOTAL`; 200 with the resource when complete (also on any later PUT); 404 for an
//   expired session.
// - md5Checksum / sha256Checksum / size / headRevisionId; the appDataFolder space (needs the
//   drive.appdata scope); 'root' alias.
// - Hostile or broken replies (faults): a 200 with any JSON body, list pages that never end, a
//   download sent gzip-compressed although identity was asked for.
// - OAuth: /auth (consents at once and redirects with code + state), /token (authorization_code
//   with PKCE S256 check, refresh_token), /revoke.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { parseFields, parseQuery, selectFields, type FakeFileMeta } from './query.js';

export const CHUNK_UNIT = 256 * 1024;
export const SCOPE_FILE = 'https://www.googleapis.com/auth/drive.file';
export const SCOPE_APPDATA = 'https://www.googleapis.com/auth/drive.appdata';
const FOLDER_MIME = 'application/vnd.google-apps.folder';
const ROOT_ID = '0AFakeRootFolderIdUk9PVA';

/** Which kind of request a fault applies to. */
export type FaultOn =
  | 'session' // POST/PATCH .../upload/...?uploadType=resumable
  | 'chunk' // PUT with bytes S-E/T
  | 'probe' // PUT with bytes */T
  | 'list'
  | 'get' // metadata
  | 'media' // alt=media (file or revision)
  | 'update'
  | 'delete'
  | 'create' // metadata-only create (folders)
  | 'upload' // multipart or media upload (POST creates, PATCH adds a revision)
  | 'token'
  | 'about';

export type FaultAction =
  /** Reply with this status and a Drive error body carrying `reason` (and Retry-After seconds). */
  | { status: number; reason?: string; retryAfter?: number }
  /** Upload: cut the connection after half the chunk arrived (what did arrive, 256 KiB-aligned, is kept).
   *  Download: cut after sending half the requested bytes. */
  | { drop: true }
  /** Chunk: store it (completing the file if it is the last one), then cut without replying.
   *  Upload (multipart): create the file, then cut without replying (the lost create response). */
  | { loseResponse: true }
  /** Chunk: store only this many of its bytes and acknowledge them with a 308. */
  | { partialAck: number }
  /** The session has expired: 404 from now on. */
  | { expireSession: true }
  /** The access token used has expired: 401 now and for every later use of it. */
  | { expireToken: true }
  /** Chunk: take the whole body, store nothing, never answer (a network that went away).
   *  Download: send half the requested bytes, then nothing more, keeping the connection open. */
  | { hang: true }
  /** A hostile or broken server: answer 200 with this JSON body instead (files not an array, null entries, ...). */
  | { json: unknown }
  /** List: this page and every page after it say there is more (a fresh nextPageToken each time), with no files. */
  | { endlessPages: true }
  /** Media: send the body gzip-compressed with Content-Encoding: gzip, whatever Accept-Encoding asked for. */
  | { gzip: true };

export interface Fault {
  on: FaultOn;
  /** Let this many matching requests through first. */
  skip?: number;
  /** Apply to this many matching requests (default 1). */
  times?: number;
  /** Chunk: match only the one that completes the file (`bytes S-E/T` with E+1 = T). */
  final?: boolean;
  action: FaultAction;
}

interface Revision {
  id: string;
  content: Buffer;
  md5: string;
  sha256: string;
  modifiedTime: string;
}

interface FakeFile extends FakeFileMeta {
  space: 'drive' | 'appDataFolder';
  createdTime: string;
  modifiedTime: string;
  revisions: Revision[];
}

interface Session {
  id: string;
  /** Set when the session replaces the content of an existing file. */
  fileId?: string;
  metadata: Record<string, unknown>;
  total: number | null;
  fields: string | null;
  parts: Buffer[];
  stored: number;
  expired: boolean;
  done?: FakeFile;
}

interface AccessToken {
  scopes: string[];
  valid: boolean;
  refreshToken?: string;
}

export interface RequestRecord {
  method: string;
  on: FaultOn | 'other';
  path: string;
  contentRange?: string;
  range?: string;
  status?: number;
}

const ids = (n = 28) => randomBytes(n).toString('base64url').slice(0, n);
// Drive's own file ids look like this (33 characters, '1' first); one starting with '-' is
// possible in principle and has its own test, so random ones must not make others flaky.
const fileId = () => `1${ids(32)}`;

class DriveError {
  constructor(
    readonly status: number,
    readonly reason: string,
    readonly message: string,
  ) {}
}

function driveErrorBody(status: number, reason: string, message: string) {
  const domain = /RateLimit|rateLimit|Quota|quota|dailyLimit|uploadLimit/.test(reason) ? 'usageLimits' : 'global';
  return { error: { code: status, message, errors: [{ domain, reason, message }] } };
}

export interface DriveFakeOptions {
  /** Largest number of items a list page holds, whatever pageSize asks (default 2). */
  maxPageItems?: number;
  /** Access-token lifetime reported by /token, seconds (default 3599). */
  tokenLifetime?: number;
  /** Send the first page of a listing empty (with a nextPageToken), as Drive may (default true). */
  emptyFirstPage?: boolean;
}

export class DriveFake {
  readonly files = new Map<string, FakeFile>();
  readonly sessions = new Map<string, Session>();
  readonly requests: RequestRecord[] = [];
  readonly clientId = `${ids(12)}.apps.googleusercontent.com`;
  readonly clientSecret = ids(24);
  /** Upload body bytes that reached the server (chunks, including cut ones). */
  uploadBytesReceived = 0;
  /** Media bytes the server wrote to sockets. */
  downloadBytesSent = 0;
  /** Files and folders created through the API (resumable, simple and metadata-only creates). */
  filesCreated = 0;
  private hidden = new Map<string, number>();
  /** The next `listings` files.list results that would hold file `id` leave it out (a lagging listing, deterministically). */
  hideFromListings(id: string, listings: number): void {
    this.hidden.set(id, listings);
  }
  private stillHidden(id: string): boolean {
    const n = this.hidden.get(id) ?? 0;
    if (n <= 0) return false;
    this.hidden.set(id, n - 1);
    return true;
  }
  private faults: Fault[] = [];

  /** Point this process's backupctl at the fake (fresh token, fast retries) and zero the counters. */
  useInThisProcess(): void {
    process.env.BACKUPCTL_DRIVE_ROOT_URL = this.rootUrl;
    process.env.BACKUPCTL_DRIVE_TOKEN_URL = this.tokenUrl;
    process.env.BACKUPCTL_DRIVE_ACCESS_TOKEN = this.issueAccessToken();
    process.env.BACKUPCTL_RETRY_BASE_MS = '5';
    this.resetCounters();
  }

  /** Zero the counters (requests, bytes up and down, files created). */
  resetCounters(): void {
    this.requests.length = 0;
    this.uploadBytesReceived = 0;
    this.downloadBytesSent = 0;
    this.filesCreated = 0;
  }

  /** Drive API requests so far (every request but OAuth's token, consent and revoke endpoints). */
  get apiCalls(): number {
    return this.requests.filter((r) => r.on !== 'token' && r.on !== 'other').length;
  }
  private tokens = new Map<string, AccessToken>();
  private refreshTokens = new Map<string, { scopes: string[]; revoked: boolean }>();
  private codes = new Map<string, { challenge: string; redirectUri: string; scopes: string[]; used: boolean }>();
  private pageTokens = new Map<string, { items: FakeFile[]; pos: number; endless?: boolean }>();
  private lastTime = 0;
  private server: http.Server;
  private sockets = new Set<import('node:net').Socket>();
  origin = '';

  constructor(private readonly opts: DriveFakeOptions = {}) {
    this.server = http.createServer((req, res) => {
      this.handle(req, res).catch((err) => {
        if (!res.headersSent) this.sendJson(res, 500, driveErrorBody(500, 'backendError', String(err)));
        else res.destroy();
      });
    });
    this.server.on('connection', (s) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** The API root to give backupctl (BACKUPCTL_DRIVE_ROOT_URL). */
  get rootUrl() {
    return `${this.origin}/`;
  }
  get tokenUrl() {
    return `${this.origin}/token`;
  }
  get authUrl() {
    return `${this.origin}/auth`;
  }

  inject(...faults: Fault[]): void {
    this.faults.push(...faults.map((f) => ({ ...f })));
  }
  /** Faults injected but not yet consumed (a test should usually see none left). */
  pendingFaults(): Fault[] {
    return this.faults;
  }

  /** An access token as if a login had happened (BACKUPCTL_DRIVE_ACCESS_TOKEN in tests). */
  issueAccessToken(scopes = [SCOPE_FILE, SCOPE_APPDATA]): string {
    const t = `ya29.${ids(40)}`;
    this.tokens.set(t, { scopes, valid: true });
    return t;
  }
  /** A refresh token and an access token from it, as a login leaves them (for a token file a test writes). */
  issueLogin(scopes = [SCOPE_FILE, SCOPE_APPDATA]): { refresh: string; access: string } {
    const refresh = `1//${ids(40)}`;
    this.refreshTokens.set(refresh, { scopes, revoked: false });
    const access = `ya29.${ids(40)}`;
    this.tokens.set(access, { scopes, valid: true, refreshToken: refresh });
    return { refresh, access };
  }
  /** Every access token stops working (as after an hour): clients must refresh. */
  expireAccessTokens(): void {
    for (const t of this.tokens.values()) t.valid = false;
  }
  /** The user removed the app's access: refresh tokens and their access tokens stop working. */
  revokeAll(): void {
    for (const r of this.refreshTokens.values()) r.revoked = true;
    for (const t of this.tokens.values()) t.valid = false;
  }
  get refreshTokenCount() {
    return this.refreshTokens.size;
  }
  get liveRefreshTokens() {
    return [...this.refreshTokens.values()].filter((r) => !r.revoked).length;
  }

  /** Put a file straight into the store (a file pushed by someone else, a duplicate name, ...). */
  addFile(meta: { id?: string; name: string; parents?: string[]; appProperties?: Record<string, string>; space?: 'drive' | 'appDataFolder' }, content: Buffer): FakeFile {
    const f = this.newFile({ name: meta.name, parents: meta.parents ?? [ROOT_ID], appProperties: meta.appProperties ?? {} }, meta.space ?? 'drive', meta.id);
    this.addRevision(f, content);
    this.files.set(f.id, f);
    return f;
  }
  /** Replace a file's content with a new head revision (someone changed the file meanwhile). */
  replaceContent(id: string, content: Buffer): void {
    this.addRevision(this.files.get(id)!, content);
  }
  content(id: string): Buffer | undefined {
    const f = this.files.get(id);
    return f?.revisions.at(-1)?.content;
  }
  findByName(name: string): FakeFile[] {
    return [...this.files.values()].filter((f) => f.name === name);
  }
  expireSessions(): void {
    for (const s of this.sessions.values()) s.expired = true;
  }

  // ---------------------------------------------------------------------------------------------

  private now(): string {
    const t = Math.max(Date.now(), this.lastTime + 1); // strictly increasing, so order is well defined
    this.lastTime = t;
    return new Date(t).toISOString();
  }

  private newFile(meta: Record<string, unknown>, space: 'drive' | 'appDataFolder', id = fileId()): FakeFile {
    const t = this.now();
    return {
      id,
      name: String(meta.name ?? 'Untitled'),
      mimeType: String(meta.mimeType ?? 'application/octet-stream'),
      parents: ((meta.parents as string[] | undefined) ?? [ROOT_ID]).map((p) => (p === 'root' ? ROOT_ID : p)),
      trashed: false,
      appProperties: { ...((meta.appProperties as Record<string, string>) ?? {}) },
      space,
      createdTime: t,
      modifiedTime: t,
      revisions: [],
    };
  }

  private addRevision(f: FakeFile, content: Buffer): void {
    const t = this.now();
    f.revisions.push({
      id: ids(40),
      content,
      md5: createHash('md5').update(content).digest('hex'),
      sha256: createHash('sha256').update(content).digest('hex'),
      modifiedTime: t,
    });
    f.modifiedTime = t;
  }

  private resource(f: FakeFile): Record<string, unknown> {
    const head = f.revisions.at(-1);
    const r: Record<string, unknown> = {
      kind: 'drive#file',
      id: f.id,
      name: f.name,
      mimeType: f.mimeType,
      parents: f.parents,
      trashed: f.trashed,
      spaces: [f.space],
      createdTime: f.createdTime,
      modifiedTime: f.modifiedTime,
    };
    if (Object.keys(f.appProperties).length) r.appProperties = f.appProperties;
    if (head && f.mimeType !== FOLDER_MIME) {
      r.size = String(head.content.length); // int64 fields are JSON strings in Drive v3
      r.md5Checksum = head.md5;
      r.sha256Checksum = head.sha256;
      r.headRevisionId = head.id;
    }
    return r;
  }

  private select(obj: Record<string, unknown>, fields: string | null, dflt: string): unknown {
    return selectFields(obj, parseFields(fields ?? dflt));
  }

  private takeFault(on: FaultOn, final: boolean): FaultAction | undefined {
    for (let i = 0; i < this.faults.length; i++) {
      const f = this.faults[i]!;
      if (f.on !== on || (f.final && !final)) continue;
      if ((f.skip ?? 0) > 0) {
        f.skip!--;
        continue;
      }
      f.times = (f.times ?? 1) - 1;
      if (f.times <= 0) this.faults.splice(i, 1);
      return f.action;
    }
    return undefined;
  }

  private sendJson(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const data = Buffer.from(JSON.stringify(body));
    res.writeHead(status, { 'Content-Type': 'application/json; charset=UTF-8', 'Content-Length': data.length, ...headers });
    res.end(data);
  }

  private sendError(res: http.ServerResponse, e: DriveError, headers: Record<string, string> = {}): void {
    this.sendJson(res, e.status, driveErrorBody(e.status, e.reason, e.message), headers);
  }

  private async readBody(req: http.IncomingMessage): Promise<Buffer> {
    const parts: Buffer[] = [];
    for await (const c of req) parts.push(c as Buffer);
    return Buffer.concat(parts);
  }

  private classify(req: http.IncomingMessage, url: URL): FaultOn | 'other' {
    const p = url.pathname;
    const m = req.method!;
    if (p.startsWith('/upload/drive/v3/files')) {
      if (url.searchParams.has('upload_id')) return /^bytes \*\//.test(String(req.headers['content-range'] ?? '')) ? 'probe' : 'chunk';
      if (url.searchParams.get('uploadType') === 'resumable') return 'session';
      return 'upload';
    }
    if (p === '/token') return 'token';
    if (p === '/drive/v3/about') return 'about';
    if (p === '/drive/v3/files') return m === 'GET' ? 'list' : 'create';
    if (p.startsWith('/drive/v3/files/')) {
      if (m === 'DELETE') return 'delete';
      if (m === 'PATCH') return 'update';
      return url.searchParams.get('alt') === 'media' ? 'media' : 'get';
    }
    return 'other';
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url!, this.origin);
    const on = this.classify(req, url);
    const rec: RequestRecord = { method: req.method!, on, path: url.pathname + url.search };
    if (req.headers['content-range']) rec.contentRange = String(req.headers['content-range']);
    if (req.headers.range) rec.range = String(req.headers.range);
    this.requests.push(rec);
    res.on('finish', () => (rec.status = res.statusCode));

    if (url.pathname === '/auth') return this.authorize(url, res);
    if (url.pathname === '/revoke') return this.revoke(req, url, res);

    const range = /^bytes \d+-(\d+)\/(\d+)$/.exec(String(req.headers['content-range'] ?? ''));
    const fault = on === 'other' ? undefined : this.takeFault(on, on === 'chunk' && !!range && Number(range[1]) + 1 === Number(range[2]));
    if (fault && 'status' in fault) {
      const body = await this.readBody(req).catch(() => Buffer.alloc(0));
      if (on === 'chunk' || on === 'upload') this.uploadBytesReceived += body.length;
      const reason = fault.reason ?? (fault.status >= 500 ? 'backendError' : 'badRequest');
      const headers: Record<string, string> = fault.retryAfter !== undefined ? { 'Retry-After': String(fault.retryAfter) } : {};
      if (on === 'token') return this.sendJson(res, fault.status, { error: reason }, headers);
      return this.sendError(res, new DriveError(fault.status, reason, `fake fault: ${reason}`), headers);
    }

    if (fault && 'json' in fault) {
      await this.readBody(req).catch(() => {});
      return this.sendJson(res, 200, fault.json);
    }

    try {
      if (on === 'token') return await this.token(req, res);
      if (on === 'chunk' || on === 'probe') return await this.putChunk(req, url, res, fault);

      const scopes = this.authenticate(req, fault);
      if (fault && 'expireToken' in fault) throw new DriveError(401, 'authError', 'Request had invalid authentication credentials.');
      const space = (url.searchParams.get('spaces') ?? 'drive').split(',');
      const p = url.pathname;
      if (on === 'about') {
        return this.sendJson(res, 200, this.select({ kind: 'drive#about', user: { kind: 'drive#user', displayName: 'Fake User', emailAddress: 'fake.user@example.com' } }, url.searchParams.get('fields'), 'kind'));
      }
      if (on === 'list') return this.list(url, res, space, scopes, fault);
      if (on === 'session') return await this.createSession(req, url, res, scopes);
      if (on === 'upload') return await this.simpleUpload(req, url, res, scopes, fault);
      if (on === 'create') {
        const meta = JSON.parse((await this.readBody(req)).toString('utf8') || '{}') as Record<string, unknown>;
        const f = this.newFile(meta, this.spaceOf(meta, scopes));
        this.files.set(f.id, f);
        this.filesCreated++;
        return this.sendJson(res, 200, this.select(this.resource(f), url.searchParams.get('fields'), 'kind,id,name,mimeType'));
      }
      const m = /^\/drive\/v3\/files\/([^/]+)(?:\/revisions\/([^/]+))?$/.exec(p);
      if (!m) throw new DriveError(404, 'notFound', `no such endpoint ${p}`);
      const f = this.fileFor(decodeURIComponent(m[1]!), scopes);
      if (m[2]) {
        if (req.method !== 'GET' || url.searchParams.get('alt') !== 'media') throw new DriveError(400, 'badRequest', 'only revisions.get alt=media is implemented');
        const rev = f.revisions.find((r) => r.id === decodeURIComponent(m[2]!));
        if (!rev) throw new DriveError(404, 'notFound', `Revision not found: ${m[2]}.`);
        return this.media(req, res, rev.content, fault);
      }
      if (on === 'media') return this.media(req, res, f.revisions.at(-1)!.content, fault);
      if (on === 'get') return this.sendJson(res, 200, this.select(this.resource(f), url.searchParams.get('fields'), 'kind,id,name,mimeType'));
      if (on === 'delete') {
        this.files.delete(f.id);
        res.writeHead(204).end();
        return;
      }
      if (on === 'update') {
        const patch = JSON.parse((await this.readBody(req)).toString('utf8') || '{}') as Record<string, unknown>;
        if ('parents' in patch) throw new DriveError(403, 'parentsNotWritable', 'The parents field is not directly writable in update requests. Use the addParents and removeParents parameters instead.');
        if (typeof patch.name === 'string') f.name = patch.name;
        for (const [k, v] of Object.entries((patch.appProperties as Record<string, string | null>) ?? {})) {
          if (v === null) delete f.appProperties[k];
          else f.appProperties[k] = v;
        }
        const add = url.searchParams.get('addParents');
        const remove = url.searchParams.get('removeParents');
        if (remove) f.parents = f.parents.filter((x) => !remove.split(',').includes(x));
        if (add) f.parents.push(...add.split(','));
        if (f.parents.length > 1) throw new DriveError(403, 'teamDrivesParentLimit', 'A file can only have one parent.');
        f.modifiedTime = this.now();
        return this.sendJson(res, 200, this.select(this.resource(f), url.searchParams.get('fields'), 'kind,id,name,mimeType'));
      }
      throw new DriveError(405, 'badRequest', 'method not allowed');
    } catch (e) {
      if (e instanceof DriveError) {
        if (!res.headersSent) this.sendError(res, e);
        return;
      }
      throw e;
    }
  }

  /** The scopes of a valid bearer token, or a 401 as Drive sends it. */
  private authenticate(req: http.IncomingMessage, fault: FaultAction | undefined): string[] {
    const m = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''));
    const t = m ? this.tokens.get(m[1]!) : undefined;
    if (t && fault && 'expireToken' in fault) t.valid = false;
    if (!t || !t.valid) throw new DriveError(401, 'authError', 'Request had invalid authentication credentials. Expected OAuth 2 access token.');
    return t.scopes;
  }

  private spaceOf(meta: Record<string, unknown>, scopes: string[]): 'drive' | 'appDataFolder' {
    const parents = (meta.parents as string[] | undefined) ?? [];
    if (parents.length > 1) throw new DriveError(403, 'teamDrivesParentLimit', 'A file can only have one parent.');
    const parent = parents[0];
    if (parent === 'appDataFolder' || (parent && this.files.get(parent)?.space === 'appDataFolder')) {
      if (!scopes.includes(SCOPE_APPDATA)) throw new DriveError(403, 'insufficientPermissions', 'Request had insufficient authentication scopes.');
      return 'appDataFolder';
    }
    if (parent && parent !== 'root' && parent !== ROOT_ID && !this.files.has(parent)) throw new DriveError(404, 'notFound', `File not found: ${parent}.`);
    return 'drive';
  }

  private fileFor(id: string, scopes: string[]): FakeFile {
    const f = this.files.get(id);
    if (!f || (f.space === 'appDataFolder' && !scopes.includes(SCOPE_APPDATA))) throw new DriveError(404, 'notFound', `File not found: ${id}.`);
    return f;
  }

  private list(url: URL, res: http.ServerResponse, spaces: string[], scopes: string[], fault: FaultAction | undefined): void {
    if (spaces.includes('appDataFolder') && !scopes.includes(SCOPE_APPDATA)) throw new DriveError(403, 'insufficientPermissions', 'Request had insufficient authentication scopes.');
    const fields = url.searchParams.get('fields');
    const pageToken = url.searchParams.get('pageToken');
    let state;
    if (pageToken) {
      state = this.pageTokens.get(pageToken);
      if (!state) throw new DriveError(400, 'invalid', 'Invalid Value: pageToken');
    }
    if ((fault && 'endlessPages' in fault) || state?.endless) {
      // Never-ending: an empty page whose token leads to another one (memory stays flat here).
      if (pageToken) this.pageTokens.delete(pageToken);
      const t = ids(20);
      this.pageTokens.set(t, { items: [], pos: 0, endless: true });
      return this.sendJson(res, 200, this.select({ kind: 'drive#fileList', incompleteSearch: false, files: [], nextPageToken: t }, fields, 'kind,nextPageToken,files(id)'));
    }
    if (!state) {
      let where;
      try {
        where = parseQuery((url.searchParams.get('q') ?? 'trashed = false').replace(/'root' in parents/, `'${ROOT_ID}' in parents`));
      } catch (e) {
        throw new DriveError(400, 'invalid', `Invalid Value: q (${(e as Error).message})`);
      }
      // Drive's search index lags behind writes: a file written moments ago may not be listed yet (files.get finds it).
      const items = [...this.files.values()].filter((f) => spaces.includes(f.space) && where(f) && !this.stillHidden(f.id));
      state = { items, pos: 0 };
    }
    const pageSize = Math.min(Number(url.searchParams.get('pageSize') ?? 100), 1000);
    // Drive may return fewer items than pageSize, even none, and still say there is more.
    const n = Math.min(pageSize, this.opts.maxPageItems ?? 2, state.items.length - state.pos);
    const emptyPage = pageToken === null && state.items.length > 0 && this.opts.emptyFirstPage !== false; // the first page is empty on purpose
    const page = emptyPage ? [] : state.items.slice(state.pos, state.pos + n);
    const pos = state.pos + page.length;
    const body: Record<string, unknown> = { kind: 'drive#fileList', incompleteSearch: false, files: page.map((f) => this.resource(f)) };
    if (pos < state.items.length) {
      const t = ids(20);
      this.pageTokens.set(t, { items: state.items, pos });
      body.nextPageToken = t;
    }
    this.sendJson(res, 200, this.select(body, fields, 'kind,incompleteSearch,nextPageToken,files(kind,id,name,mimeType)'));
  }

  private media(req: http.IncomingMessage, res: http.ServerResponse, content: Buffer, fault: FaultAction | undefined): void {
    let start = 0;
    let end = content.length - 1;
    let status = 200;
    const range = req.headers.range;
    if (range) {
      const m = /^bytes=(\d+)-(\d*)$/.exec(range);
      if (!m) throw new DriveError(400, 'badRequest', `bad Range ${range}`);
      start = Number(m[1]);
      if (m[2]) end = Math.min(Number(m[2]), end);
      if (start > end) {
        res.writeHead(416, { 'Content-Range': `bytes */${content.length}` }).end();
        return;
      }
      status = 206;
    }
    const body = content.subarray(start, end + 1);
    const headers: Record<string, string | number> = { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length };
    if (status === 206) headers['Content-Range'] = `bytes ${start}-${end}/${content.length}`;
    if (fault && 'gzip' in fault) {
      const packed = gzipSync(body);
      res.writeHead(status, { ...headers, 'Content-Encoding': 'gzip', 'Content-Length': packed.length });
      this.downloadBytesSent += packed.length;
      res.end(packed);
      return;
    }
    res.writeHead(status, headers);
    if (fault && ('drop' in fault || 'hang' in fault)) {
      const half = body.subarray(0, Math.floor(body.length / 2));
      this.downloadBytesSent += half.length;
      res.write(half, () => 'drop' in fault && setTimeout(() => res.destroy(), 20));
      return;
    }
    this.downloadBytesSent += body.length;
    res.end(body);
  }

  private parseUploadMeta(raw: Buffer): Record<string, unknown> {
    if (raw.length === 0) return {};
    try {
      return JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
    } catch {
      throw new DriveError(400, 'parseError', 'This API does not support parsing form-encoded input.');
    }
  }

  private checkAppProperties(meta: Record<string, unknown>): void {
    for (const [k, v] of Object.entries((meta.appProperties as Record<string, string>) ?? {})) {
      if (Buffer.byteLength(k) + Buffer.byteLength(String(v)) > 124) throw new DriveError(400, 'invalidProperty', `appProperty ${k} exceeds 124 bytes`);
    }
  }

  private async createSession(req: http.IncomingMessage, url: URL, res: http.ServerResponse, scopes: string[]): Promise<void> {
    const meta = this.parseUploadMeta(await this.readBody(req));
    this.checkAppProperties(meta);
    const m = /^\/upload\/drive\/v3\/files(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m) throw new DriveError(404, 'notFound', 'no such endpoint');
    let fileId: string | undefined;
    if (req.method === 'PATCH') {
      fileId = this.fileFor(decodeURIComponent(m[1]!), scopes).id;
    } else if (req.method === 'POST' && !m[1]) {
      this.spaceOf(meta, scopes);
    } else {
      throw new DriveError(405, 'badRequest', 'method not allowed');
    }
    const len = req.headers['x-upload-content-length'];
    if (len !== undefined && !/^\d+$/.test(String(len))) throw new DriveError(400, 'badRequest', 'bad X-Upload-Content-Length');
    const s: Session = { id: ids(60), fileId, metadata: meta, total: len === undefined ? null : Number(len), fields: url.searchParams.get('fields'), parts: [], stored: 0, expired: false };
    this.sessions.set(s.id, s);
    const location = `${this.origin}${url.pathname}?uploadType=resumable&upload_id=${s.id}`;
    res.writeHead(200, { Location: location, 'X-GUploader-UploadID': s.id, 'Content-Length': 0 }).end();
  }

  /** Finish a session: the file (or the new revision) appears with all its bytes. */
  private complete(s: Session, scopes: string[]): FakeFile {
    const content = Buffer.concat(s.parts);
    let f: FakeFile;
    if (s.fileId) {
      f = this.files.get(s.fileId)!;
      if (typeof s.metadata.name === 'string') f.name = s.metadata.name;
      Object.assign(f.appProperties, s.metadata.appProperties ?? {});
    } else {
      f = this.newFile(s.metadata, this.spaceOf(s.metadata, scopes));
      this.files.set(f.id, f);
      this.filesCreated++;
    }
    this.addRevision(f, content);
    s.parts = [];
    s.done = f;
    return f;
  }

  private async putChunk(req: http.IncomingMessage, url: URL, res: http.ServerResponse, fault: FaultAction | undefined): Promise<void> {
    const s = this.sessions.get(url.searchParams.get('upload_id') ?? '');
    if (s && fault && 'expireSession' in fault) s.expired = true;
    if (!s || s.expired) {
      await this.readBody(req).catch(() => {});
      // Drive answers an expired or unknown session with a bare 404.
      res.writeHead(404, { 'Content-Type': 'text/html; charset=UTF-8' }).end('Not Found');
      return;
    }
    // The session URI authorises the upload, but a bearer token that is sent must still be valid.
    if (req.headers.authorization || (fault && 'expireToken' in fault)) {
      try {
        this.authenticate(req, fault);
      } catch (e) {
        this.uploadBytesReceived += (await this.readBody(req).catch(() => Buffer.alloc(0))).length;
        throw e;
      }
    }
    const scopes = [SCOPE_FILE, SCOPE_APPDATA];
    const sendDone = () => this.sendJson(res, 200, this.select(this.resource(s.done!), s.fields, 'kind,id,name,mimeType'));
    const send308 = () => {
      const h: Record<string, string | number> = { 'Content-Length': 0 };
      if (s.stored > 0) h.Range = `bytes=0-${s.stored - 1}`;
      res.writeHead(308, h).end();
    };
    const cr = String(req.headers['content-range'] ?? '');
    const probe = /^bytes \*\/(\d+|\*)$/.exec(cr);
    if (probe) {
      await this.readBody(req);
      if (s.done) return sendDone();
      return send308();
    }
    const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(cr);
    if (!m) {
      await this.readBody(req);
      throw new DriveError(400, 'badRequest', `Failed to parse Content-Range header: ${cr}`);
    }
    const start = Number(m[1]);
    const end = Number(m[2]);
    const total = m[3] === '*' ? null : Number(m[3]);
    const len = end - start + 1;
    if (Number(req.headers['content-length']) !== len) {
      await this.readBody(req);
      throw new DriveError(400, 'badRequest', 'Content-Length does not match Content-Range');
    }
    if (s.done) {
      await this.readBody(req);
      return sendDone();
    }

    if (fault && 'hang' in fault) {
      for await (const c of req) this.uploadBytesReceived += (c as Buffer).length;
      return; // no reply: the client times out or is killed
    }
    // Receive the body, counting bytes; a 'drop' fault cuts the connection half-way.
    const received: Buffer[] = [];
    let got = 0;
    const cut = fault && 'drop' in fault;
    const ok = await new Promise<boolean>((resolve) => {
      req.on('data', (c: Buffer) => {
        if (cut && got >= len / 2) return;
        received.push(c);
        got += c.length;
        this.uploadBytesReceived += c.length;
        if (cut && got >= len / 2) {
          req.socket.destroy();
          resolve(false);
        }
      });
      req.on('end', () => resolve(true));
      req.on('error', () => resolve(false));
      req.on('close', () => resolve(got === len));
    });
    let body = Buffer.concat(received);

    if (total !== null && s.total !== null && total !== s.total) throw new DriveError(400, 'badRequest', `total ${total} differs from the declared ${s.total}`);
    if (total !== null) s.total = total;
    if (start > s.stored) throw new DriveError(400, 'badRequest', `chunk starts at ${start} but only ${s.stored} bytes are stored`);
    const last = s.total !== null && end + 1 === s.total;
    if (ok && !last && len % CHUNK_UNIT !== 0) throw new DriveError(400, 'badRequest', `chunk of ${len} bytes is not a multiple of 256 KiB and is not the last one`);
    if (s.total !== null && end + 1 > s.total) throw new DriveError(400, 'badRequest', 'chunk runs past the declared total');

    if (!ok) {
      // What arrived of a cut chunk is kept in whole 256 KiB units, as the real service persists it.
      body = body.subarray(0, Math.floor(body.length / CHUNK_UNIT) * CHUNK_UNIT);
    } else if (fault && 'partialAck' in fault) {
      body = body.subarray(0, Math.min(fault.partialAck, body.length));
    }
    const fresh = body.subarray(Math.min(s.stored - start, body.length)); // a resent overlap is ignored
    if (start + body.length > s.stored) {
      s.parts.push(Buffer.from(fresh));
      s.stored += fresh.length;
    }
    if (!ok) return;
    if (s.total !== null && s.stored === s.total) this.complete(s, scopes);
    if (fault && 'loseResponse' in fault) {
      res.destroy();
      return;
    }
    if (s.done) return sendDone();
    send308();
  }

  private async simpleUpload(req: http.IncomingMessage, url: URL, res: http.ServerResponse, scopes: string[], fault: FaultAction | undefined): Promise<void> {
    const type = url.searchParams.get('uploadType');
    const m = /^\/upload\/drive\/v3\/files(?:\/([^/]+))?$/.exec(url.pathname);
    if (!m || (req.method === 'POST') === !!m[1] || (req.method !== 'POST' && req.method !== 'PATCH')) throw new DriveError(405, 'badRequest', 'method not allowed');
    const raw = await this.readBody(req);
    this.uploadBytesReceived += raw.length;
    if (fault && 'drop' in fault) {
      res.destroy(); // cut before Drive took it: nothing is stored
      return;
    }
    let meta: Record<string, unknown> = {};
    let content = raw;
    if (type === 'multipart') {
      const b = /boundary=([^;]+)/.exec(String(req.headers['content-type']))?.[1];
      if (!b) throw new DriveError(400, 'badRequest', 'multipart without boundary');
      const parts = raw.toString('latin1').split(`--${b}`).slice(1, -1);
      if (parts.length !== 2) throw new DriveError(400, 'badRequest', 'multipart needs metadata and media parts');
      const body = (p: string) => Buffer.from(p.slice(p.indexOf('\r\n\r\n') + 4).replace(/\r\n$/, ''), 'latin1');
      meta = this.parseUploadMeta(body(parts[0]!));
      content = body(parts[1]!);
    } else if (type !== 'media') {
      throw new DriveError(400, 'badRequest', `unsupported uploadType ${type}`);
    }
    this.checkAppProperties(meta);
    let f: FakeFile;
    if (m[1]) {
      // files.update with media: a new head revision; metadata as in a PATCH of the resource.
      f = this.fileFor(decodeURIComponent(m[1]), scopes);
      if ('parents' in meta) throw new DriveError(403, 'parentsNotWritable', 'The parents field is not directly writable in update requests. Use the addParents and removeParents parameters instead.');
      if (typeof meta.name === 'string') f.name = meta.name;
      Object.assign(f.appProperties, meta.appProperties ?? {});
    } else {
      f = this.newFile(meta, this.spaceOf(meta, scopes));
      this.files.set(f.id, f);
      this.filesCreated++;
    }
    this.addRevision(f, content);
    if (fault && 'loseResponse' in fault) {
      res.destroy();
      return;
    }
    this.sendJson(res, 200, this.select(this.resource(f), url.searchParams.get('fields'), 'kind,id,name,mimeType'));
  }

  // ---- OAuth --------------------------------------------------------------------------------

  /** The consent page: the fake user agrees at once; redirect back with a code and the state. */
  private authorize(url: URL, res: http.ServerResponse): void {
    const q = url.searchParams;
    const redirect = q.get('redirect_uri') ?? '';
    const bad = (why: string) => {
      res.writeHead(400, { 'Content-Type': 'text/plain' }).end(`Error 400: ${why}`);
    };
    if (q.get('client_id') !== this.clientId) return bad('invalid_client');
    if (!/^http:\/\/(127\.0\.0\.1|\[::1\]|localhost):\d+(\/.*)?$/.test(redirect)) return bad('redirect_uri must be a loopback address');
    if (q.get('response_type') !== 'code') return bad('unsupported response_type');
    if (q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) return bad('PKCE S256 required');
    if (!q.get('state')) return bad('state required by this fake');
    const scopes = (q.get('scope') ?? '').split(' ').filter(Boolean);
    const code = `4/${ids(40)}`;
    this.codes.set(code, { challenge: q.get('code_challenge')!, redirectUri: redirect, scopes, used: false });
    const to = new URL(redirect);
    to.searchParams.set('code', code);
    to.searchParams.set('state', q.get('state')!);
    to.searchParams.set('scope', scopes.join(' '));
    res.writeHead(302, { Location: to.href }).end();
  }

  private async token(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const form = new URLSearchParams((await this.readBody(req)).toString('utf8'));
    const err = (status: number, error: string, description: string) => this.sendJson(res, status, { error, error_description: description });
    if (form.get('client_id') !== this.clientId || form.get('client_secret') !== this.clientSecret) return err(401, 'invalid_client', 'The OAuth client was not found.');
    const lifetime = this.opts.tokenLifetime ?? 3599;
    const grant = form.get('grant_type');
    if (grant === 'authorization_code') {
      const c = this.codes.get(form.get('code') ?? '');
      if (!c || c.used) return err(400, 'invalid_grant', 'Malformed auth code.');
      c.used = true;
      if (form.get('redirect_uri') !== c.redirectUri) return err(400, 'redirect_uri_mismatch', 'Bad Request');
      const verifier = form.get('code_verifier') ?? '';
      if (createHash('sha256').update(verifier).digest('base64url') !== c.challenge) return err(400, 'invalid_grant', 'Invalid code verifier.');
      const refresh = `1//${ids(40)}`;
      this.refreshTokens.set(refresh, { scopes: c.scopes, revoked: false });
      const access = `ya29.${ids(40)}`;
      this.tokens.set(access, { scopes: c.scopes, valid: true, refreshToken: refresh });
      return this.sendJson(res, 200, { access_token: access, expires_in: lifetime, refresh_token: refresh, scope: c.scopes.join(' '), token_type: 'Bearer' });
    }
    if (grant === 'refresh_token') {
      const refresh = form.get('refresh_token') ?? '';
      const r = this.refreshTokens.get(refresh);
      if (!r || r.revoked) return err(400, 'invalid_grant', 'Token has been expired or revoked.');
      const access = `ya29.${ids(40)}`;
      this.tokens.set(access, { scopes: r.scopes, valid: true, refreshToken: refresh });
      return this.sendJson(res, 200, { access_token: access, expires_in: lifetime, scope: r.scopes.join(' '), token_type: 'Bearer' });
    }
    return err(400, 'unsupported_grant_type', `Invalid grant_type: ${grant}`);
  }

  private async revoke(req: http.IncomingMessage, url: URL, res: http.ServerResponse): Promise<void> {
    const form = new URLSearchParams((await this.readBody(req)).toString('utf8'));
    const token = url.searchParams.get('token') ?? form.get('token') ?? '';
    const r = this.refreshTokens.get(token);
    const a = this.tokens.get(token);
    if (!r && !a) return this.sendJson(res, 400, { error: 'invalid_token', error_description: 'Token expired or revoked' });
    const refresh = r ? token : a!.refreshToken;
    if (refresh) {
      this.refreshTokens.get(refresh)!.revoked = true;
      for (const t of this.tokens.values()) if (t.refreshToken === refresh) t.valid = false;
    }
    if (a) a.valid = false;
    this.sendJson(res, 200, {});
  }
}
