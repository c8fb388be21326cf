/** One element of a top-level JSON array: where its bytes stand, and the bytes unless over the cap. */
export interface ArrayElement {
  index: number;
  /** Byte offset of the element's first byte in the file. */
  offset: number;
  length: number;
  /** The element's exact bytes; absent when `length` is over the cap (never held). */
  bytes?: Buffer;
}

const SPACE = 0x20, TAB = 0x09, LF = 0x0a, CR = 0x0d;
const OPEN_ARRAY = 0x5b, CLOSE_ARRAY = 0x5d, OPEN_OBJECT = 0x7b, CLOSE_OBJECT = 0x7d;
const QUOTE = 0x22, BACKSLASH = 0x5c, COMMA = 0x2c;
const BOM = [0xef, 0xbb, 0xbf];

const isSpace = (b: number) => b === SPACE || b === LF || b === CR || b === TAB;

/** The array itself is broken (not an array, cut short, garbage after it): the file cannot be read. */
export class JsonArrayError extends Error {}

/**
 * Finds the bounds of each element of a top-level JSON array in a byte stream, without parsing
 * it: strings (with escapes) and nesting are tracked with counters, never recursion, so any
 * depth is fine. Each element's exact bytes are yielded (for JSON.parse, and to keep them as
 * they were), unless it is longer than `maxElementBytes`: then only its bounds, and it is never
 * held in memory. An element that is not valid JSON inside its bounds is the caller's to report;
 * a broken array throws JsonArrayError.
 */
export async function* scanJsonArray(chunks: AsyncIterable<Buffer>, maxElementBytes: number): AsyncGenerator<ArrayElement> {
  type Phase = 'start' | 'first' | 'value' | 'next' | 'element' | 'end';
  let phase: Phase = 'start';
  let position = 0; // of the current chunk's first byte
  let bomAt = 0;
  let index = 0;
  // The element being scanned.
  let start = 0;
  let depth = 0;
  let inString = false;
  let escaped = false;
  let primitive = false;
  let parts: Buffer[] = [];
  let held = 0;
  let tooLarge = false;

  const fail = (at: number, why: string) => new JsonArrayError(`${why} at byte ${at}`);

  for await (const chunk of chunks) {
    let partFrom = phase === 'element' ? 0 : -1;
    const take = (end: number) => {
      // Bytes of the element in this chunk, from partFrom up to end (exclusive).
      if (tooLarge || partFrom < 0) return;
      held += end - partFrom;
      if (held > maxElementBytes) {
        tooLarge = true;
        parts = [];
      } else parts.push(chunk.subarray(partFrom, end));
    };
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (phase === 'element') {
        if (inString) {
          if (escaped) escaped = false;
          else if (b === BACKSLASH) escaped = true;
          else if (b === QUOTE) {
            inString = false;
            if (depth === 0 && !primitive) {
              take(i + 1);
              yield finish(position + i + 1);
            }
          }
          continue;
        }
        if (primitive) {
          if (isSpace(b) || b === COMMA || b === CLOSE_ARRAY) {
            take(i);
            yield finish(position + i);
            i--; // the delimiter belongs to the array
          }
          continue;
        }
        if (b === QUOTE) inString = true;
        else if (b === OPEN_OBJECT || b === OPEN_ARRAY) depth++;
        else if (b === CLOSE_OBJECT || b === CLOSE_ARRAY) {
          if (--depth === 0) {
            take(i + 1);
            yield finish(position + i + 1);
          }
        }
        continue;
      }
      if (phase === 'start' && position + i === bomAt && bomAt < 3 && b === BOM[bomAt]) {
        bomAt++;
        continue;
      }
      if (isSpace(b)) continue;
      switch (phase as Phase) {
        case 'start':
          if (b !== OPEN_ARRAY) throw fail(position + i, 'not a JSON array: expected [');
          phase = 'first';
          break;
        case 'next':
          if (b === COMMA) phase = 'value';
          else if (b === CLOSE_ARRAY) phase = 'end';
          else throw fail(position + i, 'expected , or ] after an element');
          break;
        case 'first':
        case 'value':
          if (b === CLOSE_ARRAY) {
            if (phase === 'value') throw fail(position + i, 'a , is followed by ]');
            phase = 'end';
            break;
          }
          if (b === COMMA) throw fail(position + i, 'an element is missing before ,');
          phase = 'element';
          start = position + i;
          partFrom = i;
          depth = b === OPEN_OBJECT || b === OPEN_ARRAY ? 1 : 0;
          inString = b === QUOTE;
          primitive = depth === 0 && !inString;
          escaped = false;
          break;
        case 'end':
          throw fail(position + i, 'more after the closing ]');
      }
    }
    if (phase === 'element') take(chunk.length);
    position += chunk.length;
  }
  if ((phase as Phase) !== 'end') throw fail(position, 'the array is not closed: the file ends');

  function finish(end: number): ArrayElement {
    const element: ArrayElement = { index: index++, offset: start, length: end - start };
    if (!tooLarge) element.bytes = parts.length === 1 ? Buffer.from(parts[0]!) : Buffer.concat(parts);
    parts = [];
    held = 0;
    tooLarge = false;
    phase = 'next';
    primitive = false;
    return element;
  }
}
