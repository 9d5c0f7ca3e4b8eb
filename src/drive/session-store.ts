// Resumable upload sessions survive the process (Ctrl-C, kill, lost network): one 0600 file per
// archive, keyed by the archive's SHA-256 and size, so a different file re-created at the same path
// never resumes into another file's session. A session URI lets anyone holding it upload into the
// file, so it is kept like a credential.
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { configDir, ensureConfigDir } from '../config.js';
import { ioError } from '../errors.js';
import { writeFileAtomic } from '../util/fsutil.js';
import { acquireLock, type Lock } from '../util/lock.js';
import type { FileDigest } from './hash.js';

export interface SavedSession {
  uri: string;
  /** What the session was opened for: a push under another name or space starts afresh. */
  name: string;
  space: string;
  created: string;
}

const SESSIONS = 'drive-sessions';

export class SessionStore {
  readonly path: string;
  constructor(digest: FileDigest) {
    this.path = join(configDir(), SESSIONS, `${digest.sha256}-${digest.size}.json`);
  }

  /** Two pushes of the same archive at once would fight over one session: the second waits its turn (exit 9). */
  async lock(): Promise<Lock> {
    await ensureConfigDir(SESSIONS);
    return acquireLock(this.path, 'the upload of this archive');
  }

  async load(): Promise<SavedSession | null> {
    try {
      return JSON.parse(await readFile(this.path, 'utf8')) as SavedSession;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || err instanceof SyntaxError) return null;
      throw ioError(err, this.path, 'read');
    }
  }

  save(s: SavedSession): Promise<void> {
    return writeFileAtomic(this.path, JSON.stringify(s) + '\n', 0o600);
  }

  async clear(): Promise<void> {
    await unlink(this.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw ioError(err, this.path, 'delete');
    });
  }
}
