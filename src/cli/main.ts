// backupctl's command line: commander parses, each command file registers itself. Heavy
// modules (googleapis, node-hid) are imported inside actions only, so startup stays fast.
import { Command, CommanderError, type Option } from 'commander';
import { readFileSync } from 'node:fs';
import v8 from 'node:v8';
import { Exit } from '../errors.js';
import { exitFlushed, handleError, quietStatus, reportFailure } from './run.js';
import { carriesData } from '../util/stdout-data.js';
import { ioError, usageError } from '../errors.js';
import { commands } from './commands/index.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

export async function main(argv: string[]): Promise<void> {
  // Keep V8's young generation at its starting size instead of letting it grow to 16 MB per
  // semi-space under the steady churn of a long archive run: measured, peak RSS on 4 GB went from
  // 190 to 127 MB (create) and 255 to ~180 MB (restore), at no measurable cost in time. V8 reads
  // this flag each time it considers growing, so setting it here, after start-up, takes effect.
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  // And collect the old generation once it has grown by 30% since the last collection, not by up
  // to 4 times: a backup of 100,000 small files keeps 15-20 MB alive but its old generation grew
  // to 40 MB of mostly garbage between collections (peak RSS 230 -> 200 MB first, 138 -> 115 MB
  // with nothing changed); each collection of so small a heap takes a few ms.
  v8.setFlagsFromString('--heap-growing-percent=30');
  // A listing whose reader went away (| head) ends quietly, with the status the command has
  // already reached (verify --against: 3); any other failure to write it (a full disk) is exit 6.
  // An archive streamed to stdout reports its own failures (DataOutput).
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (carriesData(process.stdout)) return;
    void (e.code === 'EPIPE' ? exitFlushed(quietStatus()) : handleError(ioError(e, 'standard output', 'write')));
  });
  const program = new Command('backupctl')
    .description('Encrypted, chunked backups of chat exports, unlocked by a FIDO2 security key or a recovery code')
    .version(pkg.version, '-V, --version')
    .option('--json', 'print one JSON result object on stdout (progress as JSON lines on stderr)')
    .showHelpAfterError('(run backupctl --help for usage)')
    // Every command's --help then lists --json (and --version) under "Global Options".
    .configureHelp({ showGlobalOptions: true })
    .exitOverride();
  // With --json, stderr carries only JSON lines: commander's own line is replaced by
  // reportFailure's below.
  const json = argv.includes('--json');
  program.configureOutput({
    writeErr: (s) => json || process.stderr.write(s.startsWith('error:') ? `backupctl: ${withHints(s.slice(7))}` : s),
  });
  for (const register of commands) register(program);
  refuseContradictions(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.exitCode === 0 || err.code === 'commander.helpDisplayed' || err.code === 'commander.version') process.exit(0);
      // Without --json commander already printed its line on stderr.
      if (json) reportFailure(Exit.usage, withHints(err.message.replace(/^error: /, '')), true);
      await exitFlushed(Exit.usage);
    }
    await handleError(err instanceof Error ? err : usageError(String(err)));
  }
}

// Drive file ids are base64url, so one may start with '-', and commander then takes it for an
// option. Say how to pass it instead of only "unknown option". And restic, borg and tar users
// try `tree`, `dir`, `cat`...: point to the listing under the name it has.
function withHints(message: string): string {
  const cmd = /^unknown command '([^']*)'/.exec(message)?.[1];
  if (cmd !== undefined) return message.replace(`'${cmd}'`, `'${cmd}'; to list an archive's entries: backupctl ls FILE`);
  const id = /^unknown option '(-[\w-]{19,})'/.exec(message)?.[1];
  return id ? message.replace(`'${id}'`, `'${id}'; if that is a Drive file id, put -- before it: ... -- ${id}`) : message;
}

/**
 * `--x` and `--no-x` on one command line (rotate --rekey --no-rekey): commander lets the last one
 * win without a word; refuse it as a usage error instead, on every command that has such a pair.
 */
function refuseContradictions(cmd: Command): void {
  for (const sub of cmd.commands) refuseContradictions(sub);
  const options = cmd.options as readonly Option[];
  for (const no of options.filter((o) => o.negate)) {
    const yes = options.find((o) => !o.negate && o.attributeName() === no.attributeName());
    if (!yes) continue;
    const given = new Set<string>();
    cmd.on(`option:${yes.name()}`, () => given.add(yes.long!));
    cmd.on(`option:${no.name()}`, () => given.add(no.long!));
    cmd.hook('preAction', () => {
      if (given.size === 2) cmd.error(`error: ${yes.long} and ${no.long} contradict each other: give one of them`, { exitCode: Exit.usage, code: 'backupctl.contradiction' });
    });
  }
}
