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
  LOCKED: 'E_LOCKED',
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
} as const;

export const ExitCode = { OK: 0, DELIVERY_FAILED: 1, SETUP_FAILED: 2, LOCKED: 3, INTERRUPTED: 4 } as const;

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
