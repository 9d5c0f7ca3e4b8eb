// What a valid config.json holds, checked whenever it is loaded (every command and doctor share
// this): a damaged or hand-edited entry is one clear line naming it, never a failure deep inside
// create. Settings other modules keep at the top level are left to them.
import { BackupctlError, Exit } from './errors.js';
import { b64decode } from './util/base64.js';
import { FIDO2_SLOT_TYPE } from './keys/fido2-slot.js';
import { RECOVERY_SLOT_TYPE } from './keys/recovery-code.js';
import { termSafe } from './util/terminal-text.js';
import type { Config } from './config.js';
import { MAX_LABEL, isValidLabel } from './keys/label.js';

/** Recovery codes replaced by newer ones (public keys only, with the date they were retired). */
export const RETIRED = 'retiredRecoveryCodes';


/** Labels are written in clear into every archive header: null if `l` is one short line of visible text, else what it must be. */
export function labelProblem(l: string): string | null {
  return isValidLabel(l) ? null : `1 to ${MAX_LABEL} visible characters on one line`;
}

const ENTRY_FIELDS = new Set(['type', 'label', 'publicKey', 'created', 'params']);
const TYPES = [RECOVERY_SLOT_TYPE, FIDO2_SLOT_TYPE];

/** Why `e` is not a valid recipient entry, or null. */
function entryProblem(e: unknown, retired: boolean): string | null {
  if (typeof e !== 'object' || e === null || Array.isArray(e)) return 'is not an object';
  const r = e as Record<string, unknown>;
  const unknown = Object.keys(r).filter((k) => !ENTRY_FIELDS.has(k) && !(retired && k === 'retired'));
  if (unknown.length) return `has unknown field${unknown.length > 1 ? 's' : ''} ${unknown.map((k) => JSON.stringify(k)).join(', ')}`;
  if (typeof r.type !== 'string' || !TYPES.includes(r.type)) return `has type ${JSON.stringify(r.type)} (expected ${TYPES.map((t) => `"${t}"`).join(' or ')})`;
  if (typeof r.label !== 'string') return 'has no label';
  const bad = labelProblem(r.label);
  if (bad) return `has a label that is not ${bad}`;
  let key: Uint8Array | null = null;
  try {
    key = b64decode(r.publicKey as string);
  } catch {
    /* reported below */
  }
  if (key?.length !== 32) return 'has a publicKey that is not a base64 X25519 public key (32 bytes)';
  if (typeof r.created !== 'string' || Number.isNaN(Date.parse(r.created))) return 'has no valid "created" date';
  if (r.params !== undefined && (typeof r.params !== 'object' || r.params === null || Array.isArray(r.params))) return 'has params that are not an object';
  if (r.type === RECOVERY_SLOT_TYPE && r.params !== undefined) return 'is a recovery code with params (it has none)';
  if (r.type === FIDO2_SLOT_TYPE && r.params === undefined) return 'is a security key without params';
  if (retired && (typeof r.retired !== 'string' || Number.isNaN(Date.parse(r.retired)))) return 'has no valid "retired" date';
  return null;
}

/** `parsed` as a Config, or exit 6 with one line naming the first bad entry of `path`. */
export function checkConfig(parsed: unknown, path: string): Config {
  const bad = (why: string) => new BackupctlError(Exit.io, `${path}: ${why}; repair it (or restore a copy)`);
  const cfg = parsed as Config;
  if (typeof cfg !== 'object' || cfg === null || cfg.version !== 1 || !Array.isArray(cfg.recipients)) {
    throw new BackupctlError(Exit.io, `${path} is not a backupctl version 1 config`);
  }
  const lists: Array<[string, unknown]> = [['recipients', cfg.recipients], [RETIRED, cfg[RETIRED]]];
  for (const [name, list] of lists) {
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw bad(`${name} is not a list`);
    list.forEach((e, i) => {
      const why = entryProblem(e, name === RETIRED);
      if (why) {
        const label = typeof (e as { label?: unknown })?.label === 'string' ? ` ("${termSafe((e as { label: string }).label.slice(0, MAX_LABEL))}")` : '';
        throw bad(`${name} entry ${i + 1}${label} ${why}`);
      }
    });
  }
  const seen = new Set<string>();
  for (const r of cfg.recipients) {
    if (seen.has(r.label)) throw bad(`two recipients are labelled "${termSafe(r.label)}"; labels name them in commands, so each must be unique`);
    seen.add(r.label);
  }
  return cfg;
}
