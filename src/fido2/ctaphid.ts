// CTAPHID, the FIDO USB HID framing (CTAP 2.1 §11.2): 64-byte reports, an init packet
// `CID(4) CMD|0x80 BCNT(2) data(57)` then continuations `CID SEQ data(59)`, channel allocation
// with INIT, KEEPALIVE while the key waits for a touch, CANCEL, ERROR.
import { randomBytes } from 'node:crypto';
import { BackupctlError, Exit } from '../errors.js';
import { REPORT_SIZE, type Transport } from './transport/types.js';

export const CMD = {
  PING: 0x01,
  MSG: 0x03,
  INIT: 0x06,
  WINK: 0x08,
  CBOR: 0x10,
  CANCEL: 0x11,
  KEEPALIVE: 0x3b,
  ERROR: 0x3f,
} as const;

export const BROADCAST_CID = 0xffffffff;
const INIT_DATA = REPORT_SIZE - 7;
const CONT_DATA = REPORT_SIZE - 5;
/** 57 + 128 * 59 (§11.2.4). */
export const MAX_MESSAGE = INIT_DATA + 128 * CONT_DATA;

/** CTAPHID_ERROR codes (§11.2.9.1.6). */
export const HID_ERR: Record<number, string> = {
  0x01: 'invalid command',
  0x02: 'invalid parameter',
  0x03: 'invalid length',
  0x04: 'invalid sequence',
  0x05: 'message timeout',
  0x06: 'channel busy',
  0x0a: 'lock required',
  0x0b: 'invalid channel',
  0x7f: 'other error',
};

export interface Message {
  cid: number;
  cmd: number;
  data: Uint8Array;
}

export class FramingError extends Error {
  constructor(
    message: string,
    /** The CTAPHID_ERROR code a device answers this with. */
    readonly hidError: number,
  ) {
    super(message);
  }
}

/** Split one message into 64-byte reports (zero-padded), §11.2.4. */
export function packetize(cid: number, cmd: number, data: Uint8Array): Uint8Array[] {
  if (data.length > MAX_MESSAGE) throw new FramingError(`message of ${data.length} bytes exceeds ${MAX_MESSAGE}`, 0x03);
  const out: Uint8Array[] = [];
  const first = new Uint8Array(REPORT_SIZE);
  const dv = new DataView(first.buffer);
  dv.setUint32(0, cid >>> 0);
  first[4] = 0x80 | cmd;
  dv.setUint16(5, data.length);
  first.set(data.subarray(0, INIT_DATA), 7);
  out.push(first);
  for (let off = INIT_DATA, seq = 0; off < data.length; off += CONT_DATA, seq++) {
    const p = new Uint8Array(REPORT_SIZE);
    new DataView(p.buffer).setUint32(0, cid >>> 0);
    p[4] = seq;
    p.set(data.subarray(off, off + CONT_DATA), 5);
    out.push(p);
  }
  return out;
}

export const reportCid = (report: Uint8Array) => new DataView(report.buffer, report.byteOffset).getUint32(0);
export const isInitPacket = (report: Uint8Array) => (report[4]! & 0x80) !== 0;

/**
 * Reassembles the reports of one channel into messages. A continuation without an init
 * packet or out of sequence is an error (§11.2.4: SEQ runs 0..0x7F).
 */
export class Assembler {
  private cmd = 0;
  private buf: Uint8Array | null = null;
  private filled = 0;
  private seq = 0;

  get busy(): boolean {
    return this.buf !== null;
  }

  reset(): void {
    this.buf = null;
  }

  /** Feed one report; returns a message when it is complete. */
  push(report: Uint8Array): Message | null {
    if (report.length < REPORT_SIZE) throw new FramingError(`short report (${report.length} bytes)`, 0x03);
    const cid = reportCid(report);
    if (isInitPacket(report)) {
      const len = (report[5]! << 8) | report[6]!;
      if (len > MAX_MESSAGE) throw new FramingError(`declared length ${len} exceeds ${MAX_MESSAGE}`, 0x03);
      this.cmd = report[4]! & 0x7f;
      this.buf = new Uint8Array(len);
      const n = Math.min(len, INIT_DATA);
      this.buf.set(report.subarray(7, 7 + n));
      this.filled = n;
      this.seq = 0;
    } else {
      if (!this.buf) throw new FramingError('continuation packet without an init packet', 0x04);
      if (report[4] !== this.seq) {
        this.buf = null;
        throw new FramingError(`continuation sequence ${report[4]} where ${this.seq} was expected`, 0x04);
      }
      this.seq++;
      const n = Math.min(this.buf.length - this.filled, CONT_DATA);
      this.buf.set(report.subarray(5, 5 + n), this.filled);
      this.filled += n;
    }
    if (this.filled < this.buf.length) return null;
    const msg = { cid, cmd: this.cmd, data: this.buf };
    this.buf = null;
    return msg;
  }
}

export interface TransactOptions {
  signal: AbortSignal;
  /** Called on each KEEPALIVE with its status (1 processing, 2 user presence needed). */
  onKeepalive?: (status: number) => void;
  /** Give up when the whole exchange takes longer (keepalives included). */
  timeoutMs?: number;
}

/** How long a device may stay silent (no reply, no keepalive) before we call it gone. */
const SILENCE_MS = 5_000;
/** Keys send keepalives every ~100 ms; polling at this pace notices Ctrl-C promptly. */
const POLL_MS = 100;
/** Wait for a user's touch at most this long; keys themselves give up after ~30 s. */
export const DEFAULT_TOUCH_TIMEOUT_MS = 60_000;

export function unavailable(msg: string): BackupctlError {
  return new BackupctlError(Exit.unavailable, msg);
}

/** One allocated CTAPHID channel on one device. */
export class CtapHidChannel {
  private constructor(
    readonly transport: Transport,
    readonly cid: number,
    /** INIT reply: CTAPHID protocol version, device version, capability flags. */
    readonly info: { protocol: number; major: number; minor: number; build: number; capabilities: number },
  ) {}

  get supportsCbor(): boolean {
    return (this.info.capabilities & 0x04) !== 0;
  }

  /**
   * Allocate a channel (§11.2.9.1.3): INIT on the broadcast CID with a random nonce; replies
   * with another nonce belong to some other client and are ignored. INIT is re-sent until
   * `initTimeoutMs` passes because some simulators answer their first INIT only after a while.
   */
  static async open(transport: Transport, signal: AbortSignal, initTimeoutMs = 3_000): Promise<CtapHidChannel> {
    const nonce = randomBytes(8);
    const deadline = Date.now() + initTimeoutMs;
    while (Date.now() < deadline) {
      signal.throwIfAborted();
      for (const p of packetize(BROADCAST_CID, CMD.INIT, nonce)) await transport.send(p);
      const resendAt = Math.min(deadline, Date.now() + 1_000);
      const asm = new Assembler();
      while (Date.now() < resendAt) {
        signal.throwIfAborted();
        const r = await transport.receive(Math.min(POLL_MS, resendAt - Date.now()));
        if (!r || reportCid(r) !== BROADCAST_CID) continue;
        let msg: Message | null;
        try {
          msg = asm.push(r);
        } catch {
          continue;
        }
        if (!msg || msg.cmd !== CMD.INIT || msg.data.length < 17) continue;
        if (!Buffer.from(msg.data.subarray(0, 8)).equals(nonce)) continue;
        const d = msg.data;
        const cid = new DataView(d.buffer, d.byteOffset).getUint32(8);
        return new CtapHidChannel(transport, cid, { protocol: d[12]!, major: d[13]!, minor: d[14]!, build: d[15]!, capabilities: d[16]! });
      }
    }
    throw unavailable(`${transport.description} did not answer CTAPHID INIT (is it a FIDO2 security key, and is it plugged in?)`);
  }

  private async sendMessage(cmd: number, data: Uint8Array): Promise<void> {
    // Packets of one message go back to back: a gap of ~0.75 s makes keys answer "message timeout".
    for (const p of packetize(this.cid, cmd, data)) await this.transport.send(p);
  }

  /** CANCEL (§11.2.9.2.2) has no reply; the pending CBOR request ends with CTAP2_ERR_KEEPALIVE_CANCEL. */
  async cancel(): Promise<void> {
    await this.sendMessage(CMD.CANCEL, new Uint8Array(0)).catch(() => {});
  }

  /**
   * Send one request and wait for its reply, passing keepalives to `onKeepalive`. On abort
   * CANCEL is sent and the key's cancellation reply awaited briefly, then the abort reason thrown.
   */
  async transact(cmd: number, data: Uint8Array, opts: TransactOptions): Promise<Uint8Array> {
    opts.signal.throwIfAborted();
    await this.sendMessage(cmd, data);
    const asm = new Assembler();
    const overall = Date.now() + (opts.timeoutMs ?? DEFAULT_TOUCH_TIMEOUT_MS);
    let lastHeard = Date.now();
    let cancelledAt = 0;
    for (;;) {
      if (opts.signal.aborted && !cancelledAt) {
        cancelledAt = Date.now();
        await this.cancel();
      }
      if (cancelledAt && Date.now() - cancelledAt > 1_000) throw opts.signal.reason;
      const now = Date.now();
      if (!cancelledAt && now > overall) {
        await this.cancel();
        throw unavailable(`timed out waiting for the security key (${this.transport.description}); touch it when its light blinks`);
      }
      if (now - lastHeard > SILENCE_MS) throw unavailable(`the security key (${this.transport.description}) stopped answering`);
      const r = await this.transport.receive(POLL_MS);
      if (!r || reportCid(r) !== this.cid) continue;
      lastHeard = Date.now();
      let msg: Message | null;
      try {
        msg = asm.push(r);
      } catch (e) {
        throw unavailable(`garbled reply from ${this.transport.description}: ${(e as Error).message}`);
      }
      if (!msg) continue;
      if (msg.cmd === CMD.KEEPALIVE) {
        if (!cancelledAt) opts.onKeepalive?.(msg.data[0] ?? 0);
        continue;
      }
      if (cancelledAt) throw opts.signal.reason;
      if (msg.cmd === CMD.ERROR) {
        const code = msg.data[0] ?? 0x7f;
        const what = HID_ERR[code] ?? `error 0x${code.toString(16)}`;
        if (code === 0x06) throw unavailable(`${this.transport.description} is busy with another program; close it and try again`);
        throw unavailable(`${this.transport.description} reported a CTAPHID ${what}`);
      }
      if (msg.cmd !== cmd) throw unavailable(`${this.transport.description} answered command 0x${cmd.toString(16)} with 0x${msg.cmd.toString(16)}`);
      return msg.data;
    }
  }
}
