// Every command registers itself here: one import and one entry per command file.
import type { Command } from 'commander';
import { register as create } from './create.js';
import { register as inspect } from './inspect.js';
import { register as restore } from './restore.js';
import { register as verify } from './verify.js';
import { register as recoveryCode } from './recovery-code.js';
import { register as migrate } from './migrate.js';
import { register as rotate } from './rotate.js';
import { register as key } from './key.js';
import { register as doctor } from './doctor.js';
import { register as drive } from './drive.js';
import { register as push } from './push.js';
import { register as pull } from './pull.js';
import { register as completion } from './completion.js';
import { register as repo } from './repo.js';
import { register as backup } from './backup.js';
import { register as snapshots } from './snapshots.js';
import { register as prune } from './prune.js';
import { register as exportSnapshot } from './export.js';

export const commands: Array<(program: Command) => void> = [
  create,
  inspect,
  restore,
  verify,
  recoveryCode,
  migrate,
  rotate,
  key,
  doctor,
  push,
  pull,
  drive,
  completion,
  repo,
  backup,
  snapshots,
  prune,
  exportSnapshot,
];
