// The start many end-to-end files share: a temp home whose config holds a recovery code, the
// realistic export tree and its archive made by the built CLI's `create`. Made once per file; a
// file whose tests change the config or the archive takes a copy for each test instead of making
// it all again (a recovery code, a tree of ~1 MB and a `create`: about a second each time).
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { makeExportTree, makeHome, newRecoveryCode, runCli, type RecoveryCode } from './cli.js';

export interface ArchiveHome {
  /** The temp dir (removed afterwards). */
  home: string;
  /** Its config dir, holding the recovery code `rc` as the only recipient. */
  configDir: string;
  /** The code, in home/code.txt. */
  rc: RecoveryCode;
  /** The export tree (makeExportTree); never changed by the tests, so never copied. */
  src: string;
  /** home/a.bkp: `create src -o a.bkp` (with `createArgs`); not made with `archive: false`. */
  archive: string;
}

export interface ArchiveHomeOptions {
  /** The recovery code's label. */
  label?: string;
  /** A fresh copy of the home for each test. */
  perTest?: boolean;
  /** More arguments for the archive's `create` (e.g. --segment-size). */
  createArgs?: string[];
  /** false: no archive (a file whose tests make their own). */
  archive?: boolean;
}

/**
 * Register the hooks that make the home (beforeAll, or a fresh copy before each test with
 * `perTest`) and remove it; the returned object's fields are set once they have run.
 */
export function archiveHome(prefix: string, o: ArchiveHomeOptions = {}): ArchiveHome {
  const h = {} as ArchiveHome;
  let made: ArchiveHome;
  const removals: Array<() => Promise<void>> = [];
  beforeAll(async () => {
    const { home, configDir, cleanup } = await makeHome(prefix);
    removals.push(cleanup);
    const rc = await newRecoveryCode(configDir, join(home, 'code.txt'), o.label);
    const src = join(home, 'export');
    await makeExportTree(src);
    const archive = join(home, 'a.bkp');
    if (o.archive !== false) {
      const r = await runCli(['create', src, '-o', archive, ...(o.createArgs ?? [])], { configDir, timeoutMs: 60_000 });
      if (r.exitCode !== 0) throw new Error(`create failed (${r.exitCode}): ${r.stderr}`);
    }
    made = { home, configDir, rc, src, archive };
    if (!o.perTest) Object.assign(h, made);
  });
  afterAll(async () => {
    for (const remove of removals) await remove();
  });
  if (o.perTest) {
    let cleanupTest: () => Promise<void>;
    beforeEach(async () => {
      const { home, configDir, cleanup } = await makeHome(prefix);
      cleanupTest = cleanup;
      await mkdir(configDir, { mode: 0o700 }); // as the CLI makes it (copyFile keeps the files' modes)
      for (const name of await readdir(made.configDir)) await copyFile(join(made.configDir, name), join(configDir, name));
      const rc = { ...made.rc, file: join(home, 'code.txt') };
      await copyFile(made.rc.file, rc.file);
      const archive = join(home, 'a.bkp');
      if (o.archive !== false) await copyFile(made.archive, archive);
      Object.assign(h, { home, configDir, rc, src: made.src, archive });
    });
    afterEach(() => cleanupTest());
  }
  return h;
}
