// The commit's journal (commit.ts), kept in the staging directory so that a restore killed during
// its commit (SIGKILL, out of memory, power loss) can be undone by the next restore into DEST.
// It holds the whole plan, written once before the first change in DEST: every step's entry,
// type, link target and what was at its path (and the times of the directories merged into, to
// give them back). Originals that --force moves
// aside are named by their step's number, so nothing more needs writing while steps are taken.
// "committed" is created once every step is done: from then on the restore is finished and only
// the staging directory (with the originals --force replaced) is left to remove.
import { closeSync, constants, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { BackupctlError, Exit } from '../errors.js';
import { syncDirSync } from '../util/fsutil.js';
import { EntryType } from './format.js';

/** What was at a step's path when the commit was planned. */
export const Had = {
  nothing: 0,
  /** A real directory, where the step is a directory: merged into, never removed. */
  dir: 1,
  /** Something that --force replaces (moved aside before the step). */
  other: 2,
} as const;
export type Had = (typeof Had)[keyof typeof Had];

/** Access and modification times, in milliseconds. */
export type Times = [number, number];

export interface JournalStep {
  type: EntryType;
  path: string;
  /** Symlinks: the target (to recognise the link as the one this restore made). */
  target: string;
  had: Had;
  /** A directory merged into: its times before the commit. */
  times?: Times;
}
export interface Journal {
  /** DEST's own times before the commit. */
  destTimes: Times;
  steps: JournalStep[];
}

const JOURNAL = 'journal';
const COMMITTED = 'committed';
/** Where --force moves originals, as .replaced/STEP. */
export const REPLACED = '.replaced';

function writeSynced(path: string, text: string): void {
  const fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    const b = Buffer.from(text);
    for (let off = 0; off < b.length; ) off += writeSync(fd, b, off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * Write the journal: to a temporary name, synced, then renamed, and the staging directory and
 * DEST synced, so that it is either whole on disk or absent before DEST changes. Absent means the
 * commit never started.
 */
export function writeJournal(staging: string, dest: string, j: Journal): void {
  const tmp = join(staging, `${JOURNAL}.tmp`);
  const steps = j.steps.map((s) => (s.times ? [s.type, s.path, s.target, s.had, ...s.times] : [s.type, s.path, s.target, s.had]));
  writeSynced(tmp, JSON.stringify({ v: 1, destTimes: j.destTimes, steps }));
  testKillPoint('journal');
  renameSync(tmp, join(staging, JOURNAL));
  syncDirSync(staging);
  syncDirSync(dest);
}

/** The journal of the staging directory, or null when the commit never started. */
export function readJournal(staging: string): Journal | null {
  let text: string;
  try {
    text = readFileSync(join(staging, JOURNAL), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const j = JSON.parse(text) as { v: number; destTimes: Times; steps: Array<[EntryType, string, string, Had, number?, number?]> };
    if (j.v !== 1 || !Array.isArray(j.steps)) throw new Error('version');
    return {
      destTimes: j.destTimes,
      steps: j.steps.map(([type, path, target, had, a, m]) => ({ type, path, target, had, times: a === undefined ? undefined : [a, m!] })),
    };
  } catch {
    throw new BackupctlError(Exit.io, `${staging} holds an unreadable journal of an interrupted restore; nothing was changed; look through ${join(staging, REPLACED)} for originals before removing it`);
  }
}

/** Every step is done: the restore is complete (synced before anything is removed). */
export function markCommitted(staging: string): void {
  writeSynced(join(staging, COMMITTED), '');
  syncDirSync(staging);
  testKillPoint('committed');
}

export const isCommitted = (staging: string) => existsSync(join(staging, COMMITTED));

const [killAt, killWith = 'SIGKILL'] = process.env.BACKUPCTL_TEST_KILL_AT?.split(':') ?? [];
/**
 * For tests only: BACKUPCTL_TEST_KILL_AT=POINT[:SIGNAL] sends this process SIGKILL (or SIGNAL,
 * e.g. SIGSTOP to let a test act mid-commit) when it reaches POINT ("journal", "step-N",
 * "committed", "undo-N"), the way a power loss or the OOM killer would stop it there.
 */
export function testKillPoint(point: string): void {
  if (killAt === point) process.kill(process.pid, killWith as NodeJS.Signals);
}
/** Whether any kill point is set (so that loops build no names otherwise). */
export const killPointsSet = killAt !== undefined;
