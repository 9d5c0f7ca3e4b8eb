// Progress for long operations: a spinner line on a terminal (ora) with bytes done, total, rate
// and ETA, JSON lines on stderr with --json, nothing at all otherwise (cron mail stays clean).
// The spinner is registered with terminal.ts, so lines and prompts are never drawn under it.
import { isJson } from './run.js';
import { setLiveSpinner } from './terminal.js';
import { count } from '../util/plural.js';

export interface ProgressPoint {
  bytes: number;
  /** Bytes the operation will have done at the end, when known (not for an archive on a pipe). */
  total?: number;
  entries?: number;
  path?: string;
}

export interface Progress {
  /** Whether anyone sees it: work done only to feed it (a total) can be skipped when not. */
  readonly shown: boolean;
  update(p: ProgressPoint): void;
  /** Idempotent. With --json, writes the last point if it was not written yet. */
  stop(): void;
}

const mb = (n: number) => (n / 1e6).toFixed(1);
const clock = (s: number) => (s < 60 ? `${s}s` : s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`);

/** Rate in bytes/s and ETA in whole seconds (undefined without a total or before any progress). */
function pace(p: ProgressPoint, t0: number, now: number): { rate: number; eta?: number } {
  const rate = p.bytes / Math.max((now - t0) / 1000, 0.001);
  if (p.total === undefined || rate <= 0) return { rate };
  return { rate, eta: Math.ceil(Math.max(p.total - p.bytes, 0) / rate) };
}

/** The spinner text: `restore: 12.0 / 48.3 MB · 6.1 MB/s · 35 entries · ETA 6s`. */
export function progressLine(label: string, p: ProgressPoint, t0: number, now: number): string {
  const { rate, eta } = pace(p, t0, now);
  const of = p.total !== undefined ? ` / ${mb(p.total)}` : '';
  const entries = p.entries !== undefined ? ` · ${count(p.entries, 'entry', 'entries')}` : '';
  return `${label}: ${mb(p.bytes)}${of} MB · ${mb(rate)} MB/s${entries}${eta !== undefined ? ` · ETA ${clock(eta)}` : ''}`;
}

export async function startProgress(label: string): Promise<Progress> {
  const t0 = Date.now();
  let last = 0;
  // An estimated total (create, migrate: files grow, databases decompress) is never shown below
  // what is already done.
  const point = (p: ProgressPoint): ProgressPoint => (p.total !== undefined && p.bytes > p.total ? { ...p, total: p.bytes } : p);
  if (isJson()) {
    let pending: ProgressPoint | null = null;
    const write = (p: ProgressPoint, now: number) => {
      const { rate, eta } = pace(p, t0, now);
      process.stderr.write(JSON.stringify({ type: 'progress', operation: label, ...p, rate: Math.round(rate), ...(eta !== undefined ? { eta } : {}) }) + '\n');
      pending = null;
    };
    return {
      shown: true,
      update(p) {
        const now = Date.now();
        pending = point(p);
        if (now - last < 500) return;
        last = now;
        write(pending, now);
      },
      stop() {
        if (pending) write(pending, Date.now());
      },
    };
  }
  // A terminal that reports 0 columns (a pty nobody sized: script(1) under CI) would send ora
  // into an endless line-clearing loop, hanging the command: no spinner there.
  if (!process.stderr.isTTY || !process.stderr.columns) return { shown: false, update() {}, stop() {} };
  const { default: ora } = await import('ora');
  const spinner = ora({ text: label, stream: process.stderr }).start();
  setLiveSpinner(spinner);
  let stopped = false;
  return {
    shown: true,
    update(p) {
      const now = Date.now();
      if (stopped || now - last < 100) return;
      last = now;
      spinner.text = progressLine(label, point(p), t0, now);
      spinner.render(); // now, not at the next frame: a short run still shows where it got to
    },
    stop() {
      if (stopped) return;
      stopped = true;
      setLiveSpinner(null);
      spinner.stop();
    },
  };
}
