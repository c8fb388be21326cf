import type { Readable } from 'node:stream';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import { JsonArrayScanner, type ArrayElement } from './json-array.js';

/**
 * The elements of one messages file's array (`stream`, the entry `name`'s bytes), a batch per
 * chunk read (with `borrow`, their bytes are views of the chunk). A file whose array is broken
 * fails the archive (ARCHIVE_CONTENT).
 */
export async function* elementBatches(path: string, name: string, stream: Readable, maxEventBytes: number, borrow: boolean): AsyncGenerator<ArrayElement[]> {
  const scanner = new JsonArrayScanner(maxEventBytes, borrow);
  const broken = (err: unknown) =>
    err instanceof PivotArchiveError ? err : new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${name} is not a JSON array of events: ${errorMessage(err)}`, { cause: err });
  try {
    for await (const chunk of stream) {
      let elements: ArrayElement[];
      try {
        elements = scanner.write(chunk as Buffer);
      } catch (err) {
        throw broken(err);
      }
      if (elements.length > 0) yield elements;
    }
    scanner.end();
  } catch (err) {
    throw broken(err);
  } finally {
    stream.destroy();
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const PLAIN_START = Buffer.from('{"id":"');
const JOIN = Buffer.from('"join"');
const LEAVE = Buffer.from('"leave"');
const ID_KEY = Buffer.from('"id"');

/** `pattern` stands in `bytes` at `at`. */
function standsAt(bytes: Buffer, at: number, pattern: Buffer): boolean {
  if (at + pattern.length > bytes.length) return false;
  for (let k = 0; k < pattern.length; k++) if (bytes[at + k] !== pattern[k]) return false;
  return true;
}

/**
 * The checking pass's fast path: the id of an element whose bytes begin `{"id":"`, whose id is
 * ASCII, and that holds no backslash (no escape can hide a quote, a key or a value), no other
 * `"id"` (JSON.parse keeps the last of repeated keys) and no `"join"` or `"leave"` (so it
 * changes no membership). That is exactly the id JSON.parse would give, if the element parses
 * at all; undefined for every other element (the caller parses it). The hash of an element that
 * would not parse is harmless: at worst a candidate that `events()` checks exactly.
 */
export function plainId(bytes: Buffer): string | undefined {
  if (!standsAt(bytes, 0, PLAIN_START)) return undefined;
  const n = bytes.length;
  let end = PLAIN_START.length;
  for (; end < n; end++) {
    const b = bytes[end]!;
    if (b === QUOTE) break;
    if (b === BACKSLASH || b >= 0x80) return undefined;
  }
  if (end >= n) return undefined;
  // One plain loop over the rest (a native indexOf per pattern cost more than the whole loop).
  for (let i = end + 1; i < n; i++) {
    const b = bytes[i]!;
    if (b === BACKSLASH) return undefined;
    if (b === QUOTE && (standsAt(bytes, i, ID_KEY) || standsAt(bytes, i, JOIN) || standsAt(bytes, i, LEAVE))) return undefined;
  }
  return bytes.toString('latin1', PLAIN_START.length, end);
}

/** The JSON value of an element's bytes (decoded as delivery decodes them), or undefined when they are not JSON. */
export function parsed(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}