// What is compared between two messages of one item to tell whether they are the same version:
// the bytes without the X-Pivot-Export-Id header field, the only part of a message that differs
// when the same event comes again in an export with another id. Shared by the Maildir sink (its
// `.C<hash>` names are made of it: this must not change), the Graph sink's stamp, the IMAP sink's
// X-Pivot-Version field and the readers verify uses.
import { createHash } from 'node:crypto';
import { sha256Hex } from '../../hash.js';

/** Where a message's header ends (its blank line; the whole message when it has none). */
function headerEnd(message: Buffer): number {
  let end = message.indexOf('\r\n\r\n');
  if (end < 0) end = message.indexOf('\n\n');
  return end < 0 ? message.length : end;
}

const FIELD_NAME = Buffer.from('x-pivot-export-id:');

/** Whether `message` at `at` holds FIELD_NAME, its letters in either case (as the `i` flag of a RegExp without `u` matches ASCII). */
function fieldNameAt(message: Buffer, at: number): boolean {
  for (let i = 0; i < FIELD_NAME.length; i++) {
    const want = FIELD_NAME[i]!;
    const got = message[at + i]!;
    if (got !== want && !(want >= 0x61 && want <= 0x7a && got === want - 0x20)) return false;
  }
  return true;
}

/**
 * The first X-Pivot-Export-Id field of the header (which ends at `end`), as [start, stop): from its
 * name to the line break ending its last line (the break kept), continuation lines included. The
 * bytes the RegExp `(^|\n)x-pivot-export-id:[^\n]*(?:\n[ \t][^\n]*)*` (case-insensitive), replaced by
 * its `$1`, took from the header read as latin1; found in the bytes, with no string of the header
 * made (this runs for every item).
 */
function exportIdField(message: Buffer, end: number): [number, number] | undefined {
  let start = 0;
  while (start + FIELD_NAME.length <= end) {
    if (fieldNameAt(message, start)) {
      let stop = start;
      do {
        stop = message.indexOf(0x0a, stop + 1);
        if (stop < 0 || stop > end) stop = end;
      } while (stop + 1 < end && (message[stop + 1] === 0x20 || message[stop + 1] === 0x09));
      return [start, stop];
    }
    const lineEnd = message.indexOf(0x0a, start);
    if (lineEnd < 0 || lineEnd >= end) return undefined;
    start = lineEnd + 1;
  }
  return undefined;
}

/** The message's bytes without its X-Pivot-Export-Id field (the same buffer when it has none). */
export function withoutExportId(message: Buffer): Buffer {
  const field = exportIdField(message, headerEnd(message));
  return field ? Buffer.concat([message.subarray(0, field[0]), message.subarray(field[1])]) : message;
}

/** The value of a message's X-Pivot-Export-Id field (its first line), or undefined when it has none. */
export function exportIdOf(message: Buffer): string | undefined {
  const field = exportIdField(message, headerEnd(message));
  return field && /^[ \t]*([^\r\n]*)/.exec(message.toString('latin1', field[0] + FIELD_NAME.length, field[1]))![1]!.trimEnd();
}

/** Versions worked out, by message buffer: an item's copies (one buffer) are hashed once for the ledger and the sink alike. */
const versions = new WeakMap<Buffer, string>();

/** Which version of its item a message is: the sha256 (hex) of its bytes without its X-Pivot-Export-Id field. */
export function messageVersion(message: Buffer): string {
  let version = versions.get(message);
  if (version === undefined) {
    const field = exportIdField(message, headerEnd(message));
    version = field ? createHash('sha256').update(message.subarray(0, field[0])).update(message.subarray(field[1])).digest('hex') : sha256Hex(message);
    versions.set(message, version);
  }
  return version;
}
