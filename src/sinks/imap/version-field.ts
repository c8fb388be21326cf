// The X-Pivot-Version field the IMAP sink puts first in every message it appends (see SPEC.md,
// "Corrected versions"): which version of its item a message is, read with the header fields the
// presence pass fetches anyway, so that a corrected version of exactly the same size is not taken
// for the one held. Not part of the message built: the reader takes it off before hashing, so
// what verify compares is what the ledger recorded.

/** The field's name, as asked for in a FETCH of header fields. */
export const VERSION_FIELD = 'x-pivot-version';

/** The field as this sink writes it: `digest` is the sha256 (hex) of the message less its X-Pivot-Export-Id field. */
export function versionField(digest: string): Buffer {
  return Buffer.from(`X-Pivot-Version: sha256=${digest}\r\n`, 'latin1');
}

/** The message as appended: the field, then the bytes built. */
export function withVersionField(message: Buffer, digest: string): Buffer {
  return Buffer.concat([versionField(digest), message]);
}

const FIRST_LINE = /^X-Pivot-Version: sha256=[0-9a-f]{64}\r\n/;
/** Our field's length (with its line end): only a first line of exactly our form is ours. */
export const VERSION_FIELD_LENGTH = versionField('0'.repeat(64)).length;

/** The message as built: the bytes without a first line that is our field (the same buffer when there is none). */
export function withoutVersionField(message: Buffer): Buffer {
  return message.length >= VERSION_FIELD_LENGTH && FIRST_LINE.test(message.toString('latin1', 0, VERSION_FIELD_LENGTH)) ? message.subarray(VERSION_FIELD_LENGTH) : message;
}

/**
 * The message as built, for a reader, and its version (`versionOf`, worked out once): without our
 * first-line field only when the field names the rest's version; a field edited since is part of
 * what the store holds (so the message reads as altered), as is a field on bytes it was not made for.
 */
export function asBuilt(message: Buffer, versionOf: (built: Buffer) => string): { built: Buffer; version: string } {
  const built = withoutVersionField(message);
  if (built !== message) {
    const version = versionOf(built);
    if (versionIn(message.subarray(0, VERSION_FIELD_LENGTH)) === version) return { built, version };
  }
  return { built: message, version: versionOf(message) };
}

/** The digest an X-Pivot-Version field names, in header fields a FETCH returned; undefined when there is none of our form. */
export function versionIn(fields: Buffer): string | undefined {
  return /(?:^|\n)x-pivot-version:[ \t]*sha256=([0-9a-f]{64})[ \t]*\r?(?:\n|$)/i.exec(fields.toString('latin1'))?.[1]?.toLowerCase();
}
