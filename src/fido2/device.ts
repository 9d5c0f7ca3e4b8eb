// One FIDO2 authenticator as backupctl uses it: open (UDP simulator or USB HID), getInfo, PIN
// tokens, makeCredential / getAssertion with hmac-secret, selection among several keys. CTAP
// status codes become one clear BackupctlError each (notes "Status codes worth a clear message").
import { createHash, randomBytes } from 'node:crypto';
import { BackupctlError, Exit, usageError } from '../errors.js';
import { CborError, asBytes, asMap, asText, type CborMap, type CborValue } from './cbor.js';
import { CtapHidChannel } from './ctaphid.js';
import { CTAP_CMD, Ctap2, FLAG, option, parseAuthData, type AuthData, type AuthenticatorInfo } from './ctap2.js';
import { encapsulate, protocols, type PinProtocol, type PinProtocolVersion } from './pin.js';
import { CtapError, STATUS } from './status.js';
import { listHidDevices, openHid } from './transport/hid.js';
import type { Transport } from './transport/types.js';
import { openUdp } from './transport/udp.js';

export const PERMISSION = { makeCredential: 0x01, getAssertion: 0x02 } as const;

export interface Interaction {
  signal: AbortSignal;
  /** Shown once per request when the key asks for a touch (KEEPALIVE status 2). */
  notify: (msg: string) => void;
}

/** Reads the PIN only when it is needed (the CLI prompts or reads BACKUPCTL_PIN / --pin-file). */
export type PinReader = () => Promise<string>;

const sha256 = (b: Uint8Array | string) => new Uint8Array(createHash('sha256').update(b).digest());

export class Fido2Device {
  private constructor(
    readonly transport: Transport,
    private readonly ctap: Ctap2,
    readonly info: AuthenticatorInfo,
  ) {}

  static async open(transport: Transport, signal: AbortSignal): Promise<Fido2Device> {
    try {
      const channel = await CtapHidChannel.open(transport, signal, transport.simulated ? 5_000 : 2_000);
      if (!channel.supportsCbor) throw new BackupctlError(Exit.refused, `${transport.description} is a U2F-only key: backupctl needs a FIDO2 (CTAP2) key with hmac-secret`);
      const ctap = new Ctap2(channel);
      return new Fido2Device(transport, ctap, await ctap.getInfo(signal));
    } catch (e) {
      await transport.close();
      throw e;
    }
  }

  get name(): string {
    return this.transport.description;
  }
  get hasHmacSecret(): boolean {
    return this.info.extensions.includes('hmac-secret');
  }
  /** true: a PIN is set; false: supported, none set; undefined: no PIN support. */
  get pinSet(): boolean | undefined {
    return option(this.info, 'clientPin');
  }
  get isCtap21(): boolean {
    return this.info.versions.includes('FIDO_2_1');
  }

  /** The first protocol in the key's order of preference that we implement (§6.5.4). */
  get pinProtocol(): PinProtocol {
    for (const v of this.info.pinUvAuthProtocols) if (v === 1 || v === 2) return protocols[v as PinProtocolVersion];
    return protocols[1];
  }

  requireHmacSecret(): void {
    if (!this.hasHmacSecret) {
      throw new BackupctlError(Exit.refused, `the security key ${this.name} does not support the hmac-secret extension, which backupctl needs to derive a key; use another FIDO2 key (most YubiKey 5, SoloKey, Nitrokey 3 models have it)`);
    }
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  private async call(cmd: number, params: CborMap | null, io: Interaction, touch = false): Promise<CborMap | null> {
    let told = false;
    return this.ctap.call(cmd, params, {
      signal: io.signal,
      ...(touch ? {} : { timeoutMs: 10_000 }),
      onKeepalive: (status) => {
        if (status === 2 && !told) {
          told = true;
          io.notify('touch your security key');
        }
      },
    });
  }

  /** Turn the status codes every command may meet into one clear error. */
  fail(e: unknown, io: Interaction): never {
    if (!(e instanceof CtapError)) throw e;
    switch (e.status) {
      case STATUS.KEEPALIVE_CANCEL:
        throw io.signal.aborted ? io.signal.reason : new BackupctlError(Exit.interrupted, `the request was cancelled on ${this.name}`);
      case STATUS.USER_ACTION_TIMEOUT:
      case STATUS.ACTION_TIMEOUT:
        throw new BackupctlError(Exit.unavailable, `timed out waiting for a touch on the security key ${this.name}: touch it when it blinks, then try again`);
      case STATUS.PIN_BLOCKED:
        throw new BackupctlError(Exit.refused, `the PIN of the security key ${this.name} is blocked (too many wrong PINs); only a reset unblocks it, and a reset destroys every credential on it: unlock with your recovery code instead`);
      case STATUS.PIN_AUTH_BLOCKED:
        throw new BackupctlError(Exit.refused, `too many wrong PINs in a row: unplug the security key ${this.name}, plug it back in, then try again`);
      case STATUS.UV_BLOCKED:
        throw new BackupctlError(Exit.refused, `built-in user verification is blocked on ${this.name}: unlock it with its PIN first`);
      case STATUS.UV_INVALID:
        throw new BackupctlError(Exit.noKey, `user verification failed on ${this.name}`);
      case STATUS.OPERATION_DENIED:
        throw new BackupctlError(Exit.refused, `the security key ${this.name} denied the operation`);
      default:
        throw new BackupctlError(Exit.unavailable, `the security key ${this.name} answered ${e.message.replace(/^.* failed: /, '')} (${e.message})`);
    }
  }

  async pinRetries(io: Interaction): Promise<number> {
    const r = await this.call(CTAP_CMD.clientPIN, new Map([[1, this.pinProtocol.version], [2, 0x01]]), io);
    return asCount(r?.get(3), 'pinRetries');
  }

  private async keyAgreement(io: Interaction): Promise<{ platformKey: CborMap; shared: Uint8Array }> {
    const proto = this.pinProtocol;
    const r = await this.call(CTAP_CMD.clientPIN, new Map([[1, proto.version], [2, 0x02]]), io);
    return encapsulate(proto, asMap(r?.get(1), 'keyAgreement'));
  }

  /**
   * A PIN/UV auth token for one operation (§6.5.5.7): subCommand 0x09 with permissions and the
   * rpId on keys with `pinUvAuthToken`, the legacy 0x05 otherwise. Wrong PIN -> tries left.
   */
  async pinToken(readPin: PinReader, permissions: number, rpId: string, io: Interaction): Promise<Uint8Array> {
    if (this.pinSet !== true) {
      throw new BackupctlError(Exit.refused, `the security key ${this.name} has no PIN set: set one first (e.g. with the key maker's tool or \`fido2-token -S\`), or enrol with --uv discouraged`);
    }
    const retries = await this.pinRetries(io).catch((e) => this.fail(e, io));
    if (retries === 0) this.fail(new CtapError(STATUS.PIN_BLOCKED, 'clientPIN'), io);
    const pin = await readPin();
    const pinBytes = Buffer.from(pin, 'utf8');
    if ([...pin].length < 4 || pinBytes.length > 63) {
      pinBytes.fill(0);
      throw new BackupctlError(Exit.noKey, `a PIN has 4 to 63 bytes: the PIN given cannot be the key's PIN (${retries} tries left on the key)`);
    }
    const proto = this.pinProtocol;
    const { platformKey, shared } = await this.keyAgreement(io).catch((e) => this.fail(e, io));
    const pinHash = sha256(pinBytes).subarray(0, 16);
    pinBytes.fill(0);
    const params = new Map<number, CborValue>([
      [1, proto.version],
      [3, platformKey],
      [6, proto.encrypt(shared, pinHash)],
    ]);
    pinHash.fill(0);
    if (option(this.info, 'pinUvAuthToken')) {
      params.set(2, 0x09);
      params.set(9, permissions);
      params.set(10, rpId);
    } else {
      params.set(2, 0x05);
    }
    try {
      const r = await this.call(CTAP_CMD.clientPIN, params, io);
      return proto.decrypt(shared, asBytes(r?.get(2), 'pinUvAuthToken'));
    } catch (e) {
      if (e instanceof CtapError && e.status === STATUS.PIN_INVALID) {
        const left = await this.pinRetries(io).catch(() => undefined);
        throw new BackupctlError(Exit.noKey, `wrong PIN for the security key ${this.name}${left === undefined ? '' : ` (${left} ${left === 1 ? 'try' : 'tries'} left before it blocks)`}`, left === undefined ? undefined : { triesLeft: left });
      }
      this.fail(e, io);
    } finally {
      shared.fill(0);
    }
  }

  /**
   * makeCredential (§6.1) for a non-discoverable ES256 credential with hmac-secret; one touch.
   * Returns the raw attestation object parts for the enrolment checks.
   */
  async makeCredential(
    rpId: string,
    clientDataHash: Uint8Array,
    token: Uint8Array | null,
    io: Interaction,
  ): Promise<{ fmt: string; authDataRaw: Uint8Array; authData: AuthData; attStmt: CborMap }> {
    const params = new Map<number, CborValue>([
      [1, clientDataHash],
      [2, new Map([['id', rpId], ['name', rpId]])],
      [3, new Map<string, CborValue>([['id', randomBytes(16)], ['name', 'backupctl'], ['displayName', 'backupctl']])],
      [4, [new Map<string, CborValue>([['alg', -7], ['type', 'public-key']])]],
      [6, new Map([['hmac-secret', true]])],
      [7, new Map([['rk', false]])],
    ]);
    if (token) {
      params.set(8, this.pinProtocol.authenticate(token, clientDataHash));
      params.set(9, this.pinProtocol.version);
    }
    let r: CborMap | null;
    try {
      r = await this.call(CTAP_CMD.makeCredential, params, io, true);
    } catch (e) {
      if (e instanceof CtapError && e.status === STATUS.PUAT_REQUIRED) {
        throw new BackupctlError(Exit.refused, `the security key ${this.name} requires its PIN to create a credential: enrol with --uv preferred or required`);
      }
      this.fail(e, io);
    }
    const att = asMap(r ?? undefined, 'makeCredential reply');
    const authDataRaw = asBytes(att.get(2), 'authData');
    return { fmt: asText(att.get(1), 'fmt'), authDataRaw, authData: parseAuthData(authDataRaw), attStmt: asMap(att.get(3), 'attStmt') };
  }

  /**
   * The no-touch "pre-flight" (notes "Several keys plugged in"): getAssertion with up:false
   * and no extensions tells whether this key holds one of `credentialIds` for `rpId`. Returns
   * the matching id or null (NO_CREDENTIALS). The allowList is split to the key's maximum.
   */
  async findCredential(rpId: string, credentialIds: Uint8Array[], io: Interaction): Promise<Uint8Array | null> {
    const per = Math.max(1, this.info.maxCredentialCountInList);
    for (let i = 0; i < credentialIds.length; i += per) {
      const batch = credentialIds.slice(i, i + per).filter((id) => !this.info.maxCredentialIdLength || id.length <= this.info.maxCredentialIdLength);
      if (batch.length === 0) continue;
      const params = new Map<number, CborValue>([
        [1, rpId],
        [2, randomBytes(32)],
        [3, batch.map((id) => new Map<string, CborValue>([['id', id], ['type', 'public-key']]))],
        [5, new Map([['up', false]])],
      ]);
      try {
        const r = await this.call(CTAP_CMD.getAssertion, params, io);
        const cred = asMap(r?.get(1), 'credential');
        return asBytes(cred.get('id'), 'credential id');
      } catch (e) {
        if (e instanceof CtapError && e.status === STATUS.NO_CREDENTIALS) continue;
        this.fail(e, io);
      }
    }
    return null;
  }

  /**
   * getAssertion with hmac-secret (§12.5): one touch; with `readPin`, a PIN token makes it a UV
   * assertion. Returns the decrypted 32-byte output and the authData flags (the caller checks UV).
   */
  async hmacSecret(
    rpId: string,
    credentialId: Uint8Array,
    salt: Uint8Array,
    readPin: PinReader | null,
    io: Interaction,
  ): Promise<{ output: Uint8Array; flags: number }> {
    if (salt.length !== 32) throw new Error('hmac-secret salt must be 32 bytes');
    const proto = this.pinProtocol;
    // The PIN token first: it takes its own key agreement, and a wrong PIN rotates the key's.
    const token = readPin ? await this.pinToken(readPin, PERMISSION.getAssertion, rpId, io) : null;
    const { platformKey, shared } = await this.keyAgreement(io).catch((e) => this.fail(e, io));
    const cdh = randomBytes(32);
    const saltEnc = proto.encrypt(shared, salt);
    const params = new Map<number, CborValue>([
      [1, rpId],
      [2, cdh],
      [3, [new Map<string, CborValue>([['id', credentialId], ['type', 'public-key']])]],
      [4, new Map([['hmac-secret', new Map<number, CborValue>([[1, platformKey], [2, saltEnc], [3, proto.authenticate(shared, saltEnc)], [4, proto.version]])]])],
      [5, new Map([['up', true]])],
    ]);
    if (token) {
      params.set(6, proto.authenticate(token, cdh));
      params.set(7, proto.version);
      token.fill(0);
    }
    try {
      let r: CborMap | null;
      try {
        r = await this.call(CTAP_CMD.getAssertion, params, io, true);
      } catch (e) {
        if (e instanceof CtapError && e.status === STATUS.PUAT_REQUIRED) {
          throw new BackupctlError(Exit.noKey, `the security key ${this.name} now insists on PIN/UV, but this credential was enrolled without it: its hmac-secret output would differ (UV mismatch); unlock with your recovery code`);
        }
        this.fail(e, io);
      }
      const authData = parseAuthData(asBytes(r?.get(2), 'authData'));
      const enc = authData.extensions?.get('hmac-secret');
      if (!(enc instanceof Uint8Array)) throw new BackupctlError(Exit.unavailable, `the security key ${this.name} returned no hmac-secret output`);
      const output = proto.decrypt(shared, enc);
      if (output.length !== 32) throw new BackupctlError(Exit.unavailable, `the security key ${this.name} returned a ${output.length}-byte hmac-secret output`);
      return { output, flags: authData.flags };
    } finally {
      shared.fill(0);
    }
  }

  /**
   * Wait for a touch on this key (authenticatorSelection, §6.9). Keys older than 2.1 answer
   * INVALID_COMMAND; their fallback is makeCredential with a zero-length pinUvAuthParam,
   * which waits for a touch and then fails with a PIN error — meaning "this one was touched".
   */
  async waitForTouch(io: Interaction): Promise<void> {
    try {
      await this.call(CTAP_CMD.selection, null, io, true);
      return;
    } catch (e) {
      if (!(e instanceof CtapError) || e.status !== STATUS.INVALID_COMMAND) this.fail(e, io);
    }
    const params = new Map<number, CborValue>([
      [1, randomBytes(32)],
      [2, new Map([['id', '.dummy']])],
      [3, new Map<string, CborValue>([['id', Uint8Array.of(1)], ['name', 'dummy']])],
      [4, [new Map<string, CborValue>([['alg', -7], ['type', 'public-key']])]],
      [8, new Uint8Array(0)],
      [9, 1],
    ]);
    try {
      await this.call(CTAP_CMD.makeCredential, params, io, true);
    } catch (e) {
      if (e instanceof CtapError && (e.status === STATUS.PIN_INVALID || e.status === STATUS.PIN_NOT_SET)) return;
      this.fail(e, io);
    }
  }

  /** Cancel whatever this key is waiting for (the other keys once one was touched). */
  async cancel(): Promise<void> {
    await this.ctap.channel.cancel();
  }
}

function asCount(v: CborValue | undefined, what: string): number {
  if (typeof v !== 'number') throw new BackupctlError(Exit.unavailable, `${what}: the key sent no number`);
  return v;
}

export const uvFlag = (flags: number) => (flags & FLAG.UV) !== 0;

/** Run a conversation with keys; a reply that does not parse becomes one clear line (exit 7). */
export async function talking<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CborError) throw new BackupctlError(Exit.unavailable, `the security key sent a reply backupctl cannot parse (${e.message}); unplug it, plug it back in and try again`);
    throw e;
  }
}

/** `--device` / BACKUPCTL_FIDO2_DEVICE: a udp:// simulator address or a HID path. */
async function openSpec(spec: string, signal: AbortSignal): Promise<Fido2Device> {
  if (/^udp:/i.test(spec)) return Fido2Device.open(await openUdp(spec), signal);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) throw usageError(`--device: unsupported address "${spec}" (use a hidraw path or udp://HOST:PORT)`);
  return Fido2Device.open(await openHid(spec), signal);
}

/**
 * The keys to talk to: the named one, or every FIDO2 HID device plugged in (never a UDP
 * simulator: those are used only when named). No key at all is Exit.unavailable.
 */
export async function openDevices(spec: string | undefined, signal: AbortSignal): Promise<Fido2Device[]> {
  if (spec) return [await openSpec(spec, signal)];
  const found = await listHidDevices();
  if (found.length === 0) {
    throw new BackupctlError(Exit.unavailable, 'no FIDO2 security key found: plug one in (or name it with --device), then try again');
  }
  const devices: Fido2Device[] = [];
  const errors: BackupctlError[] = [];
  for (const d of found) {
    try {
      devices.push(await Fido2Device.open(await openHid(d.path, `${d.manufacturer} ${d.product}`), signal));
    } catch (e) {
      if (!(e instanceof BackupctlError)) throw e;
      errors.push(e);
    }
  }
  if (devices.length === 0) throw errors[0]!;
  return devices;
}

/** With several keys, the one the user touches (the others are cancelled and closed). */
export async function chooseByTouch(devices: Fido2Device[], io: Interaction): Promise<Fido2Device> {
  if (devices.length === 1) return devices[0]!;
  io.notify(`${devices.length} security keys found: touch the one to use`);
  const ac = new AbortController();
  const onAbort = () => ac.abort(io.signal.reason);
  io.signal.addEventListener('abort', onAbort, { once: true });
  const attempts = devices.map(async (d) => {
    await d.waitForTouch({ signal: ac.signal, notify: () => {} });
    return d;
  });
  try {
    const winner = await Promise.any(attempts);
    // The others are cancelled (CANCEL sent by their pending request) before being closed.
    ac.abort(new Error('another key was touched'));
    await Promise.allSettled(attempts);
    await Promise.all(devices.filter((d) => d !== winner).map(async (d) => d.close()));
    return winner;
  } catch (e) {
    throw io.signal.aborted ? io.signal.reason : (e as AggregateError).errors?.[0] ?? e;
  } finally {
    io.signal.removeEventListener('abort', onAbort);
  }
}

