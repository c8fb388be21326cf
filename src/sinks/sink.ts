import type { Delivery } from '../model.js';

/** `delivered`: the sink holds it durably now; `skipped`: it already held it. */
export type WriteOutcome = 'delivered' | 'skipped';

/**
 * What a write resolves to: its outcome, and where the sink holds the message (the one it wrote,
 * or the one it found), as the ledger records it and `verify` reads it back: a Maildir path
 * relative to the root (`<mailbox>/<folder>/cur/<name>`), `<mailbox>/<folder>;UIDVALIDITY=v/;UID=u`
 * for IMAP (RFC 5092 style), `<blob name>#<entry>` for a staged batch. Absent when unknown.
 */
export interface Stored {
  outcome: WriteOutcome;
  location?: string;
}

/** A message the ledger says a mailbox holds, as `verify` asks a store for it. */
export interface WantedMessage {
  messageId: string;
  /** Its `sentAt` (ISO 8601): with the Message-ID, its identity in the mailbox. */
  sentAt: string;
  /** Where the ledger says it was stored, if it says. */
  location?: string;
  /** The sha256 of the version the ledger recorded (a store holding several versions of the item answers with that one). */
  sha256?: string;
}

/** A message a store holds, as `verify` found it: hashed there, never held whole. */
export interface HeldMessage {
  messageId: string;
  /** As the store tells it: to the second where it keeps no more (a Maildir name, an IMAP Date header). */
  sentAt?: string;
  location: string;
  /** sha256 (hex) and size of the exact bytes the store holds, whatever flags a client set. */
  sha256: string;
  size: number;
  /**
   * Which version of its item it is (the sha256 less X-Pivot-Export-Id: `messageVersion`), when the
   * reader can tell: a ledger record of that version is answered by it, held as another export built it.
   */
  version?: string;
  /** Its X-Pivot-Export-Id, when the reader can tell. */
  exportId?: string;
}

/** A message of ours a mailbox holds that no wanted message is. */
export interface UnexpectedMessage extends Omit<HeldMessage, 'sha256' | 'size' | 'version' | 'exportId'> {
  /**
   * Which version of its item it is here: the sha256 of its bytes as delivered (not `HeldMessage.version`), when the store can
   * tell: an earlier version kept beside a corrected re-delivery, which a record of the ledger
   * with that sha256 answers for (`verify`).
   */
  version?: string;
  /**
   * The sha256 of its bytes as the store reports them (as `HeldMessage.sha256`), when known without
   * more reads, for a copy of an item a wanted message is: a copy of a version verify expects that
   * is not told apart as a version of its own (a plain copy) still holds that version.
   */
  sha256?: string;
}

/**
 * How `verify` reads a store back (see src/sinks/SPEC.md): read-only, never creating anything.
 * A sink that can be verified has a factory with `reader()`.
 */
export interface StoreReader {
  readonly description: string;
  open(): Promise<void>;
  /**
   * The wanted messages the mailbox holds (by location first, else by Message-ID and `sentAt`),
   * and, unless `wanted` is a sample, the messages of ours it holds that were not wanted.
   */
  mailbox(mailbox: string, wanted: WantedMessage[], options: { sample: boolean }): Promise<{ held: Map<WantedMessage, HeldMessage>; unexpected: UnexpectedMessage[] }>;
  /** The mailboxes of the store that hold messages of ours (for unexpected ones in mailboxes the ledger never named). */
  mailboxes(): Promise<string[]>;
  close(): Promise<void>;
}

/**
 * What every sink implements (see src/sinks/SPEC.md). `write` resolves only once the message
 * is durable in the sink and rejects when it is not; `close` waits for every write and
 * flushes. A sink validates its config before any I/O (in its factory).
 */
export interface Sink {
  /** The sink's kind, e.g. `maildir`; goes into the status log. */
  readonly kind: string;
  /** Where it writes, with no secret in it; for logs. */
  readonly description: string;
  /** How many writes the pipeline keeps in flight at once. */
  readonly maxInFlight: number;
  /** Bytes of messages the pipeline may keep in flight (a batching sink needs a batch's worth). */
  readonly maxInFlightBytes?: number;
  /**
   * The sink's own record of a run (Azure Blob's staging index) names where every item of the
   * export went: a run into it reads the whole export, never resuming from a checkpoint (what is
   * there already is found and skipped), or the items done before the checkpoint would be missing
   * from that record.
   */
  readonly readsWholeExport?: boolean;
  /**
   * Told, before `close()`, when the run read its export to the end and settled every item of it
   * (nothing failed, stopped or left unread). A sink's own record of an export (Azure Blob's
   * staging index) may call it whole only then: an import would otherwise take a run stopped
   * part-way for the whole export.
   */
  exportSettled?(exportId: string): void;
  /**
   * Told once the chain has made its last `write` of the run (the export read to its end, or
   * reading stopped): a batching sink need not wait for more, and may look at a mailbox's storage
   * in the session that wrote there last, instead of a login for it in `lostSinceWritten`.
   */
  writesEnded?(): void;
  /**
   * Asked once after the last write, before the summary: why what the sink stored or found this run
   * may be gone since its mailbox's last write (its folder removed: no later write was there to
   * find it), or undefined. The run then fails as storage lost does (no checkpoint left).
   * LOOK_STOPPED when a stop signal cut the look short: nothing is said either way.
   */
  lostSinceWritten?(): Promise<LostSinceWritten | undefined | typeof LOOK_STOPPED>;
  /**
   * The folders `lostSinceWritten` would look at now (this run's and those `resumeFolders` gave),
   * each with what tells it from one made again at its place, as JSON by mailbox. A checkpoint
   * keeps them: the run that resumes past their items looks at them too.
   */
  foldersToLook?(): FoldersToLook;
  /**
   * Before the first write: the folders the earlier runs this run resumes wrote to or found items
   * in (their checkpoint's `foldersToLook`). Looked at once the last write settled, as this run's
   * are; a write there finds one deleted, or made again, as storage lost. False when `folders` is
   * not of this sink's form (the checkpoint is then not resumed).
   */
  resumeFolders?(folders: FoldersToLook): boolean;
  open(): Promise<void>;
  write(delivery: Delivery): Promise<Stored>;
  close(): Promise<void>;
}

/**
 * What `lostSinceWritten` found: the reason (the run's error), and the mailboxes whose folder it
 * found gone (removed, made again, moved away). Those took every export's messages with them, not
 * only this run's: the summary names them, and the account no longer counts any export's earlier
 * pairs there. A folder only not confirmed (a server down then) is in the reason, not in `mailboxes`.
 */
export interface LostSinceWritten {
  reason: string;
  mailboxes: string[];
}

/** `Sink.foldersToLook`: by mailbox, what the sink needs to find its folder and tell it from one made again. */
export type FoldersToLook = Record<string, unknown>;

/** What every mailbox is: an address, something on both sides of an `@` (a key of `FoldersToLook` must be one). */
export const MAILBOX_ADDRESS = /.@./s;

/** Said of a folder a sink found gone that only the earlier run this one resumes (`resumeFolders`) wrote to. */
export const RESUMED_FOLDER_NOTE = 'written by the earlier run this one resumes';

/**
 * What `lostSinceWritten` answers when a stop signal cut its look short: the folders it did not
 * look at are neither lost nor confirmed in place. A run whose items had all settled is then
 * interrupted (exit 4, not 0) and keeps no checkpoint: the next run reads the export from the
 * start and looks again.
 */
export const LOOK_STOPPED: unique symbol = Symbol('the end-of-run look was stopped');

/**
 * Errors of storage that failed, not of one write: a file system whose journal aborted (a thin
 * disk that ran out) answered writes of the moments before it stored, and lost them (measured:
 * 90-144 messages in 2 of 13 runs, after syncfs said they were durable).
 */
const STORAGE_FAULT_CODES = new Set(['EIO', 'EROFS']);

/**
 * The first few of what an error line names (folders, mailboxes), sorted (they come in the order
 * they were found), `...` after them when there are more: the line stays short at 10,000 mailboxes.
 */
export function firstFew(items: readonly string[], separator = ', '): string {
  const sorted = [...items].sort();
  return `${sorted.slice(0, 3).join(separator)}${sorted.length > 3 ? `${separator}...` : ''}`;
}

/** Marks a write's error as one that says what the sink stored before may be gone (its folder was deleted mid-run). */
export function markStorageLost<E extends Error>(err: E): E {
  return Object.assign(err, { storageLost: true });
}

/**
 * Whether a write's error says that what the sink answered stored before it may be gone too (a
 * failing disk; a folder deleted mid-run): the run's checkpoint is dropped, so the next run reads
 * the export from the start and the sink looks for every item, rather than resuming past items no
 * longer there.
 */
export function storageLost(err: unknown): boolean {
  return (err as { storageLost?: unknown }).storageLost === true || STORAGE_FAULT_CODES.has((err as NodeJS.ErrnoException).code ?? '');
}

/** What the command line tells every sink factory. */
export interface SinkOptions {
  /** Relative paths resolve against it. */
  cwd: string;
  /** Allow clear-text protocols to hosts other than loopback. */
  insecure?: boolean;
  /**
   * Aborted on SIGINT/SIGTERM: a sink stops waiting (retry back-off, reconnects) and fails what
   * it still holds at once, so the run ends within seconds; those items are recorded failed.
   */
  stop?: AbortSignal;
  /**
   * Makes a signed note of a text (`--signing-key`), for what a sink leaves for a later reader to
   * trust (the Blob sink's staging index); absent without a key.
   */
  signNote?: (text: string) => string;
}

export interface SinkFactory {
  /** The scheme of the sink spec, e.g. `maildir` in `maildir:/srv/mail`. */
  scheme: string;
  /** Parses and validates the spec; throws E_SINK_CONFIG on anything unknown. Does no I/O. */
  create(spec: string, options: SinkOptions): Sink;
  /** A reader of the same store for `verify` (same spec, same validation); absent if it cannot be verified. */
  reader?(spec: string, options: SinkOptions): StoreReader;
  /**
   * Validates the spec as `create` does, but not the secrets it reads from the environment
   * (the environment a command line is checked in, `cron --print`, is not the one it runs in).
   */
  check(spec: string, options: SinkOptions): void;
}
