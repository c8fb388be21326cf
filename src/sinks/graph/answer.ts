// Graph answers a create with the whole message it made (body, recipients, properties): of it the
// sink reads only the id. Parsed whole, every answer became a string and objects of each message's
// body (the bench's 200-mailbox run: about 50 of its 900 MB allocated, the most of any function of
// the sink's); these read the id, and a batch's envelope, from the answer's bytes. An answer they do not find well formed (cut
// short, or not JSON) is parsed whole, so it reads as JSON.parse reads it; what they skip (the
// message's other fields) is only bracketed, not checked, so an answer malformed there alone
// still gives the id it names.

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;

/** The members read of a create's answer, of a batch's answer, and of one of its responses. */
const ID = ['id'] as const;
const RESPONSES = ['responses'] as const;
const RESPONSE = ['id', 'status', 'headers', 'body'] as const;

/** Thrown where the bytes are not the JSON expected: the answer is parsed whole instead. */
class Malformed extends Error {}
const MALFORMED = new Malformed();

/** The `id` of a create's answer (the message made), as `JSON.parse(answer).id` reads it. */
export function createdId(bytes: Buffer): unknown {
  try {
    const reader = new JsonBytes(bytes);
    const id = reader.objectId(reader.skipSpace(0));
    reader.expectEnd(reader.end);
    return id;
  } catch (err) {
    if (!(err instanceof Malformed)) throw err;
    return idOf(parsedWhole(bytes));
  }
}

/**
 * The responses of a `$batch` answer (`{"responses":[...]}`), as JSON.parse reads them but that a
 * response may hold its id, status, headers and body alone, and a 2xx body its `id` alone;
 * undefined when the answer holds no list of them.
 */
export function batchResponses(bytes: Buffer): unknown[] | undefined {
  try {
    return new JsonBytes(bytes).responses();
  } catch (err) {
    if (!(err instanceof Malformed)) throw err;
    const whole = (parsedWhole(bytes) as { responses?: unknown } | null | undefined)?.responses;
    return Array.isArray(whole) ? whole : undefined;
  }
}

/** The `id` of a create's answer, whatever the answer is (undefined when it is no object). */
export function idOf(answer: unknown): unknown {
  return (answer as { id?: unknown } | null | undefined)?.id;
}

function parsedWhole(bytes: Buffer): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
}

function isSuccess(status: unknown): boolean {
  return typeof status === 'number' && status >= 200 && status < 300;
}

function idOnly(id: unknown): { id?: unknown } {
  return id === undefined ? {} : { id };
}

/**
 * A walk over JSON bytes (every structural character is ASCII, so UTF-8 needs no decoding to find
 * them): values wanted are parsed from their own bytes, the rest skipped. Each method takes the
 * offset of a value and leaves `end` just after it; any surprise throws MALFORMED.
 */
class JsonBytes {
  /** Offset just after the last value read or skipped. */
  end = 0;

  constructor(private readonly bytes: Buffer) {}

  skipSpace(at: number): number {
    const b = this.bytes;
    while (at < b.length && (b[at] === 0x20 || b[at] === 0x0a || b[at] === 0x0d || b[at] === 0x09)) at++;
    return at;
  }

  expectEnd(at: number): void {
    if (this.skipSpace(at) !== this.bytes.length) throw MALFORMED;
  }

  /** Skips the value at `at`. */
  skip(at: number): void {
    const b = this.bytes;
    const first = b[at];
    if (first === QUOTE) {
      this.end = this.stringEnd(at);
      return;
    }
    if (first === OPEN_OBJECT || first === OPEN_ARRAY) {
      // Brackets counted, strings jumped over (a bracket in a string is text); commas and colons
      // are not checked here: what is skipped is never read.
      let depth = 0;
      for (let i = at; i < b.length; ) {
        const c = b[i];
        if (c === QUOTE) {
          i = this.stringEnd(i);
          continue;
        }
        if (c === OPEN_OBJECT || c === OPEN_ARRAY) depth++;
        else if (c === CLOSE_OBJECT || c === CLOSE_ARRAY) {
          if (--depth === 0) {
            this.end = i + 1;
            return;
          }
        }
        i++;
      }
      throw MALFORMED;
    }
    // A number, true, false or null: up to the next delimiter.
    let i = at;
    while (i < b.length && b[i] !== COMMA && b[i] !== CLOSE_OBJECT && b[i] !== CLOSE_ARRAY && b[i] !== 0x20 && b[i] !== 0x0a && b[i] !== 0x0d && b[i] !== 0x09) i++;
    if (i === at) throw MALFORMED;
    this.end = i;
  }

  /** The value at `at`, parsed from its bytes. */
  parse(at: number): unknown {
    this.skip(at);
    try {
      return JSON.parse(this.bytes.toString('utf8', at, this.end));
    } catch {
      throw MALFORMED;
    }
  }

  /** Offset just after the string whose opening quote is at `at` (its closing quote the first with an even run of backslashes before it). */
  private stringEnd(at: number): number {
    const b = this.bytes;
    for (let quote = b.indexOf(QUOTE, at + 1); quote >= 0; quote = b.indexOf(QUOTE, quote + 1)) {
      let slashes = 0;
      while (b[quote - 1 - slashes] === BACKSLASH) slashes++;
      if (slashes % 2 === 0) return quote + 1;
    }
    throw MALFORMED;
  }

  /**
   * The key at `at`: which of `names` it is, else '' (any other, not read further). Compared in
   * place: a string made of every key of every answer was most of what reading them cost.
   */
  private key(at: number, names: readonly string[]): string {
    const b = this.bytes;
    if (b[at] !== QUOTE) throw MALFORMED;
    const end = this.stringEnd(at);
    this.end = end;
    const length = end - at - 2;
    for (let i = at + 1; i < end - 1; i++) {
      // A key with an escape in it (never one of Graph's): read as JSON.parse reads it.
      if (b[i] === BACKSLASH) {
        let text: unknown;
        try {
          text = JSON.parse(b.toString('utf8', at, end));
        } catch {
          throw MALFORMED;
        }
        return names.find((name) => name === text) ?? '';
      }
    }
    for (const name of names) {
      if (name.length !== length) continue;
      let same = true;
      for (let i = 0; i < length && same; i++) same = b[at + 1 + i] === name.charCodeAt(i);
      if (same) return name;
    }
    return '';
  }

  /**
   * Walks the object at `at`, calling `member(name, valueAt)` for each member (`name`: which of
   * `names` its key is, else ''); `member` reads or skips the value and leaves `end` after it.
   */
  private members(at: number, names: readonly string[], member: (name: string, valueAt: number) => void): void {
    if (this.bytes[at] !== OPEN_OBJECT) throw MALFORMED;
    let i = this.skipSpace(at + 1);
    if (this.bytes[i] === CLOSE_OBJECT) {
      this.end = i + 1;
      return;
    }
    for (;;) {
      const name = this.key(i, names);
      i = this.skipSpace(this.end);
      if (this.bytes[i] !== COLON) throw MALFORMED;
      member(name, this.skipSpace(i + 1));
      i = this.skipSpace(this.end);
      if (this.bytes[i] === CLOSE_OBJECT) {
        this.end = i + 1;
        return;
      }
      if (this.bytes[i] !== COMMA) throw MALFORMED;
      i = this.skipSpace(i + 1);
    }
  }

  /** The `id` member of the object at `at` (the last, as JSON.parse keeps it), the rest skipped. */
  objectId(at: number): unknown {
    let id: unknown;
    this.members(at, ID, (name, valueAt) => {
      if (name === 'id') id = this.parse(valueAt);
      else this.skip(valueAt);
    });
    return id;
  }

  /** The list of `{"responses":[...]}` from offset 0, or undefined when it is not a list. */
  responses(): unknown[] | undefined {
    let responses: unknown[] | undefined;
    this.members(this.skipSpace(0), RESPONSES, (name, valueAt) => {
      if (name !== 'responses') this.skip(valueAt);
      else if (this.bytes[valueAt] !== OPEN_ARRAY) {
        this.skip(valueAt);
        responses = undefined;
      } else responses = this.responseList(valueAt);
    });
    this.expectEnd(this.end);
    return responses;
  }

  private responseList(at: number): unknown[] {
    const list: unknown[] = [];
    let i = this.skipSpace(at + 1);
    if (this.bytes[i] === CLOSE_ARRAY) {
      this.end = i + 1;
      return list;
    }
    for (;;) {
      list.push(this.bytes[i] === OPEN_OBJECT ? this.response(i) : this.parse(i));
      i = this.skipSpace(this.end);
      if (this.bytes[i] === CLOSE_ARRAY) {
        this.end = i + 1;
        return list;
      }
      if (this.bytes[i] !== COMMA) throw MALFORMED;
      i = this.skipSpace(i + 1);
    }
  }

  /** One response: its id, status and headers, and its body, of which a 2xx object body's id alone is read. */
  private response(at: number): Record<string, unknown> {
    const response: Record<string, unknown> = {};
    // A later member of a name replaces an earlier one, as in JSON.parse.
    let bodyAt = -1;
    this.members(at, RESPONSE, (name, valueAt) => {
      if (name === '') this.skip(valueAt);
      else if (name === 'body' && this.bytes[valueAt] === OPEN_OBJECT) {
        bodyAt = valueAt;
        this.skip(valueAt);
      } else {
        response[name] = this.parse(valueAt);
        if (name === 'body') bodyAt = -1;
      }
    });
    if (bodyAt >= 0) {
      const end = this.end;
      response.body = isSuccess(response.status) ? idOnly(this.objectId(bodyAt)) : this.parse(bodyAt);
      this.end = end;
    }
    return response;
  }
}
