import { domainToASCII, domainToUnicode } from 'node:url';

/**
 * Email address rules shared by the MIME builder (how an address is written in From/To) and by
 * fan-out (which mailbox an address is): one parser, so a header and a mailbox key can never
 * disagree about whether an address is valid.
 *
 * Accepted: `local@domain` where
 * - the local part is a dot-atom (RFC 5322 atext, and with RFC 6531 any non-ASCII character
 *   except controls, format characters other than ZWNJ/ZWJ, spaces and separators, surrogates,
 *   private-use and unassigned code points, and U+FFFD); at most 64 octets of UTF-8. Quoted
 *   local parts (`"a b"@x`) are not accepted.
 * - the domain is a host name of at least two labels, given with U-labels (`bücher.example`)
 *   and/or A-labels (`xn--bcher-kva.example`), that `url.domainToASCII` converts; the A-label
 *   form is letters, digits and hyphens, each label 1-63 characters not starting or ending with
 *   a hyphen, at most 253 characters, and the top-level label is not all digits (no IP
 *   addresses).
 * - the whole canonical address is at most 254 octets.
 *
 * The **mailbox key** (the identity of a mailbox) is the local part NFC-normalised and
 * lower-cased, `@`, the domain's A-label form lower-cased: `anna@BÜCHER.example` and
 * `anna@xn--bcher-kva.example` are one mailbox.
 */
export interface ParsedAddress {
  /** The mailbox key: NFC lower-case local part @ lower-case A-label domain. */
  mailbox: string;
  /** The local part, NFC-normalised, its case kept (as written in headers). */
  local: string;
  /** The domain in its A-label form, lower-case. */
  domain: string;
  /**
   * The address as written in a From/To header: with an ASCII local part, `local@A-label` (pure
   * ASCII); with a non-ASCII local part, RFC 6532 UTF-8 `local@U-label`.
   */
  header: string;
  /** The local part is not ASCII: the address needs SMTPUTF8 / EAI (RFC 6531, RFC 6532) to be used. */
  smtpUtf8: boolean;
}

export type AddressCheck = { ok: true; address: ParsedAddress } | { ok: false; reason: string };
export type DomainCheck = { ok: true; domain: string } | { ok: false; reason: string };

const ASCII_ATEXT = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]$/;
/** Characters never accepted in an address, whatever its script. ZWNJ/ZWJ (U+200C/D) are letters' business. */
const FORBIDDEN = /(?![\u200c\u200d])[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Z}\ufffd]/u;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

const utf8Length = (s: string) => Buffer.byteLength(s, 'utf8');

function codePoint(c: string): string {
  return `U+${c.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
}

/** The first character that can never be in an address, described; undefined when there is none. */
function forbiddenCharacter(text: string): string | undefined {
  const bad = FORBIDDEN.exec(text);
  if (!bad) return undefined;
  const c = bad[0];
  if (/\p{Cs}/u.test(c)) return 'a lone UTF-16 surrogate (not a character)';
  if (c === '\ufffd') return 'U+FFFD (a replacement character: the text was not valid UTF-8)';
  if (/\p{Cc}/u.test(c)) return `a control character (${codePoint(c)})`;
  if (/\p{Z}/u.test(c)) return `a space or separator (${codePoint(c)})`;
  return `an invisible formatting, private-use or unassigned character (${codePoint(c)})`;
}

/** The A-label form of a domain name, or why it is not one. */
export function checkDomain(input: unknown): DomainCheck {
  if (typeof input !== 'string') return { ok: false, reason: 'it is not text' };
  const domain = input.trim();
  if (domain === '') return { ok: false, reason: 'it is empty' };
  const forbidden = forbiddenCharacter(domain);
  if (forbidden) return { ok: false, reason: `the domain holds ${forbidden}` };
  // domainToASCII parses a URL host: `a/b.example` would come back as `a`. Only letters, digits,
  // hyphens and dots of ASCII go in (and any non-ASCII for IDNA to map or refuse).
  const stray = /[^A-Za-z0-9.\-\u0080-\u{10ffff}]/u.exec(domain);
  if (stray) return { ok: false, reason: `the domain holds ${JSON.stringify(stray[0])} (a host name is letters, digits, hyphens and dots)` };
  const ascii = domainToASCII(domain).toLowerCase();
  if (ascii === '') return { ok: false, reason: 'the domain is not a valid internationalised domain name (IDNA refuses it)' };
  if (ascii.length > 253) return { ok: false, reason: 'the domain is longer than 253 characters' };
  const labels = ascii.split('.');
  if (labels.length < 2) return { ok: false, reason: 'the domain needs at least two labels (like example.com)' };
  for (const label of labels) {
    if (label === '') return { ok: false, reason: 'the domain has an empty label (a leading, trailing or double dot)' };
    if (label.length > 63) return { ok: false, reason: `the domain label ${JSON.stringify(label.slice(0, 20))}... is longer than 63 characters` };
    if (!LABEL.test(label)) return { ok: false, reason: `the domain label ${JSON.stringify(label)} is not letters, digits and inner hyphens` };
  }
  if (/^[0-9]+$/.test(labels[labels.length - 1]!)) return { ok: false, reason: 'the domain is an IP address, not a host name' };
  return { ok: true, domain: ascii };
}

/** The A-label form of a domain name (lower-case), or undefined when it is not one. */
export function canonicalDomain(input: unknown): string | undefined {
  const check = checkDomain(input);
  return check.ok ? check.domain : undefined;
}

function checkLocalPart(local: string): string | undefined {
  if (local === '') return 'the local part (before @) is empty';
  if (local.startsWith('.') || local.endsWith('.')) return 'the local part starts or ends with a dot';
  if (local.includes('..')) return 'the local part has two dots in a row';
  const forbidden = forbiddenCharacter(local);
  if (forbidden) return `the local part holds ${forbidden}`;
  for (const c of local) {
    if (c !== '.' && c < '\u0080' && !ASCII_ATEXT.test(c)) return `the local part holds ${JSON.stringify(c)}, which needs quoting (not accepted)`;
  }
  return undefined;
}

function parse(input: unknown): AddressCheck {
  if (typeof input !== 'string') return { ok: false, reason: input === undefined || input === null ? 'there is no address' : 'it is not text' };
  const trimmed = input.trim();
  if (trimmed === '') return { ok: false, reason: 'it is empty' };
  const at = trimmed.indexOf('@');
  if (at < 0) return { ok: false, reason: 'it has no @' };
  if (trimmed.indexOf('@', at + 1) >= 0) return { ok: false, reason: 'it has more than one @' };
  const local = trimmed.slice(0, at).normalize('NFC');
  const localProblem = checkLocalPart(local);
  if (localProblem) return { ok: false, reason: localProblem };
  const rawDomain = trimmed.slice(at + 1);
  if (rawDomain === '') return { ok: false, reason: 'the domain (after @) is empty' };
  const domain = checkDomain(rawDomain);
  if (!domain.ok) return domain;
  const key = local.toLowerCase().normalize('NFC');
  if (utf8Length(key) > 64 || utf8Length(local) > 64) return { ok: false, reason: 'the local part is longer than 64 octets' };
  const mailbox = `${key}@${domain.domain}`;
  if (utf8Length(mailbox) > 254) return { ok: false, reason: 'the address is longer than 254 octets' };
  const smtpUtf8 = /[^\x00-\x7f]/.test(local);
  let headerDomain = domain.domain;
  if (smtpUtf8) {
    // A UTF-8 header anyway: the domain as people read it, when its Unicode form is as safe.
    const unicode = domainToUnicode(domain.domain);
    if (unicode && !forbiddenCharacter(unicode) && !/[^a-z0-9.\-\u0080-\u{10ffff}]/u.test(unicode)) headerDomain = unicode;
  }
  return { ok: true, address: { mailbox, local, domain: domain.domain, header: `${local}@${headerDomain}`, smtpUtf8 } };
}

// Fan-out asks about the same few thousand addresses for every item: parse each string once.
const cache = new Map<string, AddressCheck>();
const CACHE_LIMIT = 20_000;

/** Whether `input` is a usable address, and its forms; or why it is not. */
export function checkAddress(input: unknown): AddressCheck {
  if (typeof input !== 'string') return parse(input);
  let check = cache.get(input);
  if (check === undefined) {
    if (cache.size >= CACHE_LIMIT) cache.clear();
    cache.set(input, (check = parse(input)));
  }
  return check;
}

/** The parsed address, or undefined when `input` is missing or not a usable address. */
export function parseAddress(input: unknown): ParsedAddress | undefined {
  const check = checkAddress(input);
  return check.ok ? check.address : undefined;
}

/** The mailbox key of an address (see {@link ParsedAddress.mailbox}), or undefined when it is not usable. */
export function canonicalMailbox(input: unknown): string | undefined {
  return parseAddress(input)?.mailbox;
}

/**
 * Whether an address (in any of its forms, a mailbox key included) needs SMTPUTF8 / EAI: its
 * local part is not ASCII, so no ASCII form of it exists. A sink that cannot take such an
 * address records why (`address-not-deliverable`). False for an invalid address (never a target).
 */
export function needsSmtpUtf8(address: string): boolean {
  return parseAddress(address)?.smtpUtf8 ?? false;
}
