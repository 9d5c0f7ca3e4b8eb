// Who made a lock or a temporary file, and whether that process is gone: this host's name, the
// pid, and (on Linux) the pid's start time, so a pid reused by a later process is not taken for
// the one that made the file. Anything we cannot decide counts as alive: a leftover stays, a lock
// stays held, but nothing in use is ever taken away.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/** A short tag for this host, put into names and locks (another host on a shared directory has another). */
export const HOST_TAG = createHash('sha256').update(hostname()).digest('hex').slice(0, 8);

/**
 * Field 22 of /proc/PID/stat: the start time in clock ticks since boot, a number that stays the
 * same for a process's whole life; null where there is no /proc (macOS, Windows) or no such pid.
 */
export function startTicks(pid: number): string | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may itself hold spaces or ')'.
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
}

/** Milliseconds since the epoch at which `pid` started, on Linux (USER_HZ is 100 in /proc). */
function startedAtMs(pid: number): number | null {
  const ticks = startTicks(pid);
  if (ticks === null) return null;
  let btime: number;
  try {
    btime = Number(/^btime (\d+)$/m.exec(readFileSync('/proc/stat', 'utf8'))?.[1]);
  } catch {
    return null;
  }
  return Number.isFinite(btime) ? btime * 1000 + Number(ticks) * 10 : null;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const OUR_START = startTicks(process.pid);

export interface Owner {
  host: string;
  pid: number;
  /** startTicks of the pid when it made the file; null where unknown. */
  start: string | null;
}

export const ourselves = (): Owner => ({ host: HOST_TAG, pid: process.pid, start: OUR_START });

/** True only when `o` certainly no longer runs: made on this host, and its pid is dead or now a later process. */
export function ownerGone(o: Owner): boolean {
  if (o.host !== HOST_TAG || !Number.isSafeInteger(o.pid) || o.pid <= 0) return false;
  if (!pidAlive(o.pid)) return true;
  if (o.start === null) return false;
  const now = startTicks(o.pid);
  return now !== null && now !== o.start;
}

/** A file last written at `mtimeMs` by `pid` of this host: is that process gone (dead, or the pid reused since)? */
export function writerGone(pid: number, mtimeMs: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  if (!pidAlive(pid)) return true;
  const started = startedAtMs(pid);
  // A second of slack for the clock-tick rounding of the start time.
  return started !== null && started > mtimeMs + 1000;
}
