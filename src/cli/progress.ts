// Progress for long operations: a spinner line on a terminal (ora), JSON lines on stderr with
// --json, nothing at all otherwise (cron mail stays clean).
import { isJson } from './run.js';

export interface Progress {
  update(p: { bytes: number; total?: number; entries?: number; path?: string }): void;
  stop(): void;
}

const mb = (n: number) => (n / 1e6).toFixed(1);

export async function startProgress(label: string): Promise<Progress> {
  const t0 = Date.now();
  let last = 0;
  const line = (p: { bytes: number; total?: number; entries?: number }) => {
    const secs = Math.max((Date.now() - t0) / 1000, 0.001);
    const rate = p.bytes / secs;
    const eta = p.total && rate > 0 ? ` · ETA ${Math.ceil((p.total - p.bytes) / rate)}s` : '';
    const of = p.total ? ` / ${mb(p.total)}` : '';
    const entries = p.entries !== undefined ? ` · ${p.entries} entries` : '';
    return { text: `${label}: ${mb(p.bytes)}${of} MB · ${mb(rate)} MB/s${entries}${eta}`, rate };
  };
  if (isJson()) {
    return {
      update(p) {
        const now = Date.now();
        if (now - last < 500) return;
        last = now;
        const secs = Math.max((now - t0) / 1000, 0.001);
        process.stderr.write(JSON.stringify({ type: 'progress', operation: label, ...p, rate: Math.round(p.bytes / secs) }) + '\n');
      },
      stop() {},
    };
  }
  // A terminal that reports 0 columns (a pty nobody sized: script(1) under CI) would send ora
  // into an endless line-clearing loop, hanging the command: no spinner there.
  if (!process.stderr.isTTY || !process.stderr.columns) return { update() {}, stop() {} };
  const { default: ora } = await import('ora');
  const spinner = ora({ text: label, stream: process.stderr }).start();
  return {
    update(p) {
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      spinner.text = line(p).text;
    },
    stop() {
      spinner.stop();
    },
  };
}
