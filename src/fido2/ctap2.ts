// CTAP2 commands over a CTAPHID channel (CTAP 2.1 §6): getInfo, makeCredential, getAssertion,
// clientPIN, selection; and parsers for the structures they return.
import { CborError, asArray, asBool, asBytes, asInt, asMap, asText, decode, decodeFirst, encode, type CborMap, type CborValue } from './cbor.js';
import { CMD, type CtapHidChannel } from './ctaphid.js';
import { CtapError } from './status.js';

export const CTAP_CMD = {
  makeCredential: 0x01,
  getAssertion: 0x02,
  getInfo: 0x04,
  clientPIN: 0x06,
  selection: 0x0b,
} as const;

export interface AuthenticatorInfo {
  versions: string[];
  extensions: string[];
  /** 16 bytes, hex. */
  aaguid: string;
  /** Options as sent; see `option()` for the spec defaults of absent ones. */
  options: Record<string, boolean>;
  maxMsgSize: number;
  /** In the authenticator's order of preference. */
  pinUvAuthProtocols: number[];
  maxCredentialCountInList: number;
  maxCredentialIdLength: number;
}

/** authenticatorGetInfo response (§6.4). */
export function parseGetInfo(body: CborMap): AuthenticatorInfo {
  const options: Record<string, boolean> = {};
  const rawOptions = body.get(4);
  if (rawOptions !== undefined) for (const [k, v] of asMap(rawOptions, 'getInfo options')) options[String(k)] = asBool(v, `option ${String(k)}`);
  const strings = (v: CborValue | undefined, what: string) => (v === undefined ? [] : asArray(v, what).map((x) => asText(x, what)));
  return {
    versions: strings(body.get(1), 'getInfo versions'),
    extensions: strings(body.get(2), 'getInfo extensions'),
    aaguid: Buffer.from(asBytes(body.get(3), 'getInfo aaguid')).toString('hex'),
    options,
    maxMsgSize: body.has(5) ? asInt(body.get(5), 'maxMsgSize') : 1024,
    pinUvAuthProtocols: body.has(6) ? asArray(body.get(6), 'pinUvAuthProtocols').map((x) => asInt(x, 'protocol')) : [],
    maxCredentialCountInList: body.has(7) ? asInt(body.get(7), 'maxCredentialCountInList') : 1,
    maxCredentialIdLength: body.has(8) ? asInt(body.get(8), 'maxCredentialIdLength') : 0,
  };
}

/** An option's value with the §6.4 defaults for absent ones (up true, everything else false/absent). */
export function option(info: AuthenticatorInfo, name: string): boolean | undefined {
  if (name in info.options) return info.options[name];
  if (name === 'up') return true;
  if (name === 'clientPin') return undefined; // absent = no PIN support at all
  return false;
}

export const FLAG = { UP: 0x01, UV: 0x04, AT: 0x40, ED: 0x80 } as const;

export interface AuthData {
  rpIdHash: Uint8Array;
  flags: number;
  signCount: number;
  attested?: { aaguid: string; credentialId: Uint8Array; publicKey: CborMap };
  extensions?: CborMap;
}

/**
 * Authenticator data (WebAuthn §6.1): rpIdHash(32) flags(1) signCount(4) [attested credential
 * data] [extensions]. The COSE key has no length prefix, so it is CBOR-decoded to find where the
 * extensions start; nothing may follow the extensions.
 */
export function parseAuthData(buf: Uint8Array): AuthData {
  if (buf.length < 37) throw new CborError(`authenticator data too short (${buf.length} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const flags = buf[32]!;
  const out: AuthData = { rpIdHash: buf.slice(0, 32), flags, signCount: dv.getUint32(33) };
  let pos = 37;
  if (flags & FLAG.AT) {
    if (buf.length < pos + 18) throw new CborError('attested credential data truncated');
    const aaguid = Buffer.from(buf.subarray(pos, pos + 16)).toString('hex');
    const idLen = dv.getUint16(pos + 16);
    pos += 18;
    if (buf.length < pos + idLen) throw new CborError('credential id truncated');
    const credentialId = buf.slice(pos, pos + idLen);
    pos += idLen;
    const { value, length } = decodeFirst(buf.subarray(pos));
    pos += length;
    out.attested = { aaguid, credentialId, publicKey: asMap(value, 'credential public key') };
  }
  if (flags & FLAG.ED) {
    const { value, length } = decodeFirst(buf.subarray(pos));
    pos += length;
    out.extensions = asMap(value, 'authenticator data extensions');
  }
  if (pos !== buf.length) throw new CborError(`${buf.length - pos} unexpected bytes after authenticator data`);
  return out;
}

export interface CommandOptions {
  signal: AbortSignal;
  onKeepalive?: (status: number) => void;
  timeoutMs?: number;
}

/** CTAP2 over one CTAPHID channel. */
export class Ctap2 {
  constructor(readonly channel: CtapHidChannel) {}

  /** Send `cmd` with an optional parameter map; returns the reply map (or null when empty). */
  async call(cmd: number, params: CborMap | null, opts: CommandOptions): Promise<CborMap | null> {
    const body = params ? encode(params) : new Uint8Array(0);
    const req = new Uint8Array(1 + body.length);
    req[0] = cmd;
    req.set(body, 1);
    const reply = await this.channel.transact(CMD.CBOR, req, opts);
    if (reply.length === 0) throw new CborError('empty CTAP2 reply');
    const name = Object.entries(CTAP_CMD).find(([, v]) => v === cmd)?.[0] ?? `command 0x${cmd.toString(16)}`;
    if (reply[0] !== 0) throw new CtapError(reply[0]!, name);
    return reply.length > 1 ? asMap(decode(reply.subarray(1)), `${name} reply`) : null;
  }

  async getInfo(signal: AbortSignal): Promise<AuthenticatorInfo> {
    const r = await this.call(CTAP_CMD.getInfo, null, { signal, timeoutMs: 5_000 });
    return parseGetInfo(asMap(r ?? undefined, 'getInfo reply'));
  }
}
