// Writes to a repository on Drive wait here, on local disk, until Drive has them whole
// (backupctl-repository(5) "ON GOOGLE DRIVE"): the bytes (synced) and a note of the path, their
// MD5 and SHA-256 and, once opened, the resumable upload session. Uploaded in the order written,
// so a pack reaches Drive before the index file naming it and both before the snapshot. A run
// killed mid-upload leaves its notes behind; the next run that locks the repository adopts them
// (the owner named in the note's file name is gone) and resumes the session, so bytes Drive
// acknowledged are not sent again. A session URI lets anyone holding it upload: kept 0600.
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { open, readFile, readdir, rename, unlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { configDir, ensureConfigDir } from '../config.js';
import { ioError } from '../errors.js';
import { writeFileAtomic } from '../util/fsutil.js';
import { writeAll } from '../util/write-all.js';
import { ourselves, ownerGone, type Owner } from '../util/owner.js';

export interface OutboxEntry {
  /** Orders the entries: time written, then a counter. */
  seq: string;
  /** The repository folder it is for (a repository made again under the same name is another). */
  root: string;
  path: string;
  size: number;
  md5: string;
  sha256: string;
  session: string | null;
}

const ownerTag = (o: Owner) => `${o.host}.${o.pid}.${o.start ?? '-'}`;
const NOTE = /^(\d{15}-\d{6}-[0-9a-f]{8})\.([0-9a-f]{8})\.(\d+)\.(\d+|-)\.json$/;
let counter = 0;

export class Outbox {
  private readonly me = ownerTag(ourselves());
  constructor(readonly dir: string) {}

  private note(seq: string, owner = this.me) {
    return join(this.dir, `${seq}.${owner}.json`);
  }
  bin(seq: string) {
    return join(this.dir, `${seq}.bin`);
  }

  /** Spool `data` for `path` (synced before the note that names it is written). */
  async add(root: string, path: string, data: readonly Uint8Array[]): Promise<OutboxEntry> {
    await ensureConfigDir(relative(configDir(), this.dir));
    const seq = `${String(Date.now()).padStart(15, '0')}-${String(counter++ % 1e6).padStart(6, '0')}-${randomBytes(4).toString('hex')}`;
    const md5 = createHash('md5');
    const sha = createHash('sha256');
    let size = 0;
    const bin = this.bin(seq);
    try {
      const fh = await open(bin, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await writeAll(fh, [...data], 0);
        await fh.sync();
      } finally {
        await fh.close();
      }
    } catch (err) {
      await unlink(bin).catch(() => {});
      throw ioError(err, bin, 'write');
    }
    for (const d of data) {
      md5.update(d);
      sha.update(d);
      size += d.length;
    }
    const e: OutboxEntry = { seq, root, path, size, md5: md5.digest('hex'), sha256: sha.digest('hex'), session: null };
    await this.save(e);
    return e;
  }

  save(e: OutboxEntry): Promise<void> {
    return writeFileAtomic(this.note(e.seq), JSON.stringify(e) + '\n', 0o600);
  }

  async remove(e: OutboxEntry): Promise<void> {
    await unlink(this.note(e.seq)).catch(() => {});
    await unlink(this.bin(e.seq)).catch(() => {});
  }

  /**
   * The entries of runs that are certainly gone, taken over (renamed to our name: of two runs
   * adopting at once, one gets each), oldest first; those older than `maxAgeMs` are dropped.
   */
  async adoptOrphans(maxAgeMs: number): Promise<OutboxEntry[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: OutboxEntry[] = [];
    for (const name of names.sort()) {
      const m = NOTE.exec(name);
      if (!m) continue;
      const owner: Owner = { host: m[2]!, pid: Number(m[3]), start: m[4] === '-' ? null : m[4]! };
      if (!ownerGone(owner)) continue;
      try {
        await rename(join(this.dir, name), this.note(m[1]!));
      } catch {
        continue; // another run took it first
      }
      try {
        const e = JSON.parse(await readFile(this.note(m[1]!), 'utf8')) as OutboxEntry;
        if (e.seq !== m[1] || typeof e.path !== 'string' || typeof e.root !== 'string' || !Number.isSafeInteger(e.size)) throw new Error('bad note');
        if (Date.now() - Number(e.seq.slice(0, 15)) > maxAgeMs) await this.remove(e);
        else out.push(e);
      } catch {
        // A note that cannot be read: its bytes are useless without it (the data is written again).
        await unlink(this.note(m[1]!)).catch(() => {});
        await unlink(this.bin(m[1]!)).catch(() => {});
      }
    }
    return out;
  }
}
