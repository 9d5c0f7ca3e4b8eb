// Just enough of the protobuf wire format to read WhatsApp's BackupPrefix header: varints,
// length-delimited fields and the two fixed widths. No schema, no generated code: crypt15.ts
// names the few fields it needs. (The test writer encodes independently, so a shared
// misreading cannot make both sides agree.)
// Wire format: https://protobuf.dev/programming-guides/encoding/

export interface Field {
  field: number;
  /** 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 (groups, 3 and 4, are refused). */
  wireType: 0 | 1 | 2 | 5;
  /** varint and fixed values as bigint; length-delimited as the raw bytes. */
  value: bigint | Uint8Array;
}

export class ProtobufError extends Error {}

/** Read one varint at `pos`; returns the value and the position after it. */
export function readVarint(buf: Uint8Array, pos: number): { value: bigint; next: number } {
  let value = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos + i >= buf.length) throw new ProtobufError('varint runs past the end');
    const b = buf[pos + i]!;
    value |= BigInt(b & 0x7f) << BigInt(7 * i);
    if ((b & 0x80) === 0) return { value, next: pos + i + 1 };
  }
  throw new ProtobufError('varint longer than 10 bytes');
}

/** Decode every field of one message, in order (repeated fields appear repeatedly). */
export function decodeMessage(buf: Uint8Array): Field[] {
  const fields: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const key = readVarint(buf, pos);
    pos = key.next;
    const field = Number(key.value >> 3n);
    const wireType = Number(key.value & 7n);
    if (field === 0) throw new ProtobufError('field number 0');
    switch (wireType) {
      case 0: {
        const v = readVarint(buf, pos);
        fields.push({ field, wireType, value: v.value });
        pos = v.next;
        break;
      }
      case 1:
      case 5: {
        const n = wireType === 1 ? 8 : 4;
        if (pos + n > buf.length) throw new ProtobufError(`field ${field} runs past the end`);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[pos + i]!);
        fields.push({ field, wireType, value: v });
        pos += n;
        break;
      }
      case 2: {
        const len = readVarint(buf, pos);
        const end = len.next + Number(len.value);
        if (len.value > BigInt(buf.length) || end > buf.length) throw new ProtobufError(`field ${field} runs past the end`);
        fields.push({ field, wireType, value: buf.subarray(len.next, end) });
        pos = end;
        break;
      }
      default:
        throw new ProtobufError(`unsupported wire type ${wireType} in field ${field}`);
    }
  }
  return fields;
}
