// The one wrapper every command action goes through: turns errors into one stderr line (with
// --json: one JSON line on stderr and one JSON object on stdout) and the documented exit code,
// and turns Ctrl-C / SIGTERM into an AbortSignal so lower layers clean up (temp files, staging
// dirs) before exit 130. Human-readable messages carry untrusted text (labels, paths, server
// messages), so they reach the terminal through termSafe; JSON keeps the exact strings.
import { BackupctlError, Exit, exitName, type ExitCode } from '../errors.js';
import { writeAboveSpinner } from './terminal.js';
import { termSafe } from '../util/terminal-text.js';

export interface RunContext {
  json: boolean;
  /** Aborted on SIGINT / SIGTERM; long operations must watch it and clean up. */
  signal: AbortSignal;
}

let jsonMode = false;
export const isJson = () => jsonMode;

/** Print the result object (JSON mode) — human output is printed by the command itself. */
export function emitJson(obj: unknown): void {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

/** A warning line on stderr (or a JSON line on stderr in --json mode). */
export function warn(message: string): void {
  if (jsonMode) process.stderr.write(JSON.stringify({ type: 'warning', message }) + '\n');
  else writeAboveSpinner(`backupctl: warning: ${termSafe(message)}\n`);
}

/** Human-readable output on stdout, one line each, made terminal-safe (an embedded newline is shown as \n). */
export function print(...lines: string[]): void {
  process.stdout.write(lines.map((l) => `${termSafe(l)}\n`).join(''));
}

/** One line of tab-separated fields on stdout, each made terminal-safe (the tabs stay tabs). */
export function printFields(...fields: string[]): void {
  process.stdout.write(`${fields.map(termSafe).join('\t')}\n`);
}

export function info(message: string): void {
  if (jsonMode) process.stderr.write(JSON.stringify({ type: 'info', message }) + '\n');
  else writeAboveSpinner(`${termSafe(message)}\n`);
}

/**
 * Exit with `code` once what was written to stdout and stderr has left the process: on a pipe
 * they are asynchronous, and process.exit drops what is still queued (the tail of an archive
 * streamed with `-o -`, the --json error object after it). A reader that stopped reading gets 2 s.
 */
export function exitFlushed(code: ExitCode): Promise<never> {
  process.exitCode = code;
  const pending = [process.stdout, process.stderr].filter((s) => s.writableLength > 0);
  if (pending.length === 0) process.exit(code);
  let left = pending.length;
  for (const s of pending) s.write('', () => --left || process.exit(code));
  setTimeout(() => process.exit(code), 2000);
  return new Promise<never>(() => {});
}

/** The status a listing cut short by its reader (| head) ends with: what the command has already decided, else 0. */
export const quietStatus = (): ExitCode => (process.exitCode ?? Exit.ok) as ExitCode;

/**
 * Report a failure: one line on stderr, "backupctl: ..." (made terminal-safe); with --json the
 * line is a JSON line like every other line on stderr then, and the failure object that --json
 * promises goes to stdout.
 */
export function reportFailure(code: ExitCode, message: string, json: boolean, detail?: Record<string, unknown>): void {
  const line = message.replace(/\s*\n\s*/g, ' ');
  if (!json) {
    process.stderr.write(`backupctl: ${termSafe(line)}\n`);
    return;
  }
  const error = { exitCode: code, kind: exitName[code], message: line };
  process.stderr.write(JSON.stringify({ type: 'error', ...error }) + '\n');
  emitJson({ ok: false, error: { ...error, ...(detail ?? {}) } });
}

function fail(code: ExitCode, message: string, detail?: Record<string, unknown>): Promise<never> {
  reportFailure(code, message, jsonMode, detail);
  return exitFlushed(code);
}

export function handleError(err: unknown): Promise<never> {
  if (err instanceof BackupctlError) return fail(err.code, err.message, err.detail);
  const e = err as NodeJS.ErrnoException;
  if (e?.code === 'EPIPE') return exitFlushed(quietStatus()); // a listing's reader went away (| head): end quietly
  if (process.env.BACKUPCTL_DEBUG) process.stderr.write(`${e?.stack ?? String(err)}\n`);
  return fail(Exit.internal, `internal error: ${e?.message ?? String(err)} (set BACKUPCTL_DEBUG=1 for details; please report this)`);
}

/**
 * Wrap a command action. `fn` returns the exit code (0 or 3 for partial success).
 * The JSON flag is read from the command's options (every command has --json).
 */
export function action<A extends unknown[]>(fn: (ctx: RunContext, ...args: A) => Promise<ExitCode | void>) {
  return async (...args: A) => {
    const cmd = args[args.length - 1] as { optsWithGlobals?: () => Record<string, unknown> };
    const opts = cmd?.optsWithGlobals?.() ?? {};
    jsonMode = Boolean(opts.json);
    const ac = new AbortController();
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      signals++;
      if (signals > 1) process.exit(Exit.interrupted); // second Ctrl-C: cleanup already ran or is stuck
      ac.abort(new BackupctlError(Exit.interrupted, sig === 'SIGINT' ? 'interrupted (Ctrl-C)' : `interrupted (${sig})`));
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    process.on('SIGHUP', onSignal);
    try {
      const code = (await fn({ json: jsonMode, signal: ac.signal }, ...args)) ?? Exit.ok;
      process.exitCode = code;
    } catch (err) {
      await handleError(ac.signal.aborted ? ac.signal.reason : err);
    }
  };
}
