// Names that differ only in case or Unicode normalisation are distinct on Linux: create stores
// them all and warns once (macOS and Windows could not hold both), and restore, having probed
// the target (this machine's ext4 or tmpfs keeps them apart), gives them all back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { makeHome, newRecoveryCode, onlyJson, runCli, snapshot, writeTree, type RecoveryCode, type TreeSpec } from '../support/cli.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;

const NFC = 'Caf\u00e9.txt';
const NFD = 'Cafe\u0301.txt';
const file = (s: string) => ({ type: 'file' as const, mode: 0o644, data: Buffer.from(s) });
const SPEC: TreeSpec = {
  'A.txt': file('upper\n'),
  'a.txt': file('lower\n'),
  [NFC]: file('composed\n'),
  [NFD]: file('decomposed\n'),
  'Photos': { type: 'dir', mode: 0o755 },
  'Photos/1.jpg': file('one\n'),
  'photos': { type: 'dir', mode: 0o700 },
  'photos/1.jpg': file('uno\n'),
  'photos/link': { type: 'symlink', target: '../A.txt' },
  'Photos/LINK': { type: 'symlink', target: '../a.txt' },
  'plain.txt': file('no twin\n'),
};

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-restore-names-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
  await writeTree(join(home, 'src'), SPEC);
});
afterAll(() => cleanup());

describe('names that differ only in case or normal form', () => {
  it('create warns once, exit 0; restore gives every one back byte-identical, from a file and from stdin', async () => {
    const archive = join(home, 'names.bkp');
    const c = await runCli(['create', join(home, 'src'), '-o', archive], { configDir });
    expect(c.exitCode, c.stderr).toBe(0);
    const warnings = c.stderr.split('\n').filter((l) => l.startsWith('backupctl: warning:'));
    // Pairs: A.txt/a.txt and Café NFC/NFD at the top, Photos/photos; LINK/link are in different directories.
    expect(warnings).toEqual([
      `backupctl: warning: 3 names differ from another in the same directory only in case or Unicode normalisation (first: "Cafe\\u0301.txt" and "Caf\\u00e9.txt"): ` +
        'all are archived and restore here, but a file system that ignores case or normalisation (macOS, Windows) cannot hold both, and restore refuses the archive there',
    ]);
    const want = await snapshot(join(home, 'src'));
    expect(Object.keys(want)).toHaveLength(Object.keys(SPEC).length);
    for (const [how, args, opts] of [
      ['file', ['restore', archive], {}],
      ['stdin', ['restore', '-'], { inputFile: archive }],
    ] as const) {
      const dest = join(home, `dest-${how}`);
      const r = await runCli([...args, '-d', dest, '--recovery-code-file', rc.file], { configDir, ...opts });
      expect(r.exitCode, `${how}: ${r.stderr}`).toBe(0);
      expect(await snapshot(dest), how).toEqual(want);
    }
  });

  it('--json: the warning is in the result and on stderr as a JSON line', async () => {
    const r = await runCli(['create', join(home, 'src'), '-o', join(home, 'names-json.bkp'), '--json'], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    const res = onlyJson<{ warnings: string[] }>(r);
    expect(res.warnings).toHaveLength(1);
    expect(res.warnings[0]).toMatch(/^3 names differ from another in the same directory only in case/);
    expect(r.stderr.split('\n').filter((l) => l.includes('"warning"'))).toHaveLength(1);
  });

  it('no warning for an export without such names', async () => {
    const r = await runCli(['create', join(home, 'src', 'Photos'), '-o', join(home, 'photos.bkp')], { configDir });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/warning/);
  });
});
