// What `verify` expects a store to hold, gathered from a ledger of any size in bounded memory:
// while the ledger is read, each delivered or skipped outcome is written to one of a fixed number
// of group files by its mailbox; then one group at a time is read back, folded into one entry per
// stored message, and checked. Held whole, a day of 727,000 deliveries cost verify 509 MB.
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { locationKeptApart, type WantedMessage } from './sinks/index.js';
import type { LedgerLine } from './ledger/writer.js';
import { temporarySpaceError } from './errors.js';
import { secondOf } from './sinks/held.js';
import { recordedVersion } from './ledger/version.js';

/** A (mailbox, message) the ledger says the store holds, with the sha256 it was delivered with (absent: found there, never delivered by this ledger). */
export interface Expected extends WantedMessage {
  mailbox: string;
  itemId: string;
  sha256?: string;
  /**
   * The version digest (sha256 less X-Pivot-Export-Id) the record of `sha256` carries, when it
   * carries one (src/ledger/version.ts): a copy of that version answers for it, intact by version.
   */
  version?: string;
  /** The bytes this tool would deliver, when it found the message already there (skipped). */
  builtSha256?: string;
  /** The version digest the record of `builtSha256` carries, when it carries one. */
  builtVersion?: string;
  /** A record in the scope asked (--export, --since) names it. */
  inScope: boolean;
  /**
   * The other versions of the item this ledger delivered into a store that keeps one message per
   * identity (IMAP, Graph): each sha256 the store must still hold beside the latest (a corrected
   * re-delivery is stored beside the first version), with where its latest delivery put it.
   */
  versions?: { sha256: string; location?: string; version?: string }[];
}

/** What one outcome line keeps in its group file. */
interface Noted {
  mailbox: string;
  itemId: string;
  messageId: string;
  sentAt: string;
  location?: string;
  sha256?: string;
  /** The record's version digest, when it has one. */
  version?: string;
  delivered: boolean;
  inScope: boolean;
}

/** What `work` does in the temporary directory; E_TEMPORARY when it cannot. */
function temporary<T>(work: () => T): T {
  try {
    return work();
  } catch (err) {
    throw temporarySpaceError("verify's list of the messages to find", 'about 200 bytes a delivery', tmpdir(), err);
  }
}

/** Groups: a day of a million events is about 60,000 entries a group. */
const GROUPS = 64;
/** Bytes a group collects before they are written. */
const FLUSH_AT = 64 * 1024;

export class ExpectedMessages {
  private readonly dir = temporary(() => mkdtempSync(join(tmpdir(), 'pivot-archive-verify-')));
  private readonly pending: string[][] = Array.from({ length: GROUPS }, () => []);
  private readonly pendingBytes = new Array<number>(GROUPS).fill(0);
  /** Groups with a file: each is opened for a write and closed again (64 held open took what a low `ulimit -n` leaves to the store's reads). */
  private readonly written: boolean[] = new Array<boolean>(GROUPS).fill(false);

  /** Notes one outcome line (delivered or skipped, with the fields a store is asked by). */
  add(line: LedgerLine, inScope: boolean): void {
    if (line.record !== 'outcome' || (line.outcome !== 'delivered' && line.outcome !== 'skipped') || !line.mailbox || !line.messageId || !line.sentAt) return;
    const noted: Noted = { mailbox: line.mailbox, itemId: line.itemId, messageId: line.messageId, sentAt: line.sentAt, delivered: line.outcome === 'delivered', inScope };
    if (line.location) noted.location = line.location;
    if (line.sha256) noted.sha256 = line.sha256;
    const version = recordedVersion(line);
    if (version !== undefined) noted.version = version;
    const group = groupOf(line.mailbox);
    const text = `${JSON.stringify(noted)}\n`;
    this.pending[group]!.push(text);
    this.pendingBytes[group]! += text.length;
    if (this.pendingBytes[group]! >= FLUSH_AT) this.flush(group);
  }

  /**
   * Each group in turn, as one entry per stored message: the sha256 of the latest delivery of it,
   * or, for a message only ever found there, the bytes this tool would have delivered; where the
   * latest delivery put it (else where the latest skip found it); in a store of one message per
   * identity, the other versions delivered (`versions`). Which records are one stored message: see
   * `storedKey`.
   */
  *groups(): Generator<Expected[]> {
    for (let group = 0; group < GROUPS; group++) {
      this.flush(group);
      if (!this.written[group]) continue;
      const expected = new Map<string, Expected & { locatedBy?: 'delivery' | 'skip'; delivered?: Map<string, { location?: string; version?: string }> }>();
      for (const text of readFileSync(this.path(group), 'utf8').split('\n')) {
        if (text === '') continue;
        const n = JSON.parse(text) as Noted;
        const key = storedKey(n);
        const e = expected.get(key) ?? { mailbox: n.mailbox, itemId: n.itemId, messageId: n.messageId, sentAt: n.sentAt, inScope: false };
        // A delivery's location wins over a skip's: a skip may name a copy someone added since.
        if (n.location && (n.delivered || e.locatedBy !== 'delivery')) {
          e.location = n.location;
          e.locatedBy = n.delivered ? 'delivery' : 'skip';
        }
        // The version digest goes with the sha256 of its own record (a record without one clears it).
        if (n.delivered) {
          e.sha256 = n.sha256;
          if (n.version !== undefined) e.version = n.version;
          else delete e.version;
        } else {
          e.builtSha256 = n.sha256;
          if (n.version !== undefined) e.builtVersion = n.version;
          else delete e.builtVersion;
        }
        // Every version delivered under one identity (a skip stores nothing: it names no version of its own).
        if (n.delivered && n.sha256 !== undefined && key === identityOf(n)) {
          e.delivered ??= new Map();
          e.delivered.set(n.sha256, { ...(n.location === undefined ? {} : { location: n.location }), ...(n.version === undefined ? {} : { version: n.version }) });
        }
        e.inScope ||= n.inScope;
        expected.set(key, e);
      }
      yield [...expected.values()].map(({ locatedBy: _, delivered, ...e }) => {
        const versions = [...(delivered ?? [])].filter(([sha256]) => sha256 !== e.sha256).map(([sha256, of]) => ({ sha256, ...of }));
        return versions.length > 0 ? { ...e, versions } : e;
      });
    }
  }

  /** Removes the group files. */
  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private flush(group: number): void {
    const lines = this.pending[group]!;
    if (lines.length === 0) return;
    temporary(() => {
      appendFileSync(this.path(group), lines.join(''), { mode: 0o600 });
      this.written[group] = true;
    });
    this.pending[group] = [];
    this.pendingBytes[group] = 0;
  }

  private path(group: number): string {
    return join(this.dir, `${group}.jsonl`);
  }
}

/** A mailbox's group: FNV-1a of its name. */
function groupOf(mailbox: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < mailbox.length; i++) h = Math.imul(h ^ mailbox.charCodeAt(i), 0x01000193);
  return (h >>> 0) % GROUPS;
}

/**
 * Which ledger records are one stored message (in one mailbox). Where a store keeps one message per
 * identity (Message-ID and sentAt's second: IMAP, Graph, and records without a location), every
 * record of the identity is the same message whatever copy it names: a delivery at one UID and a
 * re-run's skip at another copy are one message, so the second copy is unexpected, never a second
 * expected message. A Maildir file keeps its own (a content-named variant `.C<hash>` is another
 * version of the identity, stored beside it on purpose), and so does a staged batch entry (each
 * export stages its own batches): by location, as before.
 */
function storedKey(n: Noted): string {
  if (n.location === undefined || !locationKeptApart(n.location)) return identityOf(n);
  return n.location;
}

/** A record's identity in its mailbox: Message-ID and sentAt's second. */
function identityOf(n: Noted): string {
  return `${n.mailbox}\u0000${n.messageId}\u0000${secondOf(n.sentAt)}`;
}


