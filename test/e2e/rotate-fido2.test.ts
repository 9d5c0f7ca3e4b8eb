// rotate and migrate --remove-legacy with a security key, through the built CLI against the
// software authenticator (CTAPHID over UDP on loopback): a key enrolled after an archive was made
// is added to it, the archive is then unlocked by a key touch to remove the recovery code, and a
// migration's WhatsApp files are removed once the new archive opened with a touch.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { startAuthenticator, type RunningAuthenticator } from '../support/authenticator/server.js';
import { makeExportTree, makeHome, newRecoveryCode, onlyJson, runCli, snapshot, type RecoveryCode } from '../support/cli.js';
import { writeCrypt15 } from '../support/crypt15-writer.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let key: RunningAuthenticator;
let code: RecoveryCode;

const cli = (args: string[]) => runCli(args, { configDir, timeoutMs: 40_000 });
const slotLabels = (b: Buffer) => JSON.parse(b.subarray(14, 14 + b.readUInt32BE(10)).toString('utf8')).slots.map((s: { label: string }) => s.label);

beforeEach(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-rotate-fido2-'));
  key = await startAuthenticator();
  code = await newRecoveryCode(configDir, join(home, 'code.txt'), 'paper');
});
afterEach(async () => {
  await key.close().catch(() => {});
  await cleanup();
});

describe('rotate with a security key', () => {
  it('adds a key enrolled after the archive was made, then removes the code with a key touch', async () => {
    const src = join(home, 'export');
    await makeExportTree(src);
    const file = join(home, 'a.bkp');
    expect((await cli(['create', src, '-o', file])).exitCode).toBe(0);
    const enrol = await cli(['key', 'enroll', '--device', key.url, '--label', 'blue']);
    expect(enrol.exitCode, enrol.stderr).toBe(0);

    const add = await cli(['rotate', file, '--add-key', 'blue', '--recovery-code-file', code.file, '--json']);
    expect(add.exitCode, add.stderr).toBe(0);
    expect(onlyJson(add)).toMatchObject({ rekeyed: false, added: ['blue'] });
    const out = join(home, 'out-key');
    const byKey = await runCli(['restore', file, '-d', out, '--device', key.url], { configDir, timeoutMs: 40_000 });
    expect(byKey.exitCode, byKey.stderr).toBe(0);
    expect(await snapshot(out)).toEqual(await snapshot(src));

    // Unlocked by a touch (no code given): the last recovery code goes only with --force.
    const refused = await cli(['rotate', file, '--remove-key', 'paper', '--device', key.url]);
    expect(refused.exitCode).toBe(2);
    const touches = key.auth.log.length;
    const removed = await cli(['rotate', file, '--remove-key', 'paper', '--force', '--device', key.url, '--json']);
    expect(removed.exitCode, removed.stderr).toBe(0);
    expect(removed.stderr).toMatch(/touch your security key/);
    expect(key.auth.log.length).toBeGreaterThan(touches);
    expect(onlyJson(removed)).toMatchObject({ rekeyed: true, removed: ['paper'], slots: ['blue'] });
    expect(slotLabels(await readFile(file))).toEqual(['blue']);
    const byCode = await cli(['restore', file, '-d', join(home, 'out-code'), '--recovery-code-file', code.file]);
    expect(byCode.exitCode).toBe(4);
    const again = await cli(['restore', file, '-d', join(home, 'out-key2'), '--device', key.url]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(await snapshot(join(home, 'out-key2'))).toEqual(await snapshot(src));
  });
});

describe('migrate --remove-legacy with a security key', () => {
  it('removes the .crypt15 only after the new archive opened with a key touch', async () => {
    const enrol = await cli(['key', 'enroll', '--device', key.url, '--label', 'blue']);
    expect(enrol.exitCode, enrol.stderr).toBe(0);
    const rootKey = randomBytes(32);
    const db = Buffer.from('SQLite format 3\0'.padEnd(50_000, 'x'));
    const legacy = join(home, 'WhatsApp/Databases/msgstore.db.crypt15');
    await writeCrypt15(legacy, db, { rootKey });
    const keyFile = join(home, 'wa.key');
    await writeFile(keyFile, rootKey.toString('hex'), { mode: 0o600 });
    const out = join(home, 'wa.bkp');
    const r = await cli(['migrate-from-64-digit-key', join(home, 'WhatsApp'), '-o', out, '--key-file', keyFile, '--remove-legacy', '--device', key.url, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/touch your security key/);
    expect(onlyJson<{ removedLegacy: string[] }>(r).removedLegacy).toEqual([legacy]);
    expect(existsSync(legacy)).toBe(false);
    const dest = join(home, 'restored');
    expect((await cli(['restore', out, '-d', dest, '--recovery-code-file', code.file])).exitCode).toBe(0);
    expect((await readFile(join(dest, 'Databases/msgstore.db'))).equals(db)).toBe(true);
  });
});
