// Every command registers itself here: one import and one entry per command file.
import type { Command } from 'commander';
import { register as recoveryCode } from './recovery-code.js';

export const commands: Array<(program: Command) => void> = [
  recoveryCode,
];
