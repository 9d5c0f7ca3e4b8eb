// What CTAPHID needs from a transport: send and receive 64-byte reports. USB HID (node-hid)
// and the simulator UDP convention both fit; the report-ID byte is the HID transport's business.

export const REPORT_SIZE = 64;

export interface Transport {
  /** For messages: "/dev/hidraw3 (Yubico YubiKey)" or "udp://127.0.0.1:8111". */
  readonly description: string;
  /** True for the UDP simulator convention: never a real security key. */
  readonly simulated: boolean;
  send(report: Uint8Array): Promise<void>;
  /** The next 64-byte report, or null when none arrived within `timeoutMs`. */
  receive(timeoutMs: number): Promise<Uint8Array | null>;
  close(): Promise<void>;
}
