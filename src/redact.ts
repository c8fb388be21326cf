/**
 * Secrets that can ride in URLs and connection strings (IMAP passwords, SAS signatures,
 * storage account keys) or in environment-file lines (`PIVOT_IMAP_PASSWORD=...`), masked
 * wherever text leaves the process: logs and status lines.
 */
export function redactSecrets(text: string): string {
  // Each pattern below needs a `//` or an `=`: most status lines (every delivery's) have neither.
  if (!text.includes('=') && !text.includes('//')) return text;
  return maskUserinfoPasswords(text)
    .replace(QUERY_SECRET, '$1***')
    .replace(/((?:AccountKey|SharedAccessSignature|SharedAccessKey)=)[^;\s"']*/gi, '$1***')
    .replace(ASSIGNMENT, (assignment, name: string, single?: string, double?: string) => (SECRET_NAME.test(name) ? `${name}${single ?? double ?? ''}***` : assignment));
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
  // redactSecrets leaves a string with neither `=` nor `//` as it is: most records (every delivery's) hold none.
  if (!plain.includes('=') && !plain.includes('//')) return plain;
  return JSON.stringify(record, (key, value: unknown) => (typeof value === 'string' && !RECORDED_AS_IS.has(key) ? redactSecrets(value) : value));
}

/**
 * An environment variable set in an env file or a shell (`AZURE_CLIENT_SECRET=...`, `export
 * API_TOKEN='a b'`), as an error may quote it: an upper-case name, `=`, then the value: to its
 * closing quote when quoted, else to a space or a quote. Never past a backslash, so a JSON text
 * stays JSON (an escape is not cut in two). The name is matched whole and tested apart: linear
 * time, whatever upper-case run an archive's id holds.
 */
const ASSIGNMENT = /\b([A-Z0-9_]+=)(?:(')[^'\\\n]*|(\\?")[^"\\\n]*|[^\s"'\\]*)/g;
/** The names of variables that hold secrets. */
const SECRET_NAME = /PASS|SECRET|TOKEN|KEY|CREDENTIAL/;

/**
 * What may follow the `@` that ends a URL's userinfo: a host (or none), a port, then the end of
 * the URL. Sticky: tried at one position of the text.
 */
const AFTER_USERINFO = /(?:\[[0-9A-Fa-f:.]*\]|[\p{L}\p{N}](?:[\p{L}\p{N}._-]*[\p{L}\p{N}])?)?(?::\d*)?(?=$|[\s/?#"'`\\()<>[\]{},;|])/uy;

/**
 * Query parameters whose value is a secret: a SAS signature (`sig=`), a token or password
 * (`token=`, `access_token=`, `refresh_token=`, `password=`, `pass=`, `pwd=`), a client secret or
 * assertion (`clientSecret=`, `client_secret=`, `client_assertion=`). Not `secretEnv=` or
 * `passwordEnv=`, which name an environment variable (the name is what a person needs to see).
 */
const QUERY_SECRET = /([?&](?:sig|pass|\w*(?:token|secret|password|pwd|assertion))=)[^&\s"']*/gi;

/** A URL's user name, up to the `:` before its password: sticky, tried where the `//` ends. */
const USER = /[^\s/?#:]*/y;

/**
 * The `\d+` port after a host's `:`, and the path, query or fragment that follows it (`:993/`):
 * sticky, tried where the `:` ends.
 */
const PORT_THEN_PATH = /\d+[/?#]/y;

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
 */
function maskUserinfoPasswords(text: string): string {
  if (!text.includes('//')) return text;
  // A JSON text (a status line): a value's userinfo never runs on into the next value.
  const json = /^\s*[[{]/.test(text);
  // No `@` after a `:`, no password: the scan ends there (a text of many `//` and `@` is still read once per `//`).
  const lastAt = text.lastIndexOf('@');
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
    if (colon < lineEnd && text[colon] !== ':' && /[/?#]/.test(text[colon]!)) colon = pastedColon(text, colon, lineEnd);
    if (colon >= lineEnd || text[colon] !== ':') continue;
    const end = json ? Math.min(lineEnd, closingQuote(text, from, lineEnd)) : lineEnd;
    let at = -1;
    for (let i = text.lastIndexOf('@', end - 1); i > colon; i = text.lastIndexOf('@', i - 1)) {
      AFTER_USERINFO.lastIndex = i + 1;
      if (AFTER_USERINFO.test(text) && AFTER_USERINFO.lastIndex <= end) {
        at = i;
        break;
      }
    }
    if (at < 0) continue;
    PORT_THEN_PATH.lastIndex = colon + 1;
    // A port only after a host (`user@host:993/`, `host.example:993/`): `user:2024/Summer Rain@host` is a password.
    if (PORT_THEN_PATH.test(text) && /[@.]/.test(text.slice(from, colon)) && /\s/.test(text.slice(colon + 1, at))) continue;
    out += text.slice(done, colon + 1) + '***';
    done = at;
    from = at + 1;
  }
  return out + text.slice(done);
}

/** The first `:` from `from` on, when an `@` follows it before any white space (else `end`). */
function pastedColon(text: string, from: number, end: number): number {
  const space = text.slice(from, end).search(/\s/);
  const tokenEnd = space < 0 ? end : from + space;
  const colon = text.indexOf(':', from);
  return colon >= 0 && colon < tokenEnd && text.lastIndexOf('@', tokenEnd - 1) > colon ? colon : end;
}

/** The first `"` at or after `from` that a backslash does not escape, or `end`. */
function closingQuote(text: string, from: number, end: number): number {
  for (let i = text.indexOf('"', from); i >= 0 && i < end; i = text.indexOf('"', i + 1)) {
    let slashes = 0;
    while (text[i - 1 - slashes] === '\\') slashes++;
    if (slashes % 2 === 0) return i;
  }
  return end;
}
