// Drive a command in a pseudo-terminal (test/support/pty-driver.py, python3's pty module): what a user
// at a terminal sees, as text, at each prompt and at the end; and what they type.
import { execa } from 'execa';
import { fileURLToPath } from 'node:url';

const HELPER = fileURLToPath(new URL('./pty-driver.py', import.meta.url));

export interface PtyStep {
  /** A regular expression (Python syntax) to wait for on the screen. */
  expect: string;
  /** Typed once it is there ("\r" is Enter). */
  send: string;
  /** Seconds to wait after the match before the screen is recorded (default 0.6). */
  settle?: number;
}

export interface PtyResult {
  /** The screen at each step, once what it waited for had been there for its settle time. */
  screens: string[];
  final: string;
  exitCode: number;
  timedOut: boolean;
}

export async function runInPty(argv: string[], o: { env: Record<string, string>; cwd?: string; steps?: PtyStep[]; cols?: number; rows?: number; timeoutS?: number }): Promise<PtyResult> {
  const spec = { argv, env: { TERM: 'xterm-256color', ...o.env }, cwd: o.cwd, steps: o.steps ?? [], cols: o.cols ?? 100, rows: o.rows ?? 30, timeout: o.timeoutS ?? 30 };
  const r = await execa('python3', [HELPER, JSON.stringify(spec)], { reject: false, timeout: (spec.timeout + 10) * 1000, input: '' });
  if (r.exitCode !== 0) throw new Error(`pty helper failed (${r.exitCode}): ${r.stderr}`);
  return JSON.parse(String(r.stdout)) as PtyResult;
}
