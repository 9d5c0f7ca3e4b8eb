// USB HID through node-hid, loaded only when a key is actually needed (it is a native module).
// FIDO devices are found by their HID usage page 0xF1D0, usage 0x01 (CTAP 2.1 §11.2.8.1).
import { BackupctlError, Exit } from '../../errors.js';
import { REPORT_SIZE, type Transport } from './types.js';

type NodeHid = typeof import('node-hid');

export const FIDO_USAGE_PAGE = 0xf1d0;
export const FIDO_USAGE = 0x01;

export interface HidDeviceInfo {
  path: string;
  product: string;
  manufacturer: string;
  vendorId: number;
  productId: number;
}

let loaded: NodeHid | null = null;

/**
 * Load node-hid and its native binding, turning a load failure into one actionable line: on
 * Linux the prebuilt binding needs the libusb-1.0 shared library even for hidraw.
 */
export async function loadNodeHid(): Promise<NodeHid> {
  if (loaded) return loaded;
  try {
    const mod = (await import('node-hid')) as NodeHid & { default?: NodeHid };
    const hid = mod.default ?? mod;
    await hid.devicesAsync(); // the binding loads lazily: force it here so failures surface now
    loaded = hid;
    return hid;
  } catch (e) {
    throw hidLoadError(e);
  }
}

export function hidLoadError(e: unknown): BackupctlError {
  const msg = (e as Error)?.message ?? String(e);
  if (/libusb/i.test(msg)) {
    return new BackupctlError(
      Exit.unavailable,
      `cannot use USB security keys: node-hid's native binding needs the libusb-1.0 library (${msg.split('\n')[0]}); install it (Debian/Ubuntu: apt-get install libusb-1.0-0; Fedora: dnf install libusb1), or unlock with your recovery code`,
    );
  }
  return new BackupctlError(Exit.unavailable, `cannot use USB security keys: node-hid's native binding failed to load (${msg.split('\n')[0]}); reinstall backupctl, or unlock with your recovery code`);
}

/** FIDO2 devices currently plugged in. */
export async function listHidDevices(): Promise<HidDeviceInfo[]> {
  const hid = await loadNodeHid();
  const all = await hid.devicesAsync();
  return all
    .filter((d) => d.usagePage === FIDO_USAGE_PAGE && d.usage === FIDO_USAGE && d.path)
    .map((d) => ({
      path: d.path!,
      product: d.product ?? 'unknown product',
      manufacturer: d.manufacturer ?? 'unknown maker',
      vendorId: d.vendorId,
      productId: d.productId,
    }));
}

class HidTransport implements Transport {
  readonly simulated = false;
  constructor(
    private readonly dev: Awaited<ReturnType<NodeHid['HIDAsync']['open']>>,
    readonly description: string,
  ) {}

  async send(report: Uint8Array): Promise<void> {
    // hidapi takes the report ID first; FIDO uses none, so every write starts with 0x00
    // (without it the first CID byte would be eaten).
    const out = Buffer.alloc(REPORT_SIZE + 1);
    out.set(report, 1);
    await this.dev.write(out);
  }

  async receive(timeoutMs: number): Promise<Uint8Array | null> {
    const r = await this.dev.read(Math.max(1, Math.round(timeoutMs)));
    if (!r || r.length === 0) return null;
    if (r.length < REPORT_SIZE) {
      const padded = new Uint8Array(REPORT_SIZE);
      padded.set(r);
      return padded;
    }
    return new Uint8Array(r.subarray(0, REPORT_SIZE));
  }

  async close(): Promise<void> {
    await this.dev.close().catch(() => {});
  }
}

export async function openHid(path: string, name?: string): Promise<Transport> {
  const hid = await loadNodeHid();
  try {
    // nonExclusive: macOS would otherwise open the device exclusively and lock other apps out.
    const dev = await hid.HIDAsync.open(path, { nonExclusive: true });
    return new HidTransport(dev, name ? `${path} (${name})` : path);
  } catch (e) {
    const msg = (e as Error).message ?? String(e);
    if (process.platform === 'win32') {
      throw new BackupctlError(Exit.refused, `cannot open ${path}: ${msg}; on Windows, raw access to FIDO security keys needs an Administrator prompt`);
    }
    if (process.platform === 'linux') {
      throw new BackupctlError(
        Exit.refused,
        `cannot open ${path}: ${msg}; non-root users need the udev rule shipped as man/udev/70-backupctl-fido2.rules (see backupctl doctor)`,
      );
    }
    throw new BackupctlError(Exit.unavailable, `cannot open ${path}: ${msg}`);
  }
}
