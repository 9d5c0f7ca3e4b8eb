// Which snapshots `forget` keeps (restic's rules): per group of snapshots of one directory on one
// host, the newest N (--keep-last) and the newest snapshot of each of the N most recent days,
// ISO weeks and months that have one (--keep-daily/-weekly/-monthly). Everything else goes.
import type { Snapshot } from './snapshot.js';

export interface KeepPolicy {
  last?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
}

const day = (d: Date) => d.toISOString().slice(0, 10);
const month = (d: Date) => d.toISOString().slice(0, 7);
function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const wd = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - wd); // the week's Thursday decides its year
  const start = Date.UTC(t.getUTCFullYear(), 0, 1);
  return `${t.getUTCFullYear()}-W${String(Math.ceil(((t.getTime() - start) / 86_400_000 + 1) / 7)).padStart(2, '0')}`;
}

/** The snapshots to keep and why (e.g. "last", "daily"); all others are to be forgotten. */
export function applyPolicy(all: readonly Snapshot[], p: KeepPolicy): Map<string, string[]> {
  const keep = new Map<string, string[]>();
  const groups = new Map<string, Snapshot[]>();
  for (const s of all) {
    const g = `${s.host}\0${s.source}`;
    groups.set(g, [...(groups.get(g) ?? []), s]);
  }
  for (const list of groups.values()) {
    const newest = [...list].sort((a, b) => b.time.localeCompare(a.time));
    const rules: Array<[string, number | undefined, (d: Date) => string]> = [
      ['last', p.last, () => ''],
      ['daily', p.daily, day],
      ['weekly', p.weekly, isoWeek],
      ['monthly', p.monthly, month],
    ];
    for (const [why, n, bucket] of rules) {
      if (!n) continue;
      const seen = new Set<string>();
      for (const s of newest) {
        if (seen.size >= n) break;
        const b = why === 'last' ? s.id : bucket(new Date(s.time));
        if (seen.has(b)) continue;
        seen.add(b);
        keep.set(s.id, [...(keep.get(s.id) ?? []), why]);
      }
    }
  }
  return keep;
}
