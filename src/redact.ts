/**
 * Secrets that can ride in URLs and connection strings (IMAP passwords, SAS signatures,
 * storage account keys), in environment-file lines (`PIVOT_IMAP_PASSWORD=...`), in HTTP headers
 * (`Authorization: Bearer ...`) or in JSON bodies an error quotes (`"access_token":"..."`),
 * masked wherever text leaves the process: logs and status lines. Every scan reads the text a
 * bounded number of times: linear time, whatever the text holds.
 */
export function redactSecrets(text: string): string {
  const masked = maskRegisteredValues(text);
  if (!MAY_HOLD_SECRET.test(masked)) return masked;
  return maskNamedValues(
    maskJsonSecrets(maskUserinfoPasswords(masked))
      .replace(AUTHORIZATION, '$1***')
      .replace(/((?:AccountKey|SharedAccessSignature|SharedAccessKey)=)[^;\s"']*/gi, '$1***')
      // A signing key's text (keygen's `PRIVATE+KEY+NAME+ID+DATA`), given where a path was asked for.
      .replace(/(PRIVATE\+KEY\+)[^\s"']*/g, '$1***'),
  );
}

/**
 * What every pattern needs: an `=` or a `//`, or (a JSON field, an Authorization header) a word
 * that names a secret. Most status lines (every delivery's) have none: they are left as they are.
 */
const MAY_HOLD_SECRET = /=|\/\/|pass|pwd|secret|token|assertion|credential|key|sig|bearer|authorization/i;

/**
 * The shortest secret value masked wherever it appears: a shorter one ("abc", "1234") is a piece of
 * too many words, numbers and ids to be masked blindly (README "Secrets in errors and records").
 */
export const MIN_REGISTERED_SECRET_LENGTH = 4;

/** Every form of every registered secret, as one pattern (longest first: at one place, the longest form is masked whole). */
let registeredValues: RegExp | undefined;
const registeredForms = new Set<string>();

/**
 * Registers a secret the run has read (a password, a client secret, a SAS, an account key, an
 * access token): from now on redactSecrets masks its value wherever it appears, with no name or
 * URL around it to say it is one (an IMAP server that quotes the LOGIN command or the SASL blob in
 * its refusal, a plugin's error that quotes it). Also masked: the forms it is sent or quoted in
 * (secretForms). A value shorter than MIN_REGISTERED_SECRET_LENGTH, or none, is ignored.
 */
export function registerSecret(value: string | undefined): void {
  if (value === undefined || value.length < MIN_REGISTERED_SECRET_LENGTH) return;
  const before = registeredForms.size;
  for (const form of secretForms(value)) if (form.length >= MIN_REGISTERED_SECRET_LENGTH) registeredForms.add(form);
  if (registeredForms.size === before) return;
  const longestFirst = [...registeredForms].sort((a, b) => b.length - a.length);
  registeredValues = new RegExp(longestFirst.map((form) => form.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')).join('|'), 'g');
}

/**
 * `value` as it may be sent or quoted: as it is; percent-encoded (in a URL, a form body) or
 * decoded (a SAS given encoded, quoted decoded); escaped in a JSON string or an IMAP quoted string
 * (`"` and `\` after a backslash); and in base64 (SASL PLAIN `authzid\0user\0password`, XOAUTH2
 * `user=..\x01auth=Bearer TOKEN\x01\x01`, HTTP Basic), where the value starts at any of three
 * offsets of a 3-byte group: for each, the text only its own bytes make (all but the at most two
 * bytes at each end that share a group with a neighbour), and that text with its last group and
 * padding when the value ends the blob.
 */
function secretForms(value: string): string[] {
  let decoded: string | undefined;
  try {
    decoded = decodeURIComponent(value);
  } catch {
    decoded = undefined;
  }
  const forms = [value, ...(decoded !== undefined && decoded !== value ? [decoded] : [])];
  return forms.flatMap((form) => {
    const bytes = Buffer.from(form);
    const base64 = [0, 1, 2].flatMap((skip) => {
      const whole = bytes.subarray(skip, skip + Math.floor(Math.max(0, bytes.length - skip) / 3) * 3);
      const tail = bytes.subarray(skip);
      return [whole, tail].flatMap((part) => [part.toString('base64'), part.toString('base64url')]);
    });
    return [form, encodeURIComponent(form), new URLSearchParams({ v: form }).toString().slice(2), JSON.stringify(form).slice(1, -1), ...base64];
  });
}

/** `text` with every registered secret's value masked. */
function maskRegisteredValues(text: string): string {
  return registeredValues ? text.replace(registeredValues, '***') : text;
}

function holdsRegisteredValue(text: string): boolean {
  if (!registeredValues) return false;
  registeredValues.lastIndex = 0;
  return registeredValues.test(text);
}

/**
 * Fields of a record that hold the archive's data or values this tool computed (ids, addresses,
 * where a message is, hashes, times): never a secret the user gave, and kept exactly, whatever
 * they hold (`TOKEN=a` is a valid event id, `key=1@acme.example` a valid address): masked, two
 * items would merge into one in the account.
 */
const RECORDED_AS_IS = new Set(['itemId', 'conversationId', 'messageId', 'exportId', 'tenant', 'mailbox', 'location', 'sentAt', 'sha256', 'position', 'kept', 'runId', 'at', 'head', 'hash', 'prev']);

/** A record as one JSON text, every string but the archive's own data (RECORDED_AS_IS) passed through redactSecrets. */
export function redactedJson(record: object): string {
  const plain = JSON.stringify(record);
  // redactSecrets leaves a string that MAY_HOLD_SECRET rejects and that holds no registered value as it is: most records (every delivery's) hold none.
  if (!MAY_HOLD_SECRET.test(plain) && !holdsRegisteredValue(plain)) return plain;
  return JSON.stringify(record, (key, value: unknown) => (typeof value === 'string' && !RECORDED_AS_IS.has(key) ? redactSecrets(value) : value));
}

/**
 * A name whose value is a secret, as a variable (`AZURE_CLIENT_SECRET`, `azure_client_secret`,
 * `Pivot_Imap_Password`), a query parameter (`sig`, `clientSecret`, `refresh_token`,
 * `client_assertion`) or a JSON field (`access_token`, `password`) names it. Not `secretEnv` or
 * `passwordEnv`, which name an environment variable (the name is what a person needs to see),
 * `passwordless`, nor `credential` (a sink option that says which kind is used).
 */
function isSecretName(name: string): boolean {
  return SECRET_NAME_END.test(name) || (name === name.toUpperCase() && UPPER_CASE_SECRET_NAME.test(name));
}
/** How a secret's name ends, in any case. */
const SECRET_NAME_END = /(?:token|secret|passw(?:or)?d|pwd|assertion|(?:^|_)pass|(?:^|_|api)key|^sig)$/i;
/** An upper-case name (an environment variable's) that holds one of these words anywhere. */
const UPPER_CASE_SECRET_NAME = /PASS|SECRET|TOKEN|KEY|CREDENTIAL/;

/**
 * The credentials of an HTTP Authorization header, whatever the scheme (`Authorization: Bearer
 * ...`, `authorization: Basic ...`, `{"Authorization":"SharedKey ..."}`), and a bearer token
 * quoted alone (`Bearer eyJ...`): to white space, a quote or a backslash (a JSON text stays JSON).
 */
const AUTHORIZATION = /(\b(?:bearer[ \t]+|authorization\\?["']?[ \t]*[:=][ \t]*\\?["']?(?:[\w-]+[ \t]+)?))[^\s"'\\]+/gi;

/**
 * `NAME=` anywhere (the value is found apart, once the name is known to be a secret's): the name
 * is matched whole from a word's start, so a long run of letters is read once.
 */
const NAME_THEN_EQUALS = /\b(\w+)=/g;

/**
 * A secret's value after its `=`, quoted: to its closing quote (`'a b'`, `"a b"`, `\"a b\"` in a
 * JSON text). A backslash and the character after it are taken as one, in a quoted value or not
 * (the password's own backslash, a JSON escape), but not before a quote or a line break (`\"`,
 * `\n`): a JSON text stays JSON.
 */
const QUOTED_VALUE = /(')(?:[^'\\\n]|\\[^\s"nrt])*|(\\?")(?:[^"\\\n]|\\[^\s"nrt])*/y;
/** An unquoted value: to white space or a quote (`PIVOT_SIGNING_KEY=a;b&c`). */
const VARIABLE_VALUE = /(?:[^\s"'\\]|\\[^\s"nrt])*/y;
/** A query parameter's value ends at the next `&` too (`?sig=...&se=...`, `#access_token=...&token_type=...`). */
const QUERY_VALUE = /(?:[^\s"'\\&]|\\[^\s"nrt])*/y;
/** A connection string's value ends at the next `;` too (`Server=db;Password=...;Database=d`). */
const CONNECTION_VALUE = /(?:[^\s"'\\;]|\\[^\s"nrt])*/y;
/** Which unquoted value a name takes, by the character before it. */
const UNQUOTED_VALUE_AFTER: Record<string, RegExp | undefined> = { '?': QUERY_VALUE, '&': QUERY_VALUE, '#': QUERY_VALUE, ';': CONNECTION_VALUE };

/** Masks the value of every `NAME=value` whose name is a secret's (isSecretName). */
function maskNamedValues(text: string): string {
  if (!text.includes('=')) return text;
  let out = '';
  let done = 0;
  for (const match of text.matchAll(NAME_THEN_EQUALS)) {
    // Inside a value masked already, or a name that holds no secret: its value is read on for names (`DB_HOST=db;DB_PASSWORD=...`).
    if (match.index < done || !isSecretName(match[1]!)) continue;
    const start = match.index + match[0].length;
    const { quote, end } = secretValue(text, start, text.charAt(match.index - 1));
    out += `${text.slice(done, start)}${quote}***`;
    done = end;
  }
  return out + text.slice(done);
}

/** The quote that opens the value starting at `start` (none: ''), and where the value ends; `before` is the character before its name. */
function secretValue(text: string, start: number, before: string): { quote: string; end: number } {
  QUOTED_VALUE.lastIndex = start;
  const quoted = QUOTED_VALUE.exec(text);
  if (quoted) return { quote: quoted[1] ?? quoted[2]!, end: QUOTED_VALUE.lastIndex };
  const unquoted = UNQUOTED_VALUE_AFTER[before] ?? VARIABLE_VALUE;
  unquoted.lastIndex = start;
  unquoted.test(text);
  return { quote: '', end: unquoted.lastIndex };
}

/**
 * A JSON field with a string value (`"name":"`, `"name" : "`), however deep the JSON text is
 * quoted in other JSON strings (`\"name\":\"`, as in a status line): the backslashes before its
 * quotes say how deep. From a backslash run's start only, so a long run is read once.
 */
const JSON_FIELD = /(?<!\\)(\\*)"([^"\\]*)\1"\s*:\s*\1"/g;

/** Masks the value of every JSON field whose name is a secret's (`"access_token":"eyJ..."` becomes `"access_token":"***"`). */
function maskJsonSecrets(text: string): string {
  if (!text.includes('"')) return text;
  let out = '';
  let done = 0;
  JSON_FIELD.lastIndex = 0;
  for (let field = JSON_FIELD.exec(text); field; field = JSON_FIELD.exec(text)) {
    if (!isSecretName(field[2]!)) continue;
    const start = field.index + field[0].length;
    const end = jsonStringEnd(text, start, field[1]!.length);
    out += `${text.slice(done, start)}***`;
    done = end;
    JSON_FIELD.lastIndex = end;
  }
  return out + text.slice(done);
}

/**
 * Where the content of a JSON string that starts at `from` ends, its quotes preceded by `depth`
 * backslashes (0 in a JSON text, 1 in a JSON text quoted in a JSON string, 3 one level further).
 * A quote after a run of backslashes closes it when the run, modulo `2 * depth + 2`, is `depth`
 * (the closing quote's own backslashes are not content); a run one short of a multiple of `depth
 * + 1` quotes a quote of the content; any other run ends a string around it (the error cut the
 * JSON short): the content stops there, as it does at a line break.
 */
function jsonStringEnd(text: string, from: number, depth: number): number {
  let backslashes = 0;
  for (let i = from; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') return i;
    if (c === '"') {
      if (backslashes % (2 * depth + 2) === depth) return i - depth;
      if ((backslashes + 1) % (depth + 1) !== 0) return i - backslashes;
    }
    backslashes = c === '\\' ? backslashes + 1 : 0;
  }
  return text.length;
}

/**
 * What may follow the `@` that ends a URL's userinfo: a host (or none), a port, then the end of
 * the URL. Sticky: tried at one position of the text; it never runs past an `@`, a quote or a
 * line break.
 */
const AFTER_USERINFO = /(?:\[[0-9A-Fa-f:.]*\]|[\p{L}\p{N}](?:[\p{L}\p{N}._-]*[\p{L}\p{N}])?)?(?::\d*)?(?=$|[\s/?#"'`\\()<>[\]{},;|])/uy;

/** A URL's user name, up to the `:` before its password: sticky, tried where the `//` ends. */
const USER = /[^\s/?#:]*/y;

/**
 * `text.search(pattern)` from `from` on (text.length when there is none), for `from`s asked in
 * increasing order: the answer holds until `from` passes it, so the text is read once in all.
 */
function forwardSearch(text: string, pattern: RegExp): (from: number) => number {
  // No match in [searchedFrom, found).
  let searchedFrom = 0;
  let found = -1;
  return (from) => {
    if (from < searchedFrom || from > found) {
      pattern.lastIndex = from;
      found = pattern.exec(text)?.index ?? text.length;
      searchedFrom = from;
    }
    return found;
  };
}

/**
 * Masks the password of every `//USER:PASSWORD@HOST` in `text`, whatever the password holds.
 *
 * Only real userinfo: USER, from the `//` to the first `:` after it, holds no `/`, `?`, `#` or
 * white space (a path, a query, a fragment or the end of the URL come first: `graph://T/?a=b:`
 * has no userinfo, however the text goes on), unless a `:` and an `@` follow with no white space
 * from the `//` on (`imap://CORP/jdoe:pw@host`, pasted as it is). A pasted PASSWORD may hold `/`, `?`, `#`, `@`,
 * `%`, `:`, quotes or spaces, so it is taken to run from that `:` to the LAST `@` that a
 * plausible host follows, within the line (in a JSON text: within the string value); everything
 * between becomes `***`. Except a port: when USER holds `@` or `.` (a host), digits and then
 * `/`, `?` or `#` follow the `:` (`host:993/INBOX`) and white space comes before that `@`, the `@` is further on in the text (a
 * mailbox named after the sink's description), which a URL cannot hold: nothing is masked. When in
 * doubt (no white space: `imap://a@h:993/?x=b@c` becomes `imap://a@h:***@c`) it masks more than
 * the password, never less.
 *
 * Linear time however many `//`, `:` and `@` the text holds: each question below is asked at
 * positions that never go back (forwardSearch), and the last `@` of a line or a JSON string is
 * looked for once.
 */
function maskUserinfoPasswords(text: string): string {
  if (!text.includes('//')) return text;
  // A JSON text (a status line): a value's userinfo never runs on into the next value.
  const json = /^\s*[[{]/.test(text);
  // No `@` after a `:`, no password: the scan ends there.
  const lastAt = text.lastIndexOf('@');
  const closingQuote = forwardSearch(text, /(?<=(?<!\\)(?:\\\\)*)"/g);
  const tokenEnd = forwardSearch(text, /\s/g);
  const nextColon = forwardSearch(text, /:/g);
  const atInToken = forwardSearch(text, /@/g);
  const atInLine = forwardSearch(text, /@/g);
  const nextHostMark = forwardSearch(text, /[@.]/g);
  const nextDigitEnd = forwardSearch(text, /\D/g);
  const spaceInPassword = forwardSearch(text, /\s/g);
  // The last `@` before `atEnd` that a plausible host follows, looked for above `atFloor`: each line or JSON string once.
  let atEnd = -1;
  let atFloor = 0;
  let lastHostAt = -1;
  let lineEnd = -1;
  let out = '';
  let done = 0;
  for (let from = text.indexOf('//'); from >= 0; from = text.indexOf('//', from)) {
    from += 2;
    if (from > lineEnd) {
      lineEnd = text.indexOf('\n', from);
      if (lineEnd < 0) lineEnd = text.length;
    }
    // USER runs to the first `:`; a `/`, `?`, `#` or white space before it ends the authority (no password).
    USER.lastIndex = from;
    USER.test(text);
    let colon = USER.lastIndex;
    if (colon > lastAt) break;
    // Not a URL's userinfo, yet a pasted one may be (`imap://CORP/jdoe:pw@host`): a `:` and then an `@` with no white space from the `//` on are masked all the same.
    if (colon < lineEnd && /[/?#]/.test(text[colon]!)) {
      const pasted = nextColon(colon);
      const pastedEnd = tokenEnd(colon);
      colon = pasted < pastedEnd && atInToken(pasted) < pastedEnd ? pasted : lineEnd;
    }
    if (colon >= lineEnd || text[colon] !== ':') continue;
    const end = json ? Math.min(lineEnd, closingQuote(from)) : lineEnd;
    if (end !== atEnd || colon < atFloor) {
      atEnd = end;
      atFloor = colon;
      lastHostAt = -1;
      for (let i = atInLine(colon); i < end; i = atInLine(i + 1)) {
        AFTER_USERINFO.lastIndex = i + 1;
        if (AFTER_USERINFO.test(text) && AFTER_USERINFO.lastIndex <= end) lastHostAt = i;
      }
    }
    const at = lastHostAt > colon ? lastHostAt : -1;
    if (at < 0) continue;
    const portEnd = nextDigitEnd(colon + 1);
    // A port only after a host (`user@host:993/`, `host.example:993/`): `user:2024/Summer Rain@host` is a password.
    if (portEnd > colon + 1 && /[/?#]/.test(text.charAt(portEnd)) && nextHostMark(from) < colon && spaceInPassword(colon + 1) < at) continue;
    out += text.slice(done, colon + 1) + '***';
    done = at;
    from = at + 1;
  }
  return out + text.slice(done);
}
