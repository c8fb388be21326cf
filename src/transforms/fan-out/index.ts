import { readFile } from 'node:fs/promises';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import type { User } from '../../model.js';
import { validEmail } from '../mime/index.js';

export interface FanOutConfig {
  /** Only mailboxes in these domains are targets (empty: any domain). */
  domains: string[];
  /** Pivot email (any case) or user id -> mailbox; overrides the *Email* property. */
  userMap: Map<string, string>;
  /** Receives items that have no target at all; without it they are rejected `unmapped`. */
  defaultMailbox?: string;
}

/**
 * The mailboxes an item goes to: each participant whose email (or user-map entry) maps to
 * a mailbox of the organisation, lowercased and each once, in a stable order.
 */
export function targetMailboxes(participants: readonly User[], config: FanOutConfig): string[] {
  const mailboxes = new Set<string>();
  for (const user of participants) {
    const email = validEmail(user.email);
    const mapped = config.userMap.get(user.id) ?? (email ? config.userMap.get(email.toLowerCase()) : undefined);
    const mailbox = (mapped ?? email)?.toLowerCase();
    if (!mailbox) continue;
    if (config.domains.length > 0 && !config.domains.includes(mailbox.slice(mailbox.lastIndexOf('@') + 1))) continue;
    mailboxes.add(mailbox);
  }
  if (mailboxes.size === 0 && config.defaultMailbox) mailboxes.add(config.defaultMailbox.toLowerCase());
  return [...mailboxes].sort();
}

/** Reads `key,mailbox` lines (key: a Pivot email or user id); `#` comments and a header line are allowed. */
export async function readUserMap(path: string): Promise<Map<string, string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `cannot read user map ${path}: ${errorMessage(err)}`);
  }
  const map = new Map<string, string>();
  for (const [index, line] of text.split(/\r?\n/).entries()) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;
    const cells = trimmed.split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1'));
    const mailbox = validEmail(cells[1]);
    if (index === 0 && !mailbox) continue; // header line
    if (cells.length !== 2 || !cells[0] || !mailbox) {
      throw new PivotArchiveError(ErrorCode.CONFIG, `${path}:${index + 1}: expected "pivot email or user id,mailbox"`);
    }
    map.set(cells[0].includes('@') ? cells[0].toLowerCase() : cells[0], mailbox.toLowerCase());
  }
  return map;
}

export function parseDomain(domain: string): string {
  const d = domain.trim().toLowerCase().replace(/^@/, '');
  if (!validEmail(`x@${d}`)) throw new PivotArchiveError(ErrorCode.CONFIG, `--domain ${JSON.stringify(domain)} is not a domain name`);
  return d;
}
