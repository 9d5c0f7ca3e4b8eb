// A software FIDO2 authenticator: the CTAP2 command logic of a roaming key, faithful to what
// /work/shared/notes/fido2-ctap2.md describes (CTAP 2.1 §6), with knobs for the behaviours the
// client must cope with. The transport (CTAPHID over UDP) is in server.ts.
import { createECDH, createHash, createHmac, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { asArray, asBool, asBytes, asInt, asMap, asText, encode, type CborMap, type CborValue } from '../../../src/fido2/cbor.js';
import { protocols, cosePoint, coseKey, equalBytes, type PinProtocol, type PinProtocolVersion } from '../../../src/fido2/pin.js';
import { STATUS } from '../../../src/fido2/status.js';

export interface AuthenticatorOptions {
  /** A PIN is set (clientPin: true); absent = PIN supported but not set. */
  pin?: string;
  /** CTAP 2.0-era firmware: versions FIDO_2_0 only, PIN protocol 1 only, no selection, no
   * pinUvAuthToken / makeCredUvNotRqd (makeCredential needs the PIN when one is set), reusable tokens. */
  ctap20?: boolean;
  /** Advertise and implement hmac-secret (default true). */
  hmacSecret?: boolean;
  /** PIN/UV protocols in order of preference (default [2, 1]; [1] when ctap20). */
  protocols?: PinProtocolVersion[];
  /** When the simulated user touches: at once (default), after N ms, or never. */
  touch?: 'auto' | 'never' | number;
  /** Give up waiting for a touch after this long with USER_ACTION_TIMEOUT (firmwares: ~29 s). */
  touchTimeoutMs?: number;
  /** A built-in verification method (fingerprint) that verifies on every touch: UV flag set. */
  builtinUv?: boolean;
  aaguid?: Uint8Array;
  /** Product name, for logs. */
  name?: string;
}

interface Credential {
  rpId: string;
  privateKey: KeyObject;
  cose: CborMap;
  /** CTAP 2.1 §12.5: two secrets per credential, used with and without UV. */
  credRandomWithUV: Uint8Array;
  credRandomWithoutUV: Uint8Array;
}

interface Token {
  value: Uint8Array;
  protocol: PinProtocolVersion;
  /** 0x01 mc, 0x02 ga; cleared after one use on CTAP 2.1 (§6.5.5.7: "clear permissions"). */
  permissions: number;
  rpId?: string;
}

export interface CommandContext {
  /** Resolves true when the user touched, false when cancelled; rejects never. Sends keepalives meanwhile. */
  waitForTouch(): Promise<'touched' | 'cancelled' | 'timeout'>;
}

export interface Reply {
  status: number;
  body?: CborMap;
}

const MAX_RETRIES = 8;
const CONSECUTIVE_LIMIT = 3;
const sha256 = (b: Uint8Array | string) => new Uint8Array(createHash('sha256').update(b).digest());
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const fail = (status: number): Reply => ({ status });

export class SoftAuthenticator {
  readonly opts: Required<Omit<AuthenticatorOptions, 'pin'>> & { pin?: string };
  private credentials = new Map<string, Credential>();
  private pinHash: Uint8Array | null;
  pinRetries = MAX_RETRIES;
  private consecutiveFailures = 0;
  private keyAgreement = createECDH('prime256v1');
  private token: Token | null = null;
  /** Every CTAP2 command handled: command byte, clientPIN subcommand, status, up requested. */
  readonly log: Array<{ cmd: number; sub?: number; status: number; up?: boolean; uv?: boolean }> = [];

  constructor(options: AuthenticatorOptions = {}) {
    const ctap20 = options.ctap20 ?? false;
    this.opts = {
      ctap20,
      hmacSecret: options.hmacSecret ?? true,
      protocols: options.protocols ?? (ctap20 ? [1] : [2, 1]),
      touch: options.touch ?? 'auto',
      touchTimeoutMs: options.touchTimeoutMs ?? 29_000,
      builtinUv: options.builtinUv ?? false,
      aaguid: options.aaguid ?? randomBytes(16),
      name: options.name ?? 'soft authenticator',
      ...(options.pin !== undefined ? { pin: options.pin } : {}),
    };
    this.pinHash = options.pin !== undefined ? sha256(options.pin).subarray(0, 16) : null;
    this.keyAgreement.generateKeys();
  }

  /** Unplug and replug: clears the consecutive-failure block, tokens and the key agreement key. */
  powerCycle(): void {
    this.consecutiveFailures = 0;
    this.token = null;
    this.keyAgreement = createECDH('prime256v1');
    this.keyAgreement.generateKeys();
  }

  /** authenticatorReset: every credential gone, PIN removed. */
  reset(): void {
    this.credentials.clear();
    this.pinHash = null;
    this.pinRetries = MAX_RETRIES;
    delete this.opts.pin;
    this.powerCycle();
  }

  async handle(cmd: number, params: CborMap | null, ctx: CommandContext): Promise<Reply> {
    let reply: Reply;
    let up: boolean | undefined;
    try {
      switch (cmd) {
        case 0x04:
          reply = { status: 0, body: this.getInfo() };
          break;
        case 0x01:
          reply = await this.makeCredential(params ?? new Map(), ctx);
          break;
        case 0x02: {
          const o = params?.get(5);
          up = o instanceof Map && o.has('up') ? asBool(o.get('up'), 'up') : true;
          reply = await this.getAssertion(params ?? new Map(), ctx);
          break;
        }
        case 0x06:
          reply = this.clientPin(params ?? new Map());
          break;
        case 0x0b:
          reply = this.opts.ctap20 ? fail(STATUS.INVALID_COMMAND) : await this.selection(ctx);
          break;
        default:
          reply = fail(STATUS.INVALID_COMMAND);
      }
    } catch {
      reply = fail(STATUS.INVALID_PARAMETER); // a malformed request (wrong CBOR types)
    }
    const sub = cmd === 0x06 ? (params?.get(2) as number) : undefined;
    this.log.push({ cmd, ...(sub !== undefined ? { sub } : {}), status: reply.status, ...(up !== undefined ? { up } : {}) });
    return reply;
  }

  getInfo(): CborMap {
    const o = this.opts;
    const options = new Map<string, boolean>([
      ['rk', true],
      ['up', true],
      ['plat', false],
      ['clientPin', this.pinHash !== null],
    ]);
    if (o.builtinUv) options.set('uv', true);
    if (!o.ctap20) {
      options.set('pinUvAuthToken', true);
      options.set('makeCredUvNotRqd', true);
    }
    const m: CborMap = new Map<number, CborValue>([
      [1, o.ctap20 ? ['U2F_V2', 'FIDO_2_0'] : ['U2F_V2', 'FIDO_2_0', 'FIDO_2_1']],
      [2, o.hmacSecret ? ['credProtect', 'hmac-secret'] : ['credProtect']],
      [3, o.aaguid],
      [4, options],
      [5, 1200],
      [6, [...o.protocols]],
      [7, 8],
      [8, 128],
    ]);
    return m;
  }

  private protocol(v: CborValue | undefined): PinProtocol | null {
    const n = v === undefined ? 1 : asInt(v, 'pinUvAuthProtocol');
    return (this.opts.protocols as number[]).includes(n) ? protocols[n as PinProtocolVersion] : null;
  }

  private decapsulate(proto: PinProtocol, platformKey: CborValue | undefined): Uint8Array {
    const z = new Uint8Array(this.keyAgreement.computeSecret(cosePoint(asMap(platformKey, 'keyAgreement'))));
    return proto.kdf(z);
  }

  // ---- clientPIN (§6.5.5) ----
  private clientPin(p: CborMap): Reply {
    const proto = this.protocol(p.get(1));
    const sub = asInt(p.get(2), 'subCommand');
    if (!proto) return fail(STATUS.INVALID_PARAMETER);
    switch (sub) {
      case 0x01: {
        const body: CborMap = new Map([[3, this.pinRetries]]);
        if (!this.opts.ctap20) body.set(4, false);
        return { status: 0, body };
      }
      case 0x02:
        return { status: 0, body: new Map([[1, coseKey(new Uint8Array(this.keyAgreement.getPublicKey()))]]) };
      case 0x05:
        return this.pinToken(proto, p, 0x03, undefined);
      case 0x09: {
        if (this.opts.ctap20) return fail(STATUS.INVALID_SUBCOMMAND);
        const perms = p.get(9);
        const rpId = p.get(10);
        // (seen) without permissions, or without an rpId for mc/ga, 0x14.
        if (perms === undefined || rpId === undefined) return fail(STATUS.MISSING_PARAMETER);
        return this.pinToken(proto, p, asInt(perms, 'permissions'), asText(rpId, 'rpId'));
      }
      default:
        return fail(STATUS.INVALID_SUBCOMMAND);
    }
  }

  private pinToken(proto: PinProtocol, p: CborMap, permissions: number, rpId: string | undefined): Reply {
    if (this.pinHash === null) return fail(STATUS.PIN_NOT_SET);
    if (this.pinRetries === 0) return fail(STATUS.PIN_BLOCKED);
    if (this.consecutiveFailures >= CONSECUTIVE_LIMIT) return fail(STATUS.PIN_AUTH_BLOCKED);
    const shared = this.decapsulate(proto, p.get(3));
    this.pinRetries--;
    let given: Uint8Array;
    try {
      given = proto.decrypt(shared, asBytes(p.get(6), 'pinHashEnc'));
    } catch {
      return fail(STATUS.PIN_AUTH_INVALID);
    }
    if (!equalBytes(given, this.pinHash)) {
      // §6.5.5.5: a new key agreement key after each wrong PIN, block after 3 in a row.
      this.keyAgreement = createECDH('prime256v1');
      this.keyAgreement.generateKeys();
      this.consecutiveFailures++;
      if (this.pinRetries === 0) return fail(STATUS.PIN_BLOCKED);
      if (this.consecutiveFailures >= CONSECUTIVE_LIMIT) return fail(STATUS.PIN_AUTH_BLOCKED);
      return fail(STATUS.PIN_INVALID);
    }
    this.pinRetries = MAX_RETRIES;
    this.consecutiveFailures = 0;
    this.token = { value: randomBytes(32), protocol: proto.version, permissions, ...(rpId !== undefined ? { rpId } : {}) };
    return { status: 0, body: new Map([[2, proto.encrypt(shared, this.token.value)]]) };
  }

  /** Check pinUvAuthParam against the current token (§6.1.2 step 11, §6.2.2 step 6). */
  private checkToken(param: Uint8Array, protoV: CborValue | undefined, cdh: Uint8Array, permission: number, rpId: string): number {
    const proto = this.protocol(protoV);
    if (!proto) return STATUS.INVALID_PARAMETER;
    const t = this.token;
    if (!t || t.protocol !== proto.version) return STATUS.PIN_AUTH_INVALID;
    if (!equalBytes(proto.authenticate(t.value, cdh), param)) return STATUS.PIN_AUTH_INVALID;
    // (seen) a used 2.1 token answers 0x33, not "unauthorized permission".
    if ((t.permissions & permission) === 0) return STATUS.PIN_AUTH_INVALID;
    if (t.rpId !== undefined && t.rpId !== rpId) return STATUS.UNAUTHORIZED_PERMISSION;
    return STATUS.OK;
  }

  private async presence(ctx: CommandContext): Promise<number> {
    const r = await ctx.waitForTouch();
    return r === 'touched' ? STATUS.OK : r === 'cancelled' ? STATUS.KEEPALIVE_CANCEL : STATUS.USER_ACTION_TIMEOUT;
  }

  private async selection(ctx: CommandContext): Promise<Reply> {
    return fail(await this.presence(ctx));
  }

  // ---- makeCredential (§6.1.2) ----
  private async makeCredential(p: CborMap, ctx: CommandContext): Promise<Reply> {
    const cdh = asBytes(p.get(1), 'clientDataHash');
    const rpId = asText(asMap(p.get(2), 'rp').get('id'), 'rp.id');
    asMap(p.get(3), 'user');
    const algs = asArray(p.get(4), 'pubKeyCredParams').map((x) => asMap(x, 'param').get('alg'));
    const param = p.get(8);
    // A zero-length pinUvAuthParam asks "touch me" (the selection fallback for older keys).
    if (param instanceof Uint8Array && param.length === 0) {
      const s = await this.presence(ctx);
      if (s) return fail(s);
      return fail(this.pinHash ? STATUS.PIN_INVALID : STATUS.PIN_NOT_SET);
    }
    if (!algs.includes(-7)) return fail(STATUS.UNSUPPORTED_ALGORITHM);
    const options = p.has(7) ? asMap(p.get(7), 'options') : new Map();
    if (options.get('uv') === true && !this.opts.builtinUv) return fail(STATUS.UNSUPPORTED_OPTION);
    let uv = false;
    if (param !== undefined) {
      const s = this.checkToken(asBytes(param, 'pinUvAuthParam'), p.get(9), cdh, 0x01, rpId);
      if (s) return fail(s);
      uv = true;
    } else if (this.pinHash && this.opts.ctap20) {
      return fail(STATUS.PUAT_REQUIRED); // (seen) a 2.0 key with a PIN refuses makeCredential without it
    }
    const s = await this.presence(ctx);
    if (s) return fail(s);
    if (this.opts.builtinUv) uv = true;
    if (uv && !this.opts.ctap20 && this.token) this.token.permissions = 0;

    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const cose: CborMap = new Map<number, CborValue>([
      [1, 2],
      [3, -7],
      [-1, 1],
      [-2, new Uint8Array(Buffer.from(jwk.x!, 'base64url'))],
      [-3, new Uint8Array(Buffer.from(jwk.y!, 'base64url'))],
    ]);
    const id = randomBytes(64);
    this.credentials.set(hex(id), { rpId, privateKey, cose, credRandomWithUV: randomBytes(32), credRandomWithoutUV: randomBytes(32) });
    const ext = p.has(6) ? asMap(p.get(6), 'extensions') : new Map();
    const withHmac = this.opts.hmacSecret && ext.get('hmac-secret') === true;
    const idLen = Uint8Array.of(id.length >> 8, id.length & 0xff);
    const authData = Buffer.concat([
      this.authDataHead(rpId, 0x01 | (uv ? 0x04 : 0) | 0x40 | (withHmac ? 0x80 : 0)),
      this.opts.aaguid,
      idLen,
      id,
      encode(cose),
      withHmac ? encode(new Map([['hmac-secret', true]])) : new Uint8Array(0),
    ]);
    // "packed" self attestation (WebAuthn §8.2): signed with the credential key itself.
    const sig = sign('sha256', Buffer.concat([authData, cdh]), privateKey);
    const attStmt: CborMap = new Map<string, CborValue>([
      ['alg', -7],
      ['sig', new Uint8Array(sig)],
    ]);
    return {
      status: 0,
      body: new Map<number, CborValue>([
        [1, 'packed'],
        [2, new Uint8Array(authData)],
        [3, attStmt],
      ]),
    };
  }

  private signCount = 0;
  private authDataHead(rpId: string, flags: number): Uint8Array {
    const head = Buffer.alloc(37);
    Buffer.from(sha256(rpId)).copy(head, 0);
    head[32] = flags;
    head.writeUInt32BE(++this.signCount, 33);
    return head;
  }

  // ---- getAssertion (§6.2.2) ----
  private async getAssertion(p: CborMap, ctx: CommandContext): Promise<Reply> {
    const rpId = asText(p.get(1), 'rpId');
    const cdh = asBytes(p.get(2), 'clientDataHash');
    const allow = p.has(3) ? asArray(p.get(3), 'allowList').map((c) => asBytes(asMap(c, 'descriptor').get('id'), 'id')) : [];
    const options = p.has(5) ? asMap(p.get(5), 'options') : new Map();
    const up = options.has('up') ? asBool(options.get('up'), 'up') : true;
    if (options.get('uv') === true && !this.opts.builtinUv) return fail(STATUS.UNSUPPORTED_OPTION);
    const ext = p.has(4) ? asMap(p.get(4), 'extensions') : new Map();
    const hmacIn = this.opts.hmacSecret ? ext.get('hmac-secret') : undefined;
    // (seen) one firmware refuses hmac-secret without user presence.
    if (hmacIn !== undefined && !up) return fail(STATUS.UNSUPPORTED_OPTION);

    let uv = false;
    const param = p.get(6);
    if (param !== undefined) {
      const s = this.checkToken(asBytes(param, 'pinUvAuthParam'), p.get(7), cdh, 0x02, rpId);
      if (s) return fail(s);
      uv = true;
    }
    let found: [Uint8Array, Credential] | null = null;
    for (const id of allow) {
      const c = this.credentials.get(hex(id));
      if (c && c.rpId === rpId) {
        found = [id, c];
        break;
      }
    }
    if (!found) return fail(STATUS.NO_CREDENTIALS);
    if (up) {
      const s = await this.presence(ctx);
      if (s) return fail(s);
      if (this.opts.builtinUv) uv = true;
    }
    if (param !== undefined && !this.opts.ctap20 && this.token) this.token.permissions = 0;
    const [id, cred] = found;

    let extOut: Uint8Array = new Uint8Array(0);
    if (hmacIn !== undefined) {
      const h = asMap(hmacIn, 'hmac-secret');
      const proto = this.protocol(h.get(4));
      if (!proto) return fail(STATUS.INVALID_PARAMETER);
      const shared = this.decapsulate(proto, h.get(1));
      const saltEnc = asBytes(h.get(2), 'saltEnc');
      const saltAuth = asBytes(h.get(3), 'saltAuth');
      // Lengths first: (seen) a protocol 2 input without key 4 is read as protocol 1 -> 0x03.
      const iv = proto.version === 2 ? 16 : 0;
      if (![32 + iv, 64 + iv].includes(saltEnc.length) || saltAuth.length !== (proto.version === 2 ? 32 : 16)) return fail(STATUS.INVALID_LENGTH);
      if (!equalBytes(proto.authenticate(shared, saltEnc), saltAuth)) return fail(STATUS.PIN_AUTH_INVALID);
      let salts: Uint8Array;
      try {
        salts = proto.decrypt(shared, saltEnc);
      } catch {
        return fail(STATUS.INVALID_LENGTH);
      }
      const secret = uv ? cred.credRandomWithUV : cred.credRandomWithoutUV;
      const outs = [salts.subarray(0, 32), ...(salts.length === 64 ? [salts.subarray(32)] : [])].map(
        (s) => new Uint8Array(createHmac('sha256', secret).update(s).digest()),
      );
      extOut = encode(new Map([['hmac-secret', proto.encrypt(shared, Buffer.concat(outs))]]));
    }
    const authData = Buffer.concat([this.authDataHead(rpId, (up ? 0x01 : 0) | (uv ? 0x04 : 0) | (extOut.length ? 0x80 : 0)), extOut]);
    const sig = sign('sha256', Buffer.concat([authData, cdh]), cred.privateKey);
    return {
      status: 0,
      body: new Map<number, CborValue>([
        [1, new Map<string, CborValue>([['id', id], ['type', 'public-key']])],
        [2, new Uint8Array(authData)],
        [3, new Uint8Array(sig)],
      ]),
    };
  }
}
