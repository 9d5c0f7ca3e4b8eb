import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSecret } from '../../src/cli/secrets.js';
import { BackupctlError, Exit } from '../../src/errors.js';

const ENV = 'BACKUPCTL_TEST_SECRET';
let dir: string;
let stderr: string;

async function secretFile(name: string, content: string | Buffer, mode = 0o600): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, content, { mode });
  return path;
}

async function failure(p: Promise<unknown>): Promise<BackupctlError> {
  const err = await p.then(
    () => new Error('readSecret did not fail'),
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(BackupctlError);
  return err as BackupctlError;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'backupctl-secrets-'));
});
afterAll(() => rm(dir, { recursive: true, force: true }));
beforeEach(() => {
  stderr = '';
  delete process.env[ENV];
  // As under cron or in a pipe: nobody to prompt.
  Object.defineProperty(process.stdin, 'isTTY', { value: undefined, configurable: true });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
});
afterEach(() => {
  vi.restoreAllMocks();
  delete process.env[ENV];
});

describe('readSecret', () => {
  it('reads a file, stripping exactly one trailing newline', async () => {
    expect(await readSecret({ what: 'PIN', file: await secretFile('a', '1234\n') })).toBe('1234');
    expect(await readSecret({ what: 'PIN', file: await secretFile('b', '1234\r\n') })).toBe('1234');
    expect(await readSecret({ what: 'PIN', file: await secretFile('c', ' 12 34\n\n') })).toBe(' 12 34\n');
    expect(await readSecret({ what: 'PIN', file: await secretFile('d', 'no newline') })).toBe('no newline');
    expect(stderr).toBe('');
  });

  it('prefers the file to the environment variable, and uses the variable otherwise', async () => {
    process.env[ENV] = 'from env';
    const file = await secretFile('e', 'from file\n');
    expect(await readSecret({ what: 'PIN', env: ENV, file })).toBe('from file');
    expect(await readSecret({ what: 'PIN', env: ENV })).toBe('from env');
  });

  it('warns when the file is readable by group or others', async () => {
    const file = await secretFile('loose', 'secret\n', 0o644);
    expect(await readSecret({ what: 'recovery code', file })).toBe('secret');
    expect(stderr).toBe(
      `backupctl: warning: ${file} holding the recovery code is readable by group or others (mode 644); run: chmod go-r ${file}\n`,
    );
  });

  it('fails with an io error for a missing file, and a usage error for an empty or huge one', async () => {
    const missing = join(dir, 'missing');
    const e1 = await failure(readSecret({ what: 'recovery code', file: missing }));
    expect(e1.code).toBe(Exit.io);
    expect(e1.message).toBe(`cannot read the recovery code from ${missing}: no such file or directory`);

    const e2 = await failure(readSecret({ what: 'PIN', file: await secretFile('empty', '\n') }));
    expect(e2.code).toBe(Exit.usage);
    expect(e2.message).toContain('is empty');

    const e3 = await failure(readSecret({ what: 'PIN', file: await secretFile('huge', Buffer.alloc(70_000, 0x31)) }));
    expect(e3.code).toBe(Exit.usage);
    expect(e3.message).toContain('too large');
  });

  it('without file, variable or terminal, fails with exit 2 naming both ways to give it', async () => {
    process.env[ENV] = ''; // empty counts as unset
    const e = await failure(readSecret({ what: 'recovery code', env: ENV, fileFlag: '--recovery-code-file' }));
    expect(e.code).toBe(Exit.usage);
    expect(e.message).toBe(`no recovery code given and stdin is not a terminal: use --recovery-code-file FILE or ${ENV}`);
    const e2 = await failure(readSecret({ what: '64-digit key' }));
    expect(e2.message).toBe('no 64-digit key given and stdin is not a terminal: use --64-digit-key-file FILE');
  });
});
