// CTAPHID over UDP for the software authenticator, in the simulator convention (one 64-byte
// report per datagram, no report-ID byte) — except that replies go to the sender's address and
// port rather than a fixed 7112, so parallel test files never collide.
import { createSocket, type RemoteInfo } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { Assembler, BROADCAST_CID, CMD, packetize, reportCid, FramingError } from '../../../src/fido2/ctaphid.js';
import { asMap, decode, encode } from '../../../src/fido2/cbor.js';
import { SoftAuthenticator, type AuthenticatorOptions, type CommandContext } from './authenticator.js';

export interface RunningAuthenticator {
  auth: SoftAuthenticator;
  port: number;
  /** `udp://127.0.0.1:PORT?local=0`: the client binds a free local port. */
  url: string;
  /** CANCEL messages received. */
  cancels: number;
  /** User-presence waits started (each one is a "touch your key" moment). */
  touchRequests: number;
  close(): Promise<void>;
}

const KEEPALIVE_MS = 100;

/**
 * Serve a new authenticator, or plug an existing one (its credentials and PIN state) back in
 * on a new port: closing the server is unplugging the key.
 */
export async function startAuthenticator(options: AuthenticatorOptions | SoftAuthenticator = {}): Promise<RunningAuthenticator> {
  const auth = options instanceof SoftAuthenticator ? options : new SoftAuthenticator(options);
  if (options instanceof SoftAuthenticator) auth.powerCycle();
  const sock = createSocket('udp4');
  const assemblers = new Map<number, Assembler>();
  let nextCid = 1 + (randomBytes(2).readUInt16BE(0) << 8);
  /** The one channel with a CBOR request in progress (a key does one thing at a time). */
  let busy: { cid: number; cancel: () => void } | null = null;

  let closed = false;
  const send = (to: RemoteInfo, cid: number, cmd: number, data: Uint8Array) => {
    if (closed) return; // unplugged
    for (const p of packetize(cid, cmd, data)) sock.send(p, to.port, to.address);
  };

  const running: RunningAuthenticator = {
    auth,
    port: 0,
    url: '',
    cancels: 0,
    touchRequests: 0,
    close: () => {
      if (closed) return Promise.resolve();
      closed = true;
      busy?.cancel();
      return new Promise<void>((r) => sock.close(() => r()));
    },
  };

  function context(to: RemoteInfo, cid: number): { ctx: CommandContext; cancel: () => void } {
    let cancelled = false;
    let wake: (() => void) | null = null;
    const ctx: CommandContext = {
      waitForTouch: async () => {
        running.touchRequests++;
        const t = auth.opts.touch;
        const started = Date.now();
        const touchAt = t === 'auto' ? started + KEEPALIVE_MS : t === 'never' ? Infinity : started + t;
        for (;;) {
          // Keepalive status 2: "user presence needed" (§11.2.9.2.1).
          send(to, cid, CMD.KEEPALIVE, Uint8Array.of(2));
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, KEEPALIVE_MS);
          });
          wake = null;
          if (cancelled) return 'cancelled';
          if (Date.now() >= touchAt) return 'touched';
          if (Date.now() - started >= auth.opts.touchTimeoutMs) return 'timeout';
        }
      },
    };
    return {
      ctx,
      cancel: () => {
        cancelled = true;
        wake?.();
      },
    };
  }

  async function onMessage(to: RemoteInfo, cid: number, cmd: number, data: Uint8Array): Promise<void> {
    switch (cmd) {
      case CMD.INIT: {
        if (data.length !== 8) return send(to, cid, CMD.ERROR, Uint8Array.of(0x03));
        const newCid = cid === BROADCAST_CID ? nextCid++ : cid;
        const reply = Buffer.alloc(17);
        Buffer.from(data).copy(reply, 0);
        reply.writeUInt32BE(newCid, 8);
        reply[12] = 2; // CTAPHID protocol version
        reply[13] = 1;
        reply[16] = 0x01 | 0x04 | 0x08; // WINK, CBOR, NMSG
        return send(to, cid, CMD.INIT, reply);
      }
      case CMD.PING:
        return send(to, cid, CMD.PING, data);
      case CMD.WINK:
        return send(to, cid, CMD.WINK, new Uint8Array(0));
      case CMD.CANCEL:
        running.cancels++;
        if (busy?.cid === cid) busy.cancel();
        return;
      case CMD.CBOR: {
        if (busy) return send(to, cid, CMD.ERROR, Uint8Array.of(0x06));
        if (data.length === 0) return send(to, cid, CMD.ERROR, Uint8Array.of(0x03));
        const { ctx, cancel } = context(to, cid);
        busy = { cid, cancel };
        try {
          let params = null;
          if (data.length > 1) {
            try {
              params = asMap(decode(data.subarray(1)), 'request');
            } catch {
              return send(to, cid, CMD.CBOR, Uint8Array.of(0x12)); // CTAP2_ERR_INVALID_CBOR
            }
          }
          const r = await auth.handle(data[0]!, params, ctx);
          const body = r.body ? encode(r.body) : new Uint8Array(0);
          send(to, cid, CMD.CBOR, Buffer.concat([Uint8Array.of(r.status), body]));
        } finally {
          busy = null;
        }
        return;
      }
      default:
        return send(to, cid, CMD.ERROR, Uint8Array.of(0x01));
    }
  }

  sock.on('message', (buf, rinfo) => {
    if (buf.length !== 64) return;
    const report = new Uint8Array(buf);
    const cid = reportCid(report);
    let asm = assemblers.get(cid);
    if (!asm) assemblers.set(cid, (asm = new Assembler()));
    try {
      const msg = asm.push(report);
      if (msg) void onMessage(rinfo, cid, msg.cmd, msg.data);
    } catch (e) {
      send(rinfo, cid, CMD.ERROR, Uint8Array.of(e instanceof FramingError ? e.hidError : 0x7f));
    }
  });

  await new Promise<void>((resolve) => sock.bind(0, '127.0.0.1', resolve));
  running.port = sock.address().port;
  running.url = `udp://127.0.0.1:${running.port}?local=0`;
  return running;
}
