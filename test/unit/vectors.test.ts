// The format test vectors (fixtures/vectors, made by test/vectors/generate.mjs): each archive
// must give exactly its expected class of result through the built CLI, and regenerating the
// deterministic ones must give the same bytes.
import { describe, expect, it, beforeAll } from 'vitest';
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, lstatSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const root = new URL('../../', import.meta.url).pathname;
const dir = join(root, 'fixtures/vectors');
const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as {
  codes: Record<string, string>;
  vectors: Array<{ name: string; expect: string; exit: number; code: string; deterministic?: boolean; sha256: string; entries?: Array<{ path: string; type: string; sha256?: string; target?: string }> }>;
};

const classMessage: Record<string, RegExp> = {
  'no match': /recovery code does not open this archive/,
  'header failure': /header/,
  'unsupported version': /unsupported archive format version 2\.0/,
  'not an archive': /not a backupctl archive/,
  'payload failure': /segment|payload|truncated/,
  'unsafe entry': /refusing to restore entry/,
};

const tmp = mkdtempSync(join(tmpdir(), 'bctl-vectors-'));
const codeFile = (c: string) => {
  const p = join(tmp, `code-${c}`);
  writeFileSync(p, manifest.codes[c]! + '\n', { mode: 0o600 });
  return p;
};
const cli = (args: string[]) =>
  execa('node', [join(root, 'bin/backupctl.js'), ...args], { reject: false, input: '', env: { BACKUPCTL_CONFIG_DIR: join(tmp, 'cfg') }, timeout: 30_000 });

describe('format test vectors', () => {
  for (const v of manifest.vectors) {
    it(`${v.name}: ${v.expect}`, async () => {
      const file = join(dir, v.name);
      expect(createHash('sha256').update(readFileSync(file)).digest('hex')).toBe(v.sha256);
      for (const cmd of ['verify', 'restore']) {
        const out = join(tmp, `${v.name}-${cmd}`);
        const args = cmd === 'verify' ? ['verify', file] : ['restore', file, '-d', out];
        const r = await cli([...args, '--recovery-code-file', codeFile(v.code)]);
        expect(r.exitCode, `${cmd}: ${r.stderr}`).toBe(v.exit);
        expect(r.stderr).not.toMatch(/\n\s+at /);
        if (v.exit !== 0) {
          expect(r.stderr).toMatch(classMessage[v.expect]!);
          expect(r.stderr.trim().split('\n')).toHaveLength(1);
          if (cmd === 'restore') expect(() => lstatSync(out)).toThrow(); // DIR did not exist: still does not
        } else if (cmd === 'restore') {
          for (const e of v.entries!) {
            const p = join(out, e.path);
            const st = lstatSync(p);
            expect(st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'file', e.path).toBe(e.type);
            if (e.type === 'file') expect(createHash('sha256').update(readFileSync(p)).digest('hex'), e.path).toBe(e.sha256);
            if (e.type === 'symlink') expect(readlinkSync(p)).toBe(e.target);
          }
          expect(readdirSync(out).sort()).toEqual([...new Set(v.entries!.map((e) => e.path.split('/')[0]))].sort());
        }
      }
    });
  }

  describe('regeneration', () => {
    const regen = join(tmp, 'regen');
    beforeAll(async () => {
      await execa('node', [join(root, 'test/vectors/generate.mjs'), regen]);
    });
    for (const v of manifest.vectors.filter((x) => x.deterministic)) {
      it(`${v.name} is reproduced byte for byte`, () => {
        expect(readFileSync(join(regen, v.name)).equals(readFileSync(join(dir, v.name)))).toBe(true);
      });
    }
  });
});
