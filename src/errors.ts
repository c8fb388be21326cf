/**
 * Every error the tool reports has a stable code from this one module, so scripts and
 * tests can match on codes rather than on message text.
 */
export const ErrorCode = {
  USAGE: 'E_USAGE',
  CONFIG: 'E_CONFIG',
  ARCHIVE_UNREADABLE: 'E_ARCHIVE_UNREADABLE',
  ARCHIVE_CORRUPT: 'E_ARCHIVE_CORRUPT',
  ARCHIVE_HOSTILE: 'E_ARCHIVE_HOSTILE',
  ARCHIVE_MISSING_ENTRY: 'E_ARCHIVE_MISSING_ENTRY',
  ARCHIVE_VERSION: 'E_ARCHIVE_VERSION',
  ARCHIVE_CONTENT: 'E_ARCHIVE_CONTENT',
  PLUGIN_LOAD: 'E_PLUGIN_LOAD',
  PLUGIN_INVALID: 'E_PLUGIN_INVALID',
  PLUGIN_VERSION: 'E_PLUGIN_VERSION',
  PLUGIN_DUPLICATE: 'E_PLUGIN_DUPLICATE',
  SINK_CONFIG: 'E_SINK_CONFIG',
  SINK_CLOSED: 'E_SINK_CLOSED',
  SINK_WRITE: 'E_SINK_WRITE',
  /** The sink cannot work at all (root not writable, credentials refused): found when it opens. */
  SINK_UNAVAILABLE: 'E_SINK_UNAVAILABLE',
  /** The status log (or a run record) cannot be written. */
  STATUS_LOG: 'E_STATUS_LOG',
  LOCKED: 'E_LOCKED',
  /** The ledger cannot be read or written, or fails its chain. */
  LEDGER: 'E_LEDGER',
  /** Staged batches that the staging run listed are gone, or the export's staging run is part-way: an import cannot deliver all of it. */
  STAGING_INCOMPLETE: 'E_STAGING_INCOMPLETE',
  /** A staging index the key given to import (`--public-key`) did not sign, or a batch the export's latest index does not name: someone else wrote it. */
  STAGING_UNTRUSTED: 'E_STAGING_UNTRUSTED',
  /** Temporary space (TMPDIR) cannot be used. */
  TEMPORARY: 'E_TEMPORARY',
  /** The process's open-file limit (`ulimit -n`) is too low for a run or an import to work. */
  OPEN_FILE_LIMIT: 'E_OPEN_FILE_LIMIT',
  /** SIGINT/SIGTERM while the run was still starting and waited on what does not end by itself (a plugin's load): exit 4, recorded. */
  STOPPED: 'E_STOPPED',
  /** A bug in this tool, not in the input or the setup. */
  INTERNAL: 'E_INTERNAL',
} as const;

export type ErrorCodeValue = (typeof ErrorCode)[keyof typeof ErrorCode];

export class PivotArchiveError extends Error {
  readonly code: ErrorCodeValue;
  constructor(code: ErrorCodeValue, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PivotArchiveError';
    this.code = code;
  }
}

/** Reasons recorded for items that are not delivered; stable strings for the status log. */
export const RejectReason = {
  MISSING_FIELD: 'missing-field',
  INVALID_FIELD: 'invalid-field',
  UNKNOWN_TYPE: 'unknown-type',
  UNKNOWN_CONVERSATION: 'unknown-conversation',
  UNKNOWN_USER: 'unknown-user',
  OVERSIZE: 'oversize',
  UNMAPPED: 'unmapped',
  ATTACHMENT_UNREADABLE: 'attachment-unreadable',
  PLUGIN_ERROR: 'plugin',
  PLUGIN_DROP: 'dropped',
  /** A later event that reuses an id already used in the same export (the first is delivered). */
  DUPLICATE_ID: 'duplicate-id',
  /** An array element of a messages file that is not valid JSON. */
  MALFORMED_JSON: 'malformed-json',
  /** An event larger than --max-event-size: never held in memory, its bytes streamed to the rejects folder. */
  EVENT_TOO_LARGE: 'event-too-large',
} as const;

type RejectReasonName = (typeof RejectReason)[keyof typeof RejectReason];
/** A reject reason, alone or with what it is about: `missing-field:sentAt`, `plugin:<name>`. */
export type RejectReasonValue = RejectReasonName | `${RejectReasonName}:${string}`;

/** Reasons of `note` records: something recorded about the input, the item still delivered. */
export const NoteReason = {
  HOSTILE_ENTRY_NAME: 'hostile-entry-name',
  /** An archive entry outside the spec's layout (e.g. `Messages/a.json`, `messages/a.JSON`): not read. */
  IGNORED_ENTRY: 'ignored-entry',
  ATTACHMENT_MISSING: 'attachment-missing',
  /** An `attachments/<id>` entry that no event names: its bytes are in the archive, in no message. */
  UNNAMED_ATTACHMENT: 'unnamed-attachment',
  /** Bytes that are not UTF-8 in an event: read as U+FFFD; the original bytes are in the note's location. */
  INVALID_UTF8: 'invalid-utf8',
  /** A lone UTF-16 surrogate (`"\\ud800"`, valid JSON) in an event's text or html: written as U+FFFD; the original is in the archive. */
  UNPAIRED_SURROGATE: 'unpaired-surrogate',
  /** A participant's address that a sink cannot take (e.g. a non-ASCII local part over IMAP). */
  ADDRESS_NOT_DELIVERABLE: 'address-not-deliverable',
  /** A conversation member that users.json does not hold (or a `members` entry that is no id): no mailbox of theirs gets its events. */
  UNKNOWN_MEMBER: 'unknown-member',
} as const;

export type NoteReasonValue = (typeof NoteReason)[keyof typeof NoteReason];

/** Reasons of `failed` outcomes. */
export const FailReason = {
  SINK_ERROR: 'sink-error',
  /** A rejected item that could not be kept in the rejects folder. */
  NOT_KEPT: 'not-kept',
  STAGED_MISMATCH: 'staged-mismatch',
  /**
   * Sharded (--shard K/N, N > 1): a plugin failed on the item (`plugin:<name>`). Other shards may
   * have delivered it, so it is not kept as rejected; the next run of this shard reads it again.
   */
  PLUGIN_ERROR_IN_SHARD: 'plugin-error-in-shard',
} as const;

export type FailReasonValue = (typeof FailReason)[keyof typeof FailReason];

/**
 * 0 all accounted for; 1 some items failed (not delivered, or rejected and not kept); 2 usage,
 * config or archive error before any delivery; 3 locked; 4 stopped by a signal; 5 the run
 * accounted for everything but looks wrong: nothing delivered, or more rejected than
 * --max-rejected allows (a mapping mistake); `verify`: 6 the store does not hold what the ledger
 * says (missing, altered or unexpected messages), 7 the ledger fails its chain, a checkpoint or
 * a signature; 70 a bug in this tool (EX_SOFTWARE).
 */
export const ExitCode = { OK: 0, DELIVERY_FAILED: 1, SETUP_FAILED: 2, LOCKED: 3, INTERRUPTED: 4, ALARM: 5, STORE_MISMATCH: 6, LEDGER_BROKEN: 7, INTERNAL: 70 } as const;

/** The stable code of an error: ours, or E_INTERNAL for anything we did not raise (a bug). */
export function errorCodeOf(err: unknown): ErrorCodeValue {
  return err instanceof PivotArchiveError ? err.code : ErrorCode.INTERNAL;
}

/** The message of a thrown value, whatever it is; never throws (a plugin may throw a value that cannot be made text). */
export function errorMessage(err: unknown): string {
  try {
    return err instanceof Error ? String(err.message) : String(err);
  } catch {
    return `a thrown ${typeof err} that cannot be shown as text`;
  }
}

/** E_TEMPORARY: `what` (needing `room`) cannot be kept in the temporary directory `dir`. */
export function temporarySpaceError(what: string, room: string, dir: string, err: unknown): PivotArchiveError {
  return new PivotArchiveError(ErrorCode.TEMPORARY, `${what} cannot be kept in a temporary file under ${dir} (${room}; set TMPDIR to a roomier place): ${errorMessage(err)}`, { cause: err });
}
