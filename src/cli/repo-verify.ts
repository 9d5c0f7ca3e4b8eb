// `backupctl verify --repo REPO [SNAPSHOT] [--read-data]`: the repository side of `verify`.
import { Exit, type ExitCode } from '../errors.js';
import { RepoReader } from '../repo/reader.js';
import { listSnapshots, pickSnapshot } from '../repo/snapshot.js';
import { verifyRepository } from '../ops/verify-repo.js';
import { termSafe } from '../util/terminal-text.js';
import type { RunContext } from './run.js';
import { emitJson, info } from './run.js';
import { startProgress } from './progress.js';
import type { UnlockOptions } from './unlock.js';
import { withRepositoryKeys } from './repo-open.js';

export async function verifyRepositoryCommand(ctx: RunContext, which: string | undefined, opts: UnlockOptions & { repo: string; readData?: boolean }): Promise<ExitCode> {
  return withRepositoryKeys(ctx, opts, async (store, keys) => {
    const progress = await startProgress('verify');
    const t0 = Date.now();
    try {
      const reader = await RepoReader.open(store, keys);
      const all = await listSnapshots(store, reader.dedup);
      const listedAt = Date.now();
      const snapshots = which === undefined ? all : [pickSnapshot(all, which)];
      const res = await verifyRepository(reader, snapshots, !!opts.readData, listedAt, ctx.signal, (p) => progress.update(p));
      progress.stop();
      const seconds = (Date.now() - t0) / 1000;
      const bad = res.damaged.length > 0 || res.affected.length > 0;
      if (ctx.json) emitJson({ ok: !bad, repository: opts.repo, ...res, seconds });
      else {
        for (const d of res.damaged) process.stdout.write(`damaged: ${d.pack === 'index' || d.pack === 'tree' ? d.pack : `pack ${d.pack}`}: ${termSafe(d.problem)}\n`);
        for (const a of res.affected) for (const p of a.paths) process.stdout.write(`lost: snapshot ${a.snapshot}: ${termSafe(p)}\n`);
        const what = `${res.snapshots} snapshot${res.snapshots === 1 ? '' : 's'}, ${res.files} files, ${res.chunks} chunks${opts.readData ? `, ${res.packsRead} packs read (${(res.bytesRead / 1e6).toFixed(1)} MB)` : ''}`;
        info(bad ? `DAMAGED: ${termSafe(opts.repo)}: ${res.damaged.length} damaged, ${res.affected.length} snapshot(s) lose data (listed above): exit 5` : `OK: ${termSafe(opts.repo)}: ${what} (${seconds.toFixed(1)} s)`);
        const late = [res.listedLate.index && `${res.listedLate.index} index file(s)`, res.listedLate.packs && `${res.listedLate.packs} pack(s)`].filter(Boolean).join(' and ');
        if (late) info(`note: ${late} of a backup that had just finished were listed only the second time, and verified`);
        if (res.unindexed) info(`note: ${res.unindexed} pack(s) of interrupted backups are in no index; prune removes them`);
      }
      return bad ? Exit.corrupt : Exit.ok;
    } finally {
      progress.stop();
    }
  });
}
