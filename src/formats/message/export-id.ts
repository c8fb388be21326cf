// What is compared between two messages of one item to tell whether they are the same version:
// the bytes without the X-Pivot-Export-Id header field, the only part of a message that differs
// when the same event comes again in an export with another id. Shared by the Maildir sink (its
// `.C<hash>` names are made of it: this must not change), the Graph sink's stamp, the IMAP sink's
// X-Pivot-Version field and the readers verify uses.
import { sha256Hex } from '../../hash.js';

/** Where a message's header ends (its blank line; the whole message when it has none). */
function headerEnd(message: Buffer): number {
  let end = message.indexOf('\r\n\r\n');
  if (end < 0) end = message.indexOf('\n\n');
  return end < 0 ? message.length : end;
}

/** The message's bytes without its X-Pivot-Export-Id field (the same buffer when it has none). */
export function withoutExportId(message: Buffer): Buffer {
  const end = headerEnd(message);
  const head = message.toString('latin1', 0, end);
  const without = head.replace(/(^|\n)x-pivot-export-id:[^\n]*(?:\n[ \t][^\n]*)*/i, '$1');
  return without.length === head.length ? message : Buffer.concat([Buffer.from(without, 'latin1'), message.subarray(end)]);
}

/** The value of a message's X-Pivot-Export-Id field (its first line), or undefined when it has none. */
export function exportIdOf(message: Buffer): string | undefined {
  return /(?:^|\n)x-pivot-export-id:[ \t]*([^\r\n]*)/i.exec(message.toString('latin1', 0, headerEnd(message)))?.[1]?.trimEnd();
}

/** Versions worked out, by message buffer: an item's copies (one buffer) are hashed once for the ledger and the sink alike. */
const versions = new WeakMap<Buffer, string>();

/** Which version of its item a message is: the sha256 (hex) of its bytes without its X-Pivot-Export-Id field. */
export function messageVersion(message: Buffer): string {
  let version = versions.get(message);
  if (version === undefined) versions.set(message, (version = sha256Hex(withoutExportId(message))));
  return version;
}
