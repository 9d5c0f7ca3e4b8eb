// The rule for recipient labels. A label is written in clear into every archive header and shown
// by inspect, so it is one short line of visible text. The CLI applies it to what the user types,
// create to every recipient it writes, and the header parser to every slot it reads (a label
// that breaks it was not written by backupctl; backupctl-format(5) KEY SLOTS).

export const MAX_LABEL = 100;

/**
 * 1 to 100 UTF-16 units, no surrounding blanks, no control (Cc: newlines, escapes), format (Cf:
 * bidi overrides) or lone surrogate (Cs) characters. Typed labels were always held to this (a
 * command line cannot carry a lone surrogate), so no label backupctl was given to write breaks it.
 */
export function isValidLabel(label: string): boolean {
  return label.length > 0 && label.length <= MAX_LABEL && label === label.trim() && !/[\p{Cc}\p{Cf}\p{Cs}]/u.test(label);
}
