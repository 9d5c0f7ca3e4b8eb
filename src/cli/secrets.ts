// Every secret the CLI needs (recovery code, PIN, legacy key) comes in through readSecret, so the
// rules are the same everywhere: a file option first, then an environment variable, then a hidden
// prompt on a terminal (stdin's, or the controlling one when stdin is a pipe) — never argv
// (visible in `ps` and shell history), and never a prompt when nobody can answer it (cron), which
// would hang.
import { open } from 'node:fs/promises';
import { constants } from 'node:fs';
import { BackupctlError, Exit, InterruptedError, ioError } from '../errors.js';
import { parseRecoveryCode } from '../keys/recovery-code.js';
import { warn } from './run.js';
import { promptStreams, withoutSpinner, type PromptStreams } from './terminal.js';

export interface SecretSource {
  /** What is asked for, in words: "recovery code", "PIN", "64-digit key". */
  what: string;
  /** Name of the environment variable that may hold it, e.g. "BACKUPCTL_RECOVERY_CODE". */
  env?: string;
  /** Path given with the file option (undefined when the option was not used). */
  file?: string;
  /** The file option's name for messages; defaults to `--<what with dashes>-file`. */
  fileFlag?: string;
  /** Prompt text; defaults to "<What>:". */
  prompt?: string;
  /** Aborts a pending prompt (Ctrl-C handling of the command). */
  signal?: AbortSignal;
  /**
   * At the prompt only: true, or a message shown under the input, which is kept for the user
   * to fix (Ctrl-T reveals it). Secrets from a file or the environment are checked by the caller.
   */
  validate?: (value: string) => true | string;
}

/** Secrets are short; a bigger file is a mistake (or /dev/zero) and must not be read whole. */
const MAX_SECRET_FILE = 64 * 1024;

const flagFor = (s: SecretSource) => s.fileFlag ?? `--${s.what.toLowerCase().replace(/[^a-z0-9]+/g, '-')}-file`;

/**
 * The raw bytes of a secret file (at most `max`), warning when others may read it. The caller
 * zeroes the buffer when done. Binary secrets (encrypted_backup.key) use this directly.
 */
export async function readSecretFileBytes(path: string, what: string, max = MAX_SECRET_FILE): Promise<Buffer> {
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY);
  } catch (err) {
    throw ioError(err, path, `read the ${what} from`);
  }
  const buf = Buffer.alloc(max + 1);
  try {
    const st = await fh.stat();
    // Checked on the open descriptor, not the path, so the answer is about the file we read.
    // Only regular files: a pipe (`<(pass show x)`) has no meaningful mode.
    if (st.isFile() && process.platform !== 'win32' && (st.mode & 0o044) !== 0) {
      warn(`${path} holding the ${what} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); run: chmod go-r ${path}`);
    }
    let len = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, len, buf.length - len, null);
      if (bytesRead === 0) break;
      len += bytesRead;
      if (len > max) throw new BackupctlError(Exit.usage, `${path} is too large to hold a ${what}`);
    }
    return Buffer.from(buf.subarray(0, len));
  } catch (err) {
    if (err instanceof BackupctlError) throw err;
    throw ioError(err, path, `read the ${what} from`);
  } finally {
    buf.fill(0);
    await fh.close();
  }
}

async function readSecretFile(path: string, s: SecretSource): Promise<string> {
  const bytes = await readSecretFileBytes(path, s.what);
  const text = bytes.toString('utf8').replace(/\r?\n$/, '');
  bytes.fill(0);
  if (text === '') throw new BackupctlError(Exit.usage, `${path} is empty: expected the ${s.what}`);
  return text;
}

async function promptHidden(s: SecretSource, term: PromptStreams): Promise<string> {
  const what = s.what.charAt(0).toUpperCase() + s.what.slice(1);
  try {
    const { password } = await import('@inquirer/prompts');
    return await withoutSpinner(() => password(
      { message: s.prompt ?? `${what}:`, mask: false, ...(s.validate ? { validate: s.validate } : {}) },
      // On stderr (or the terminal itself) so stdout stays clean for results (--json, -o -).
      { input: term.input, output: term.output, clearPromptOnDone: true, ...(s.signal ? { signal: s.signal } : {}) },
    ));
  } catch (err) {
    const name = (err as Error)?.name;
    if (name === 'ExitPromptError') throw new InterruptedError('interrupted (Ctrl-C)');
    if (name === 'AbortPromptError') throw s.signal?.reason ?? new InterruptedError();
    throw err;
  } finally {
    term.close();
  }
}

/**
 * Read a secret: from `file` (one trailing newline stripped), else from the `env` variable
 * (an empty value counts as unset), else a hidden prompt on the terminal (see terminal.ts).
 * Without one, fails with exit 2 naming both non-interactive ways to give it.
 */
export async function readSecret(s: SecretSource): Promise<string> {
  if (s.file !== undefined) return readSecretFile(s.file, s);
  const fromEnv = s.env ? process.env[s.env] : undefined;
  if (fromEnv) return fromEnv;
  const term = promptStreams();
  if (term) return promptHidden(s, term);
  const ways = s.env ? `${flagFor(s)} FILE or ${s.env}` : `${flagFor(s)} FILE`;
  throw new BackupctlError(Exit.usage, `no ${s.what} given and stdin is not a terminal: use ${ways}`);
}

/**
 * The recovery code, for every command that takes one: `--recovery-code-file FILE`, else
 * BACKUPCTL_RECOVERY_CODE, else a hidden prompt that names the group with a typo and lets the
 * user fix it before going on. The result is as typed: parse it with parseRecoveryCode.
 */
export function readRecoveryCode(file: string | undefined, signal?: AbortSignal): Promise<string> {
  return readSecret({
    what: 'recovery code',
    env: 'BACKUPCTL_RECOVERY_CODE',
    file,
    fileFlag: '--recovery-code-file',
    ...(signal ? { signal } : {}),
    validate: (value) => {
      try {
        parseRecoveryCode(value);
        return true;
      } catch (err) {
        return (err as Error).message;
      }
    },
  });
}
