// Key slots whose X25519 share is a low-order or non-canonical point. Anyone can write one into
// any archive's header (the header is not secret and the share is not covered by anything a
// reader checks before the key exchange), so each must end in the documented exit code and one
// line: 5 when the slot is tagged for the key in use (a slot for it that does not open: damage),
// 4 when it is not (no slot for this key) — never exit 1. backupctl-format(5) KEY SLOTS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { recipientFromEntry } from '../../src/config.js';
import { recoveryRecipientEntry } from '../../src/keys/recovery-code.js';
import { generateX25519, recipientTag } from '../../src/keys/x25519.js';
import { b64encode } from '../../src/util/base64.js';
import { STACK_TRACE, exists, makeHome, newRecoveryCode, runCli, type CliResult, type RecoveryCode } from '../support/cli.js';
import { craftArchive, editedSlots } from '../support/craft.js';

let home: string;
let configDir: string;
let cleanup: () => Promise<void>;
let rc: RecoveryCode;

beforeAll(async () => {
  ({ home, configDir, cleanup } = await makeHome('backupctl-shares-'));
  rc = await newRecoveryCode(configDir, join(home, 'code.txt'));
});
afterAll(() => cleanup());

const P = (1n << 255n) - 19n;
const le = (n: bigint) => Buffer.from(Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn)));
const SHARES: Array<[string, Buffer]> = [
  ['zero', le(0n)],
  ['one', le(1n)],
  ['order-8-a', Buffer.from('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800', 'hex')],
  ['order-8-b', Buffer.from('5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157', 'hex')],
  ['p-1', le(P - 1n)],
  ['p', le(P)],
  ['p+1', le(P + 1n)],
];
const withTopBit = (b: Buffer) => Buffer.concat([b.subarray(0, 31), Buffer.from([b[31]! | 0x80])]);

/** An archive whose one recovery slot has `share`, and (unless `foreignTag`) this code's tag. */
function craft(name: string, share: Buffer, foreignTag = false): Promise<string> {
  const otherTag = b64encode(recipientTag('recovery', generateX25519().publicKey));
  const recipient = editedSlots(recipientFromEntry(recoveryRecipientEntry(rc.code, 'crafted')), (s) =>
    ({ ...s, share: b64encode(share), ...(foreignTag ? { tag: otherTag } : {}) }));
  return craftArchive(join(home, `${name}.bctl`), [recipient], [{ path: 'a.txt' }]);
}

const unlockWithCode = (args: string[]) => runCli([...args, '--recovery-code-file', rc.file], { configDir });

function expectOneLine(r: CliResult, exit: number, line: string) {
  expect(r.exitCode, r.stderr).toBe(exit);
  expect(r.stderr).toBe(`backupctl: ${line}\n`);
  expect(r.stderr).not.toMatch(STACK_TRACE);
  expect(r.stdout).toBe('');
}

const DAMAGED = 'the key slot "crafted" is for this recovery code but does not open: the archive header was damaged or tampered with';
const NOT_FOR_IT = "this recovery code does not open this archive (it is well-formed, but none of the archive's slots is for it)";

describe('a recovery slot with a low-order or non-canonical share', () => {
  it.each(SHARES)('%s, tagged for this code: verify exits 5 (damaged), in one line', async (name, share) => {
    const [plain, high] = await Promise.all([craft(name, share), craft(`${name}-high`, withTopBit(share))]);
    const [a, b] = await Promise.all([unlockWithCode(['verify', plain]), unlockWithCode(['verify', high])]);
    expectOneLine(a, 5, DAMAGED);
    expectOneLine(b, 5, DAMAGED);
  });

  it.each(SHARES)('%s, tagged for another key: verify exits 4 (no slot for this code), in one line', async (name, share) => {
    expectOneLine(await unlockWithCode(['verify', await craft(`${name}-foreign`, share, true)]), 4, NOT_FOR_IT);
  });

  it('restore (from a file and from stdin) and inspect --list end the same way; restore leaves no DIR', async () => {
    const file = await craft('restore-zero', SHARES[0]![1]);
    const dest = join(home, 'dest');
    const [r, s, i] = await Promise.all([
      unlockWithCode(['restore', file, '-d', dest]),
      runCli(['restore', '-', '-d', dest, '--recovery-code-file', rc.file], { configDir, inputFile: file }),
      unlockWithCode(['inspect', '--list', file]),
    ]);
    for (const x of [r, s, i]) expectOneLine(x, 5, DAMAGED);
    expect(await exists(dest)).toBe(false);
    // Without a key, inspect shows the slot as it is: nothing is computed from the share.
    const plain = await runCli(['inspect', file], { configDir });
    expect(plain.exitCode, plain.stderr).toBe(0);
    expect(plain.stdout).toContain('"crafted"');
  });

  it('the same archive with a good share opens (the control)', async () => {
    const file = await craftArchive(join(home, 'good.bctl'), [recipientFromEntry(recoveryRecipientEntry(rc.code, 'crafted'))], [{ path: 'a.txt' }]);
    const r = await unlockWithCode(['verify', file]);
    expect(r.exitCode, r.stderr).toBe(0);
  });
});

describe('a recipient whose public key is a low-order point', () => {
  it.each(SHARES)('%s in a --recipients-file: create refuses it (exit 2, one line) and writes nothing', async (name, key) => {
    const list = join(home, `recipients-${name}.json`);
    await writeFile(list, JSON.stringify({ recipients: [{ type: 'recovery', label: 'weak', publicKey: b64encode(key), created: '2026-01-01T00:00:00Z' }] }));
    const src = join(home, 'src');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'a.txt'), 'a\n');
    const out = join(home, `weak-${name}.bctl`);
    const r = await runCli(['create', src, '-o', out, '--recipients-file', list], { configDir });
    expectOneLine(r, 2, 'recipient "weak" has an invalid public key');
    expect(await exists(out)).toBe(false);
  });
});
