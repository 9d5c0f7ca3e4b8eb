// The key-slot layer: the archive format asks Recipients to wrap the file key and Identities to
// unwrap it, and knows nothing else about keys (the age model: Recipient.wrap / Identity.unwrap).
// A new unlock method is a new file in src/keys/ implementing these two interfaces.

/**
 * One key slot as stored in the archive header (JSON, see backupctl-format(5)).
 * Everything here is public: it is readable without a key and must be enough to unlock
 * on a fresh machine that has only the archive and the secret (code or security key).
 */
export interface Slot {
  /** Slot type: "recovery" | "fido2" | unknown types are kept and skipped. */
  type: string;
  /** Human label, e.g. "recovery code 2026-11-22" or "yubikey-blue". */
  label: string;
  /** base64 (no padding) of the 4-byte recipient tag: matches a slot to a config entry. */
  tag: string;
  /** base64 (no padding) of the 32-byte ephemeral X25519 share. */
  share: string;
  /** base64 (no padding) of the 48-byte ChaCha20-Poly1305 wrapped file key. */
  body: string;
  /** Type-specific public parameters (fido2: credential id, salt, rp id, uv, aaguid). */
  params?: Record<string, unknown>;
}

/** Something the file key can be encrypted to without any secret (cron-safe). */
export interface Recipient {
  readonly type: string;
  readonly label: string;
  /** Wrap a 32-byte file key into a fresh slot. */
  wrap(fileKey: Uint8Array): Slot;
}

/** Something that may unlock one of the slots: a recovery code, a security key. */
export interface Identity {
  /** A short description for messages: "recovery code", "security key 'blue'". */
  readonly description: string;
  /**
   * Try to recover the file key from the given slots. Returns null when none of them is
   * for this identity; throws BackupctlError for device problems, wrong PIN, etc.
   * The caller verifies the header MAC with the result (which commits to the file key).
   */
  unwrap(slots: readonly Slot[]): Promise<Uint8Array | null>;
}
