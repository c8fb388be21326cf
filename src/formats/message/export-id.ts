// What is compared between two messages of one item to tell whether they are the same version:
// the bytes without the X-Pivot-Export-Id header field, the only part of a message that differs
// when the same event comes again in an export with another id. Shared by the Maildir sink (its
// `.C<hash>` names are made of it: this must not change), the Graph sink's stamp, the IMAP sink's
// X-Pivot-Version field and the readers verify uses.
import { sha256Hex } from '../../hash.js';

/** The message's bytes without its X-Pivot-Export-Id field (the same buffer when it has none). */
export function withoutExportId(message: Buffer): Buffer {
  let end = message.indexOf('\r\n\r\n');
  if (end < 0) end = message.indexOf('\n\n');
  if (end < 0) end = message.length;
  const head = message.toString('latin1', 0, end);
  const without = head.replace(/(^|\n)x-pivot-export-id:[^\n]*(?:\n[ \t][^\n]*)*/i, '$1');
  return without.length === head.length ? message : Buffer.concat([Buffer.from(without, 'latin1'), message.subarray(end)]);
}

/** Which version of its item a message is: the sha256 (hex) of its bytes without its X-Pivot-Export-Id field. */
export function messageVersion(message: Buffer): string {
  return sha256Hex(withoutExportId(message));
}
