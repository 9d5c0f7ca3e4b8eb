// `backupctl restore --repo REPO SNAPSHOT|latest -d DIR`: the repository side of `restore`.
import { RepoReader } from '../repo/reader.js';
import { listSnapshots, pickSnapshot } from '../repo/snapshot.js';
import { restoreSnapshot } from '../ops/restore-snapshot.js';
import { termSafe } from '../util/terminal-text.js';
import { Exit, type ExitCode } from '../errors.js';
import type { RunContext } from './run.js';
import { emitJson, info } from './run.js';
import { startProgress } from './progress.js';
import type { UnlockOptions } from './unlock.js';
import { withRepositoryKeys } from './repo-open.js';
import { UnpackThreads } from '../repo/unpack.js';

/**
 * `salvage` comes with restore's --salvage (archive restore's option, exit 10): what is intact is
 * restored and what a damaged or missing pack costs is named.
 */
export async function restoreFromRepository(ctx: RunContext, which: string, opts: UnlockOptions & { repo: string; dir: string; only?: string[]; force?: boolean; salvage?: boolean }): Promise<ExitCode> {
  // The threads that will write the files start first, while the repository is unlocked and read.
  const threads = new UnpackThreads();
  try {
    return await restoreWith(ctx, which, opts, threads);
  } finally {
    await threads.stop();
  }
}

function restoreWith(ctx: RunContext, which: string, opts: UnlockOptions & { repo: string; dir: string; only?: string[]; force?: boolean; salvage?: boolean }, threads: UnpackThreads): Promise<ExitCode> {
  return withRepositoryKeys(ctx, opts, async (store, keys) => {
    const progress = await startProgress('restore');
    const t0 = Date.now();
    try {
      const reader = await RepoReader.open(store, keys);
      const snapshot = pickSnapshot(await listSnapshots(store, reader.dedup), which);
      const res = await restoreSnapshot({ reader, snapshot, threads, listedAt: Date.now(), dest: opts.dir, only: opts.only, force: opts.force, salvage: opts.salvage, signal: ctx.signal, onProgress: (p) => progress.update(p) });
      progress.stop();
      const seconds = (Date.now() - t0) / 1000;
      if (ctx.json) emitJson({ ok: true, dir: opts.dir, snapshot: snapshot.id, ...res, seconds });
      else {
        info(`Restored snapshot ${snapshot.id} (${res.entries} entries, ${res.files} files, ${(res.bytes / 1e6).toFixed(1)} MB) into ${termSafe(opts.dir)} in ${seconds.toFixed(1)} s${res.replaced ? `; replaced ${res.replaced} existing` : ''}`);
        for (const p of res.lost) process.stdout.write(`lost: ${termSafe(p)}\n`);
        if (res.lost.length) info(`${res.lost.length} file(s) lost to damaged or missing data (listed above): exit 10`);
      }
      return res.lost.length ? Exit.salvaged : Exit.ok;
    } finally {
      progress.stop();
    }
  });
}
