// The WhatsApp "64-digit key" in the forms people actually have it: 64 hex digits typed or saved
// by hand (spaces, dashes, any case, a byte-order mark, a newline), or the 59-byte
// encrypted_backup.key file (a Java-serialised byte[]). Either way, the 32-byte root key.
// See ../shared/notes/whatsapp-crypt15.md "The key".
import { hkdfSync } from 'node:crypto';
import { BackupctlError, Exit } from '../errors.js';

export const ROOT_KEY_LEN = 32;

/** ObjectOutputStream header + class descriptor of byte[] + length 32 (java.io serialisation). */
const JAVA_BYTE_ARRAY_PREFIX = Buffer.from('aced0005757200025b42acf317f8060854e0020000787000000020', 'hex');
export const KEY_FILE_LEN = JAVA_BYTE_ARRAY_PREFIX.length + ROOT_KEY_LEN; // 59

// A mistyped key is a wrong key (exit 4, like a mistyped recovery code): retrying the same text will not help.
const badKey = (msg: string) => new BackupctlError(Exit.noKey, msg);

/** Characters people write between groups of digits. */
const SEPARATORS = /[\s\-_.:,]/u;
const LOOKALIKES: Record<string, string> = { o: '0', O: '0', l: '1', I: '1', i: '1', S: '5', s: '5' };

/**
 * Parse the key as text. Errors say exactly what is wrong: which character is not a hex digit
 * (and where), or how many digits there are instead of 64. The result must be zeroed by the caller.
 */
export function parseLegacyKeyText(text: string): Buffer {
  const digits: string[] = [];
  let pos = 0;
  for (const ch of text.replace(/^\uFEFF/, '')) {
    pos++;
    if (SEPARATORS.test(ch)) continue;
    if (!/^[0-9a-fA-F]$/.test(ch)) {
      const shown = /^[\x21-\x7e]$/.test(ch) ? `'${ch}'` : `U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
      const hint = LOOKALIKES[ch] ? ` (did you mean ${LOOKALIKES[ch]}?)` : '';
      throw badKey(
        `the 64-digit key may contain only the hex digits 0-9 and a-f (spaces and dashes are ignored), but character ${pos} is ${shown}${hint}`,
      );
    }
    digits.push(ch);
  }
  if (digits.length !== 64) {
    const diff = digits.length < 64 ? `${64 - digits.length} missing` : `${digits.length - 64} too many`;
    throw badKey(`the 64-digit key has ${digits.length} hex digits, not 64 (${diff}); check it against the key WhatsApp showed you`);
  }
  return Buffer.from(digits.join(''), 'hex');
}

/**
 * Parse the contents of a key file: WhatsApp's 59-byte encrypted_backup.key when it has the Java
 * byte[] prefix, otherwise text holding the 64 hex digits.
 */
export function parseLegacyKeyFile(bytes: Uint8Array, path: string): Buffer {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.length >= 4 && buf.subarray(0, 4).equals(JAVA_BYTE_ARRAY_PREFIX.subarray(0, 4))) {
    // Starts like a Java serialisation stream: it must be exactly the byte[32] WhatsApp writes.
    if (buf.length !== KEY_FILE_LEN || !buf.subarray(0, JAVA_BYTE_ARRAY_PREFIX.length).equals(JAVA_BYTE_ARRAY_PREFIX)) {
      throw badKey(`${path} looks like a Java-serialised key file but is not WhatsApp's encrypted_backup.key (expected ${KEY_FILE_LEN} bytes holding a 32-byte array, found ${buf.length} bytes)`);
    }
    return Buffer.from(buf.subarray(JAVA_BYTE_ARRAY_PREFIX.length));
  }
  const text = new TextDecoder('utf-8', { fatal: false }).decode(buf);
  try {
    return parseLegacyKeyText(text);
  } catch (err) {
    if (err instanceof BackupctlError) throw badKey(`${path}: ${err.message}`);
    throw err;
  }
}

/** The AES-256-GCM key of a crypt15 backup: HKDF-SHA256(root, salt = empty, "backup encryption"). */
export function backupEncryptionKey(rootKey: Uint8Array): Buffer {
  if (rootKey.length !== ROOT_KEY_LEN) throw new Error('root key must be 32 bytes');
  return Buffer.from(hkdfSync('sha256', rootKey, new Uint8Array(0), 'backup encryption', 32));
}
