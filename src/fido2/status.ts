// CTAP2 status codes (CTAP 2.1 §8.2) the client meets, with the words users see.

export const STATUS = {
  OK: 0x00,
  INVALID_COMMAND: 0x01,
  INVALID_PARAMETER: 0x02,
  INVALID_LENGTH: 0x03,
  MISSING_PARAMETER: 0x14,
  UNSUPPORTED_EXTENSION: 0x16,
  UNSUPPORTED_ALGORITHM: 0x26,
  OPERATION_DENIED: 0x27,
  UNSUPPORTED_OPTION: 0x2b,
  KEEPALIVE_CANCEL: 0x2d,
  NO_CREDENTIALS: 0x2e,
  USER_ACTION_TIMEOUT: 0x2f,
  PIN_INVALID: 0x31,
  PIN_BLOCKED: 0x32,
  PIN_AUTH_INVALID: 0x33,
  PIN_AUTH_BLOCKED: 0x34,
  PIN_NOT_SET: 0x35,
  PUAT_REQUIRED: 0x36,
  PIN_POLICY_VIOLATION: 0x37,
  ACTION_TIMEOUT: 0x3a,
  UV_BLOCKED: 0x3c,
  INVALID_SUBCOMMAND: 0x3e,
  UV_INVALID: 0x3f,
  UNAUTHORIZED_PERMISSION: 0x40,
} as const;

const NAMES: Record<number, string> = {
  0x01: 'invalid command',
  0x02: 'invalid parameter',
  0x03: 'invalid length',
  0x11: 'CBOR unexpected type',
  0x12: 'invalid CBOR',
  0x14: 'missing parameter',
  0x16: 'unsupported extension',
  0x26: 'unsupported algorithm',
  0x27: 'operation denied',
  0x28: 'key store full',
  0x2b: 'unsupported option',
  0x2d: 'cancelled',
  0x2e: 'no credentials',
  0x2f: 'user action timeout',
  0x31: 'PIN invalid',
  0x32: 'PIN blocked',
  0x33: 'PIN auth invalid',
  0x34: 'PIN auth blocked',
  0x35: 'PIN not set',
  0x36: 'PIN/UV token required',
  0x37: 'PIN policy violation',
  0x3a: 'action timeout',
  0x3c: 'UV blocked',
  0x3e: 'invalid subcommand',
  0x3f: 'UV invalid',
  0x40: 'unauthorized permission',
};

export const statusName = (s: number) => `${NAMES[s] ?? 'error'} (0x${s.toString(16).padStart(2, '0')})`;

/** A non-zero CTAP2 status from the key; callers turn the ones they expect into user messages. */
export class CtapError extends Error {
  constructor(readonly status: number, command: string) {
    super(`${command} failed: ${statusName(status)}`);
  }
}
