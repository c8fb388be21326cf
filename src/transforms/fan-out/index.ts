import { readFile } from 'node:fs/promises';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import type { User } from '../../model.js';
import { canonicalDomain, canonicalMailbox, checkAddress, checkDomain } from '../../formats/address/index.js';
import type { Shard } from '../shard/index.js';

export interface FanOutConfig {
  /** Only mailboxes in these domains are targets (empty: any domain). Any form: `parseDomain` makes the A-label one. */
  domains: string[];
  /**
   * Pivot email or user id -> mailbox; overrides the *Email* property. Email keys and the
   * mailboxes are mailbox keys (src/address.ts), as `readUserMap` makes them.
   */
  userMap: Map<string, string>;
  /** Receives items that have no target at all; without it they are rejected `unmapped`. */
  defaultMailbox?: string;
  /** --shard K/N: deliver only to this shard's mailboxes (src/transforms/shard/); the other targets are left to their shards. */
  shard?: Shard;
}

// The domains of a config, as A-labels: made once per array, not once per item.
const domainSets = new WeakMap<readonly string[], Set<string>>();

function domainSet(domains: readonly string[]): Set<string> {
  let set = domainSets.get(domains);
  if (!set) {
    set = new Set(domains.map((d) => canonicalDomain(d.trim().replace(/^@/, '')) ?? d.trim().toLowerCase()));
    domainSets.set(domains, set);
  }
  return set;
}

/**
 * The mailboxes an item goes to: each participant whose email (or user-map entry) maps to a
 * mailbox of the organisation, as its mailbox key (local part NFC and lower-cased, domain as
 * A-label: `anna@BÜCHER.example` and `anna@xn--bcher-kva.example` are one mailbox), each once,
 * in a stable order.
 */
export function targetMailboxes(participants: readonly User[], config: FanOutConfig): string[] {
  const mailboxes = new Set<string>();
  const domains = config.domains.length > 0 ? domainSet(config.domains) : undefined;
  for (const user of participants) {
    const email = canonicalMailbox(user.email);
    const mapped = config.userMap.get(user.id) ?? (email ? config.userMap.get(email) : undefined);
    const mailbox = mapped !== undefined ? canonicalMailbox(mapped) : email;
    if (!mailbox) continue;
    if (domains && !domains.has(mailbox.slice(mailbox.lastIndexOf('@') + 1))) continue;
    mailboxes.add(mailbox);
  }
  if (mailboxes.size === 0 && config.defaultMailbox) {
    const fallback = canonicalMailbox(config.defaultMailbox);
    if (fallback) mailboxes.add(fallback);
  }
  return [...mailboxes].sort();
}

/**
 * The user-map keys (user ids or emails, as `readUserMap` keeps them) that name none of `users`
 * nor any of `memberIds` (conversation members users.json lacks, delivered by id): typos, or
 * users not in this export.
 */
export function userMapUnmatched(userMap: ReadonlyMap<string, string>, users: Iterable<User>, memberIds: Iterable<string>): string[] {
  const named = new Set<string>(memberIds);
  for (const user of users) {
    named.add(user.id);
    const email = canonicalMailbox(user.email);
    if (email) named.add(email);
  }
  return [...userMap.keys()].filter((key) => !named.has(key));
}

/** Second cells that make the first line of a user map a header (case-insensitive). */
const HEADER_WORDS = new Set(['mailbox', 'email', 'e-mail', 'mail', 'address', 'email address', 'target', 'target mailbox']);

/**
 * The cells of one CSV line: separated by commas, each trimmed; a cell may be quoted
 * (`"u,1"`, `""` for a quote inside). A string when the line cannot be read.
 */
function csvCells(line: string): string[] | string {
  const cells: string[] = [];
  let i = 0;
  for (;;) {
    while (line[i] === ' ' || line[i] === '\t') i++;
    let cell: string;
    if (line[i] === '"') {
      cell = '';
      i++;
      for (;;) {
        const quote = line.indexOf('"', i);
        if (quote < 0) return 'a quoted cell has no closing quote';
        cell += line.slice(i, quote);
        i = quote + 1;
        if (line[i] !== '"') break;
        cell += '"';
        i++;
      }
      while (line[i] === ' ' || line[i] === '\t') i++;
      if (i < line.length && line[i] !== ',') return 'text after the closing quote of a cell';
    } else {
      const comma = line.indexOf(',', i);
      cell = line.slice(i, comma < 0 ? line.length : comma).trim();
      i = comma < 0 ? line.length : comma;
    }
    cells.push(cell);
    if (i >= line.length) return cells;
    i++; // the comma
  }
}

/**
 * Reads a user map: UTF-8 (a BOM is allowed) CSV lines `key,mailbox`, where the key is a Pivot
 * email (matched as a mailbox key, so any case or IDN form) or a user id (exact). Blank lines and
 * `#` comments are skipped, and so is a header: the first other line when its second cell is a
 * header word (`mailbox`, `email`, ...). Every other line must be exactly two cells, a non-empty
 * key and a valid mailbox; a key given twice must map to the same mailbox. Anything else is a
 * CONFIG error naming the file, the line and what is wrong, never quoting the line: a wrong file
 * given by mistake (the job's env file of secrets beside users.csv) would have its secrets copied
 * into stderr, the logs and the ledger, for good. Mailboxes (and email keys) come out as mailbox keys.
 */
export async function readUserMap(path: string): Promise<Map<string, string>> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `cannot read user map ${path}: ${errorMessage(err)}`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new PivotArchiveError(ErrorCode.CONFIG, `user map ${path} is not UTF-8 text: save it as UTF-8 (CSV UTF-8)`);
  }
  const map = new Map<string, { mailbox: string; line: number }>();
  let seenContent = false;
  for (const [index, line] of text.split(/\r\n|\r|\n/).entries()) {
    const number = index + 1;
    const fail = (what: string) => new PivotArchiveError(ErrorCode.CONFIG, `${path}:${number}: ${what}`);
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const first = !seenContent;
    seenContent = true;
    const cells = csvCells(trimmed);
    if (typeof cells === 'string') throw fail(cells);
    if (first && cells.length >= 2 && HEADER_WORDS.has(cells[1]!.toLowerCase().replace(/\s+/g, ' '))) {
      if (cells.length !== 2) throw fail(`the header line has ${cells.length} cells; expected 2 ("pivot email or user id,mailbox")`);
      continue;
    }
    if (cells.length === 1) throw fail('no comma: expected "pivot email or user id,mailbox"');
    if (cells.length !== 2) throw fail(`${cells.length} cells; expected 2 ("pivot email or user id,mailbox")`);
    const [rawKey, rawMailbox] = cells as [string, string];
    if (rawKey === '') throw fail('the key (first cell: a Pivot email or user id) is empty');
    if (rawMailbox === '') throw fail('the mailbox (second cell) is empty');
    const target = checkAddress(rawMailbox);
    if (!target.ok) {
      const hint = first ? ` (a first line is taken as a header only when its second cell is one of: ${[...HEADER_WORDS].join(', ')})` : '';
      throw fail(`the mailbox (second cell) is not a valid email address: ${target.reason}${hint}`);
    }
    let key = rawKey;
    if (rawKey.includes('@')) {
      const email = checkAddress(rawKey);
      if (!email.ok) {
        throw fail(`the key (first cell) has an @ but is not a valid email address (${email.reason}); map a user whose Pivot email is malformed by its user id`);
      }
      key = email.address.mailbox;
    }
    const earlier = map.get(key);
    if (earlier && earlier.mailbox !== target.address.mailbox) {
      throw fail(`the key (first cell) is mapped twice: on line ${earlier.line} to another mailbox`);
    }
    if (!earlier) map.set(key, { mailbox: target.address.mailbox, line: number });
  }
  return new Map([...map].map(([key, { mailbox }]) => [key, mailbox]));
}

/** A `--domain` value (a leading `@` allowed, U-labels or A-labels) as its lower-case A-label form. */
export function parseDomain(domain: string): string {
  const value = typeof domain === 'string' ? domain.trim().replace(/^@/, '') : domain;
  const check =
    typeof value === 'string' && value.includes('@')
      ? { ok: false as const, reason: 'it looks like an email address; give only the part after the @' }
      : checkDomain(value);
  if (!check.ok) throw new PivotArchiveError(ErrorCode.CONFIG, `--domain ${JSON.stringify(domain)} is not a domain name: ${check.reason}`);
  return check.domain;
}
