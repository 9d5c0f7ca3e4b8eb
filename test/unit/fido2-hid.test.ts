// The real node-hid binding must load so a broken install is caught here rather than by a user
// with a key in hand; and its failure message must say exactly what to install. On a machine
// without libusb-1.0 (a fresh one) the binding test is skipped, loudly and with the install
// command; .ci/run installs libusb and sets BACKUPCTL_REQUIRE_HID=1, so in CI it always runs.
import { describe, expect, it } from 'vitest';
import { hidLoadError, listHidDevices, loadNodeHid } from '../../src/fido2/transport/hid.js';
import { Exit } from '../../src/errors.js';

const loadFailure = await loadNodeHid().then(() => null, (e: Error) => e);
const missingLibusb = loadFailure && /libusb/i.test(loadFailure.message) && !process.env.BACKUPCTL_REQUIRE_HID ? loadFailure : null;
const SKIP_NOTE = 'libusb-1.0 is not installed, so the native HID binding cannot load; install it (Debian/Ubuntu: apt-get install libusb-1.0-0; Fedora: dnf install libusb1) to run this test';
if (missingLibusb) process.stderr.write(`\n*** SKIPPED test/unit/fido2-hid.test.ts "loads its native binding": ${SKIP_NOTE}\n\n`);

describe('node-hid', () => {
  it('loads its native binding and enumerates devices', async (ctx) => {
    if (missingLibusb) ctx.skip(SKIP_NOTE);
    const hid = await import('node-hid');
    const devices = (hid.default ?? hid).devices();
    expect(Array.isArray(devices)).toBe(true);
    await expect(loadNodeHid()).resolves.toBeDefined();
    const fido = await listHidDevices();
    expect(Array.isArray(fido)).toBe(true);
    for (const d of fido) expect(d.path).toBeTruthy();
  });

  it('turns a missing libusb into one line naming the package to install (exit 7)', () => {
    const e = hidLoadError(new Error('libusb-1.0.so.0: cannot open shared object file: No such file or directory'));
    expect(e.code).toBe(Exit.unavailable);
    expect(e.message).toMatch(/libusb-1\.0 library .*apt-get install libusb-1\.0-0.*recovery code/);
    expect(e.message).not.toMatch(/\n/);
  });
});
