// The real node-hid binding must load (libusb-1.0 present: .ci/run installs it) so a broken
// install is caught here rather than by a user with a key in hand; and its failure message
// must say exactly what to install.
import { describe, expect, it } from 'vitest';
import { hidLoadError, listHidDevices, loadNodeHid } from '../../src/fido2/transport/hid.js';
import { Exit } from '../../src/errors.js';

describe('node-hid', () => {
  it('loads its native binding and enumerates devices', async () => {
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
