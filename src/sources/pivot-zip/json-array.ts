import { crc32 } from 'node:zlib';

const SPACE = 0x20, TAB = 0x09, LF = 0x0a, CR = 0x0d;
const OPEN_ARRAY = 0x5b, CLOSE_ARRAY = 0x5d, OPEN_OBJECT = 0x7b, CLOSE_OBJECT = 0x7d;
const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c;
const BOM = [0xef, 0xbb, 0xbf] as const;

// Where the scanner stands between elements (numbers: the hot loop compares small integers).
const START = 0; // before `[` (a UTF-8 BOM and whitespace may come first)
const FIRST = 1; // after `[`: an element or `]`
const VALUE = 2; // after `,`: an element
const NEXT = 3; // after an element: `,` or `]`
const ELEMENT = 4; // inside an element
const END = 5; // after `]`: whitespace only

const isSpace = (b: number) => b === SPACE || b === LF || b === CR || b === TAB;

/**
 * Called for each element as it ends, in order: its bytes are `bytes[from, to)`, a view of the
 * chunk (or of a copy, for an element over several chunks) valid only during the call; `bytes` is
 * undefined for an element over the cap, `crc` then the CRC-32 of its bytes. `offset` and `length`
 * place it in the file.
 */
export type ElementVisitor = (bytes: Buffer | undefined, from: number, to: number, index: number, offset: number, length: number, crc: number) => void;

/** The array itself is broken (not an array, cut short, garbage after it): the file cannot be read. */
export class JsonArrayError extends Error {}

/**
 * Finds the bounds of each element of a top-level JSON array in a byte stream, without parsing
 * it: strings (with escapes) and nesting are tracked with a flag and a counter, never recursion,
 * so any depth is fine. Feed it the file's chunks in order (`scan`), then call `end`.
 *
 * Each element is visited with its exact bytes (for JSON.parse, and to keep them as they
 * were), unless it is longer than `maxElementBytes`: then only its bounds, and its bytes are
 * never held, however long it is. An element that is not valid JSON inside its bounds (say
 * `{"id":"x", oops}`) is the caller's to report; a broken array (not an array, an unterminated
 * string or array when the file ends, anything but whitespace after the closing `]`) throws
 * JsonArrayError, naming the byte offset.
 *
 * The scan is synchronous and per chunk, so the per-byte loop is one plain function, and its
 * caller pays one await per chunk rather than one per element.
 */
export class JsonArrayScanner {
  private state = START;
  /** Offset in the file of the next chunk's first byte. */
  private position = 0;
  private bomAt = 0;
  private index = 0;
  // The element being scanned.
  private start = 0;
  private depth = 0;
  private inString = false;
  /** The next byte is escaped (a backslash ended the previous chunk). */
  private escaped = false;
  /** A number, true, false, null (or garbage): it ends at whitespace, `,` or `]`. */
  private primitive = false;
  private parts: Buffer[] = [];
  private held = 0;
  private tooLarge = false;
  /** CRC-32 of the element's bytes so far, once it is over the cap. */
  private crc = 0;

  constructor(private readonly maxElementBytes: number) {}

  /**
   * Scans the next chunk of the file, calling `visit` for each element that ends in it: no object
   * is made for an element (the checking pass reads millions, and their garbage was its cost).
   */
  scan(chunk: Buffer, visit: ElementVisitor): void {
    const n = chunk.length;
    let i = 0;
    // Where the current element's bytes start in this chunk (it may have begun in an earlier one).
    let from = 0;
    // The current element's bytes up to the chunk's end are taken (false when it starts on the last byte).
    let takenToEnd = true;
    while (i < n) {
      if (this.state === ELEMENT) {
        // The element's end, or the chunk's: scanned with locals, written back once.
        let depth = this.depth;
        let inString = this.inString;
        let escaped = this.escaped;
        const primitive = this.primitive;
        let end = -1;
        for (; i < n; i++) {
          if (inString) {
            // Straight to the next quote (most of a chat event is string); it closes the string
            // unless an odd run of backslashes stands just before it.
            if (escaped) {
              escaped = false; // this byte is escaped
              continue;
            }
            const quote = chunk.indexOf(QUOTE, i);
            let k = (quote < 0 ? n : quote) - 1;
            while (k >= i && chunk[k] === BACKSLASH) k--;
            const oddRun = ((quote < 0 ? n : quote) - 1 - k) % 2 === 1;
            if (quote < 0) {
              // The string goes on in the next chunk; an odd run of backslashes escapes its first byte.
              escaped = oddRun;
              i = n - 1;
              continue;
            }
            i = quote;
            if (oddRun) continue; // an escaped quote
            inString = false;
            if (depth === 0 && !primitive) {
              end = ++i;
              break;
            }
            continue;
          }
          const b = chunk[i]!;
          if (primitive) {
            if (b === COMMA || b === CLOSE_ARRAY || isSpace(b)) {
              end = i; // the delimiter belongs to the array
              break;
            }
          } else if (b === QUOTE) inString = true;
          else if (b === OPEN_OBJECT || b === OPEN_ARRAY) depth++;
          else if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) {
            if (--depth === 0) {
              end = ++i;
              break;
            }
          }
        }
        this.depth = depth;
        this.inString = inString;
        this.escaped = escaped;
        if (end < 0) {
          this.take(chunk, from, n);
          takenToEnd = true;
          break;
        }
        this.finish(chunk, from, end, visit);
        continue;
      }
      const b = chunk[i]!;
      if (this.state === START && this.position + i === this.bomAt && this.bomAt < BOM.length) {
        if (b === BOM[this.bomAt]) {
          this.bomAt++;
          i++;
          continue;
        }
        if (this.bomAt > 0) throw this.fail(this.position + i, 'not a JSON array: a broken UTF-8 byte order mark', b);
        this.bomAt = BOM.length;
      }
      i++;
      if (isSpace(b)) continue;
      const at = this.position + i - 1;
      switch (this.state) {
        case START:
          if (b !== OPEN_ARRAY) throw this.fail(at, 'not a JSON array: expected [', b);
          this.state = FIRST;
          break;
        case NEXT:
          if (b === COMMA) this.state = VALUE;
          else if (b === CLOSE_ARRAY) this.state = END;
          else throw this.fail(at, 'expected , or ] after an element', b);
          break;
        case FIRST:
        case VALUE:
          if (b === CLOSE_ARRAY) {
            if (this.state === VALUE) throw this.fail(at, 'a , is followed by ]');
            this.state = END;
            break;
          }
          if (b === COMMA) throw this.fail(at, 'an element is missing before ,');
          this.state = ELEMENT;
          this.start = at;
          from = i - 1;
          takenToEnd = false;
          this.depth = b === OPEN_OBJECT || b === OPEN_ARRAY ? 1 : 0;
          this.inString = b === QUOTE;
          this.primitive = this.depth === 0 && !this.inString;
          this.escaped = false;
          break;
        default:
          throw this.fail(at, 'more after the closing ]', b);
      }
    }
    if (this.state === ELEMENT && !takenToEnd) this.take(chunk, from, n);
    this.position += n;
  }

  /** The file has ended: throws unless the array was closed. */
  end(): void {
    if (this.state !== END) {
      const why = this.state === ELEMENT && this.inString ? 'a string is not closed' : this.state === START ? 'no [' : 'the array is not closed';
      throw this.fail(this.position, `${why}: the file ends`);
    }
  }

  /** Bytes [from, to) of the chunk belong to the current element: held unless it is over the cap. */
  private take(chunk: Buffer, from: number, to: number): void {
    if (to <= from) return;
    if (this.tooLarge) {
      this.crc = crc32(chunk.subarray(from, to), this.crc);
      return;
    }
    this.held += to - from;
    this.parts.push(chunk.subarray(from, to));
    if (this.held > this.maxElementBytes) {
      // Over the cap: let go of what is held, keep only a checksum of the bytes from here on.
      this.tooLarge = true;
      this.crc = 0;
      for (const part of this.parts) this.crc = crc32(part, this.crc);
      this.parts = [];
    }
  }

  /** The current element ends at `end` of the chunk, whose bytes from `from` are its last: visited. */
  private finish(chunk: Buffer, from: number, end: number, visit: ElementVisitor): void {
    const index = this.index++;
    const offset = this.start;
    const length = this.position + end - offset;
    if (this.parts.length === 0 && !this.tooLarge && end - from <= this.maxElementBytes) {
      // All in this chunk (the usual case): a view of it, nothing made.
      visit(chunk, from, end, index, offset, length, 0);
    } else {
      this.take(chunk, from, end);
      if (this.tooLarge) visit(undefined, 0, 0, index, offset, length, this.crc >>> 0);
      else {
        const bytes = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.held);
        visit(bytes, 0, bytes.length, index, offset, length, 0);
      }
    }
    this.parts = [];
    this.held = 0;
    this.tooLarge = false;
    this.crc = 0;
    this.state = NEXT;
    this.primitive = false;
    this.inString = false;
    this.escaped = false;
    this.depth = 0;
  }

  /** `found`: the byte that breaks it, named (a NUL or a 0xFE/0xFF byte order mark is a UTF-16 file's, never UTF-8 JSON's). */
  private fail(at: number, why: string, found?: number): JsonArrayError {
    const byte = found === undefined ? '' : `, found 0x${found.toString(16).padStart(2, '0')}${found === 0 || found >= 0xfe ? ' (UTF-16? JSON must be UTF-8)' : ''}`;
    return new JsonArrayError(`${why}${byte} at byte ${at}`);
  }
}
