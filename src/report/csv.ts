/**
 * `report --csv`: the item list (like Purview's "Download log"), one line per item or per
 * (mailbox, item), as RFC 4180 CSV: a header row, CRLF line ends, a field in double quotes when
 * it holds a comma, a double quote, CR or LF (a quote inside is doubled), UTF-8.
 *
 * Formula injection (CSV injection, OWASP): a spreadsheet runs a cell that starts with `=`, `+`,
 * `-` or `@` (and, in some, with TAB or CR) as a formula. Item ids, mailboxes and reasons come
 * from archives we do not trust, so a field that starts with one of those characters is written
 * with a leading single quote (`'`) and quoted, as OWASP advises: `=HYPERLINK(...)` is written
 * `"'=HYPERLINK(...)"`, which a spreadsheet shows as text. A reader that wants the exact value
 * drops that one quote from a field whose second character is one of `= + - @ TAB CR`. Every
 * other value is written exactly (no escaping of bidi or control characters: the HTML report
 * shows those visibly).
 */
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import type { ItemLine } from '../ledger/account.js';

/** The columns, in order; the header row names them so. */
export const ITEM_CSV_COLUMNS = [
  'itemId',
  'conversationId',
  'mailbox',
  'outcome',
  'reason',
  'messageId',
  'sentAt',
  'size',
  'sha256',
  'location',
  'kept',
  'runId',
  'at',
] as const satisfies readonly (keyof ItemLine)[];

// A leading quote is escaped the same way, so the one added can always be told from one the value had.
const FORMULA_START = /^[=+\-@\t\r']/;
const NEEDS_QUOTES = /[",\r\n]/;

/** One field: formula-safe, and quoted when RFC 4180 requires it. */
export function csvField(value: unknown): string {
  if (value === undefined || value === null) return '';
  let s = String(value);
  if (FORMULA_START.test(s)) return `"'${s.replace(/"/g, '""')}"`;
  if (NEEDS_QUOTES.test(s)) s = `"${s.replace(/"/g, '""')}"`;
  return s;
}

function csvLine(line: ItemLine): string {
  let row = '';
  for (let n = 0; n < ITEM_CSV_COLUMNS.length; n++) {
    if (n > 0) row += ',';
    row += csvField(line[ITEM_CSV_COLUMNS[n]!]);
  }
  return row + '\r\n';
}

export interface ItemsCsvOptions {
  /** Start with a UTF-8 byte order mark (Excel needs one to read UTF-8). Default false. */
  bom?: boolean;
  /** End `out` when done and wait until it has flushed (e.g. a file). Default false (stdout). */
  end?: boolean;
}

/** Waits for 'drain'; rejects when `out` fails or is closed first (it would never drain). */
function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const settle = (err?: Error) => {
      out.off('drain', onDrain);
      out.off('error', onError);
      out.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onError = (err: Error) => settle(err);
    const onClose = () => settle(new Error('the CSV output was closed before the item list was written'));
    out.once('drain', onDrain);
    out.once('error', onError);
    out.once('close', onClose);
  });
}

/** Lines are gathered into chunks of about this many characters before a write. */
const CHUNK = 64 * 1024;

/**
 * Writes the header and one row per line to `out`, waiting for 'drain' whenever `out` is full
 * (so a list of millions of lines is never held in memory). Resolves with the number of rows
 * written (the header not counted); rejects when `out` fails.
 */
export async function writeItemsCsv(lines: AsyncIterable<ItemLine> | Iterable<ItemLine>, out: Writable, options: ItemsCsvOptions = {}): Promise<number> {
  let failure: Error | undefined;
  const onError = (err: Error) => {
    failure ??= err;
  };
  out.on('error', onError);
  try {
    const write = async (chunk: string) => {
      if (failure) throw failure;
      if (!out.write(chunk)) await drained(out);
      if (failure) throw failure;
    };
    let chunk = (options.bom ? '\uFEFF' : '') + ITEM_CSV_COLUMNS.join(',') + '\r\n';
    let rows = 0;
    for await (const line of lines) {
      chunk += csvLine(line);
      rows++;
      if (chunk.length >= CHUNK) {
        await write(chunk);
        chunk = '';
      }
    }
    if (chunk) await write(chunk);
    if (options.end) {
      out.end();
      if (!out.writableFinished) await once(out, 'finish');
    }
    if (failure) throw failure;
    return rows;
  } finally {
    out.off('error', onError);
  }
}
