// `backupctl completion bash|zsh|fish`: the completion script on stdout (see cli/completion.ts).
import { Argument, type Command } from 'commander';
import { action } from '../run.js';
import { bashCompletion, fishCompletion, zshCompletion } from '../completion.js';

const SHELLS = { bash: bashCompletion, zsh: zshCompletion, fish: fishCompletion };

export function register(program: Command): void {
  program
    .command('completion')
    .description('print the shell completion script for bash, zsh or fish (see README "Shell completion")')
    .addArgument(new Argument('<shell>', 'the shell').choices(Object.keys(SHELLS)))
    .action(action(async (_ctx, shell: keyof typeof SHELLS) => void process.stdout.write(SHELLS[shell](program))));
}
