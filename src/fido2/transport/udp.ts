// The UDP transport authenticator simulators use (SoloKeys solo1 PC build, CanoKey's
// fido-hid-over-udp): one 64-byte report per datagram, no report-ID byte, the simulator on
// 127.0.0.1:8111 answering to the client's port 7112. Loopback only: this is a test and
// development transport, never a way to reach a key over a network.
import { createSocket, type Socket } from 'node:dgram';
import { isIP } from 'node:net';
import { BackupctlError, Exit, usageError } from '../../errors.js';
import { REPORT_SIZE, type Transport } from './types.js';

export const DEFAULT_LOCAL_PORT = 7112;

export interface UdpAddress {
  host: string;
  port: number;
  localPort: number;
}

const isLoopback = (h: string) => h === 'localhost' || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));

function portOf(s: string | null, what: string, allowZero: boolean): number {
  const n = Number(s);
  if (!s || !/^\d+$/.test(s) || n > 65535 || (n === 0 && !allowZero)) throw usageError(`--device: invalid ${what} "${s ?? ''}"`);
  return n;
}

/** Parse `udp://HOST:PORT[?local=PORT]`; refuses anything but a loopback host. */
export function parseUdpUrl(spec: string): UdpAddress {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw usageError(`--device: "${spec}" is not a valid udp://HOST:PORT address`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!isLoopback(host)) throw usageError(`--device: ${spec}: the UDP simulator transport is allowed on loopback only (127.0.0.1, ::1)`);
  for (const k of url.searchParams.keys()) if (k !== 'local') throw usageError(`--device: unknown parameter "${k}" in ${spec}`);
  const local = url.searchParams.get('local');
  return {
    host: host === 'localhost' ? '127.0.0.1' : host,
    port: portOf(url.port, 'port', false),
    localPort: local === null ? DEFAULT_LOCAL_PORT : portOf(local, 'local port', true),
  };
}

class UdpTransport implements Transport {
  readonly simulated = true;
  private queue: Uint8Array[] = [];
  private waiter: ((r: Uint8Array | null) => void) | null = null;
  private error: Error | null = null;

  constructor(
    private readonly sock: Socket,
    readonly description: string,
  ) {
    sock.on('message', (msg) => {
      if (msg.length !== REPORT_SIZE) return;
      const r = new Uint8Array(msg);
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(r);
      } else this.queue.push(r);
    });
    // A connected UDP socket learns of "port unreachable": nobody is listening there.
    sock.on('error', (e) => {
      this.error = e;
      this.waiter?.(null);
    });
  }

  private failIfBroken(): void {
    if (this.error) {
      const code = (this.error as NodeJS.ErrnoException).code;
      throw new BackupctlError(Exit.unavailable, code === 'ECONNREFUSED' ? `no simulated key answers at ${this.description}` : `${this.description}: ${this.error.message}`);
    }
  }

  async send(report: Uint8Array): Promise<void> {
    this.failIfBroken();
    await new Promise<void>((resolve, reject) => this.sock.send(report, (e) => (e ? reject(e) : resolve()))).catch((e: Error) => {
      this.error = e;
    });
    this.failIfBroken();
  }

  async receive(timeoutMs: number): Promise<Uint8Array | null> {
    this.failIfBroken();
    const queued = this.queue.shift();
    if (queued) return queued;
    const r = await new Promise<Uint8Array | null>((resolve) => {
      const t = setTimeout(() => {
        this.waiter = null;
        resolve(null);
      }, timeoutMs);
      this.waiter = (x) => {
        clearTimeout(t);
        resolve(x);
      };
    });
    this.failIfBroken();
    return r;
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.sock.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}

export async function openUdp(spec: string): Promise<Transport> {
  const addr = parseUdpUrl(spec);
  const sock = createSocket(isIP(addr.host) === 6 ? 'udp6' : 'udp4');
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(addr.localPort, addr.host, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.connect(addr.port, addr.host, () => {
        sock.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    sock.close();
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE') throw new BackupctlError(Exit.unavailable, `cannot bind local UDP port ${addr.localPort} for ${spec}: it is in use (choose another with ?local=PORT)`);
    throw new BackupctlError(Exit.unavailable, `cannot open ${spec}: ${(e as Error).message}`);
  }
  return new UdpTransport(sock, `udp://${addr.host}:${addr.port}`);
}
