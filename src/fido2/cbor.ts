// The CBOR subset CTAP2 uses (CTAP 2.1 §8 "Message Encoding"): unsigned/negative integers,
// byte and text strings, arrays, maps, booleans, null. Encoding is CTAP2-canonical (shortest
// heads, map keys sorted by their encoded bytes, RFC 7049 §3.9); decoding is strict: no
// indefinite lengths, no non-shortest heads, no duplicate map keys, no floats/tags, no trailing
// bytes — a malformed reply is reported as such instead of being half-understood.

export type CborValue = number | bigint | string | boolean | null | Uint8Array | CborValue[] | CborMap;
export type CborMap = Map<number | string, CborValue>;

/** Malformed data from the key: bad CBOR, or a structure (authData, COSE key, ciphertext) that does not parse. */
export class CborError extends Error {}

function head(major: number, n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new CborError(`cannot encode length/value ${n}`);
  const m = major << 5;
  if (n < 24) return Uint8Array.of(m | n);
  if (n < 0x100) return Uint8Array.of(m | 24, n);
  if (n < 0x10000) return Uint8Array.of(m | 25, n >> 8, n & 0xff);
  if (n < 0x100000000) return Uint8Array.of(m | 26, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
  const out = new Uint8Array(9);
  out[0] = m | 27;
  new DataView(out.buffer).setBigUint64(1, BigInt(n));
  return out;
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  // CTAP2 canonical order: shorter encoding first, then bytewise (CTAP 2.1 §8.1.1 bullet 4).
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return 0;
}

function encodeParts(v: CborValue, out: Uint8Array[]): void {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new CborError(`cannot encode non-integer number ${v}`);
    out.push(v >= 0 ? head(0, v) : head(1, -1 - v));
  } else if (typeof v === 'bigint') {
    throw new CborError('bigint values are not used by CTAP2');
  } else if (typeof v === 'string') {
    const b = new TextEncoder().encode(v);
    out.push(head(3, b.length), b);
  } else if (typeof v === 'boolean') {
    out.push(Uint8Array.of(v ? 0xf5 : 0xf4));
  } else if (v === null) {
    out.push(Uint8Array.of(0xf6));
  } else if (v instanceof Uint8Array) {
    out.push(head(2, v.length), v);
  } else if (Array.isArray(v)) {
    out.push(head(4, v.length));
    for (const item of v) encodeParts(item, out);
  } else if (v instanceof Map) {
    const entries = [...v.entries()].map(([k, val]) => [encode(k), encode(val)] as const);
    entries.sort((x, y) => compareBytes(x[0], y[0]));
    out.push(head(5, entries.length));
    for (const [k, val] of entries) out.push(k, val);
  } else {
    throw new CborError('unsupported value');
  }
}

export function encode(v: CborValue): Uint8Array {
  const parts: Uint8Array[] = [];
  encodeParts(v, parts);
  const len = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(len);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

const MAX_DEPTH = 16;

class Reader {
  pos = 0;
  constructor(readonly buf: Uint8Array) {}

  byte(): number {
    if (this.pos >= this.buf.length) throw new CborError('truncated CBOR');
    return this.buf[this.pos++]!;
  }

  take(n: number): Uint8Array {
    if (n > this.buf.length - this.pos) throw new CborError('truncated CBOR');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** The argument of a head; rejects indefinite lengths and non-shortest forms. */
  arg(info: number): number | bigint {
    if (info < 24) return info;
    let n: number | bigint;
    let min: number | bigint;
    if (info === 24) [n, min] = [this.byte(), 24];
    else if (info === 25) [n, min] = [(this.byte() << 8) | this.byte(), 0x100];
    else if (info === 26) [n, min] = [new DataView(this.take(4).slice().buffer).getUint32(0), 0x10000];
    else if (info === 27) [n, min] = [new DataView(this.take(8).slice().buffer).getBigUint64(0), 0x100000000n];
    else throw new CborError(info === 31 ? 'indefinite-length CBOR is not allowed' : 'reserved CBOR head');
    if (n < min) throw new CborError('non-shortest CBOR integer encoding');
    if (typeof n === 'bigint' && n <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(n);
    return n;
  }

  length(info: number): number {
    const n = this.arg(info);
    if (typeof n === 'bigint' || n > this.buf.length) throw new CborError('CBOR length out of range');
    return n;
  }

  item(depth: number): CborValue {
    if (depth > MAX_DEPTH) throw new CborError('CBOR nested too deeply');
    const ib = this.byte();
    const major = ib >> 5;
    const info = ib & 0x1f;
    switch (major) {
      case 0:
        return this.arg(info);
      case 1: {
        const n = this.arg(info);
        return typeof n === 'bigint' ? -1n - n : -1 - n;
      }
      case 2:
        return this.take(this.length(info)).slice();
      case 3: {
        const bytes = this.take(this.length(info));
        try {
          return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
        } catch {
          throw new CborError('invalid UTF-8 in CBOR text string');
        }
      }
      case 4: {
        const n = this.length(info);
        const arr: CborValue[] = [];
        for (let i = 0; i < n; i++) arr.push(this.item(depth + 1));
        return arr;
      }
      case 5: {
        const n = this.length(info);
        const map: CborMap = new Map();
        for (let i = 0; i < n; i++) {
          const k = this.item(depth + 1);
          if (typeof k !== 'number' && typeof k !== 'string') throw new CborError('CBOR map key must be an integer or text');
          if (map.has(k)) throw new CborError(`duplicate CBOR map key ${String(k)}`);
          map.set(k, this.item(depth + 1));
        }
        return map;
      }
      case 7:
        if (ib === 0xf4) return false;
        if (ib === 0xf5) return true;
        if (ib === 0xf6) return null;
        throw new CborError(`unsupported CBOR simple/float value 0x${ib.toString(16)}`);
      default:
        throw new CborError('CBOR tags are not used by CTAP2');
    }
  }
}

/** Decode one item at the start of `buf`; returns it and how many bytes it took. */
export function decodeFirst(buf: Uint8Array): { value: CborValue; length: number } {
  const r = new Reader(buf);
  const value = r.item(0);
  return { value, length: r.pos };
}

/** Decode exactly one item; trailing bytes are an error. */
export function decode(buf: Uint8Array): CborValue {
  const { value, length } = decodeFirst(buf);
  if (length !== buf.length) throw new CborError(`${buf.length - length} trailing bytes after CBOR item`);
  return value;
}

// Typed accessors for reply maps: a wrong type is a protocol error, not a crash later on.
export function asMap(v: CborValue | undefined, what: string): CborMap {
  if (!(v instanceof Map)) throw new CborError(`${what}: expected a CBOR map`);
  return v;
}
export function asBytes(v: CborValue | undefined, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw new CborError(`${what}: expected a byte string`);
  return v;
}
export function asInt(v: CborValue | undefined, what: string): number {
  if (typeof v !== 'number') throw new CborError(`${what}: expected an integer`);
  return v;
}
export function asText(v: CborValue | undefined, what: string): string {
  if (typeof v !== 'string') throw new CborError(`${what}: expected a text string`);
  return v;
}
export function asBool(v: CborValue | undefined, what: string): boolean {
  if (typeof v !== 'boolean') throw new CborError(`${what}: expected a boolean`);
  return v;
}
export function asArray(v: CborValue | undefined, what: string): CborValue[] {
  if (!Array.isArray(v)) throw new CborError(`${what}: expected an array`);
  return v;
}
