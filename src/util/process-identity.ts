// Who owns a file or directory left by a run: its pid and, on Linux, the process's start time,
// so that a pid reused by an unrelated process after the owner died is not taken for the owner.
import { readFileSync } from 'node:fs';

/** Start time of `pid` in clock ticks since boot (Linux: /proc/PID/stat field 22); 0 where unknown. */
function startTime(pid: number | 'self'): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    const v = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    return Number.isSafeInteger(v) ? v : 0;
  } catch {
    return 0;
  }
}

let self: string | undefined;

/** This process as "PID.START" (START 0 where the platform does not say). */
export function processIdentity(): string {
  return (self ??= `${process.pid}.${startTime('self')}`);
}

/** Is the process that `identity` (from processIdentity) names still running? */
export function identityAlive(identity: string): boolean {
  const [pid, start] = identity.split('.').map(Number) as [number, number];
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // Running: the same process unless its start time is known and differs (a reused pid).
  const now = start ? startTime(pid) : 0;
  return !now || now === start;
}
