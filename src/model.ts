/** Types of the input contract (shared/spec/pivot-export-v1.md) and of items in the chain. */

export const EVENT_TYPES = ['message', 'edit', 'delete', 'join', 'leave'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface Manifest {
  format: 'pivot-export';
  version: 1;
  exportId: string;
  tenant: string;
  windowStart: string;
  windowEnd: string;
  createdAt: string;
}

export interface User {
  id: string;
  displayName?: string | null;
  email?: string | null;
  company?: string | null;
}

export interface Conversation {
  id: string;
  type: 'direct' | 'group' | 'room';
  name?: string | null;
  createdAt?: string;
  members: string[];
}

export interface AttachmentRef {
  id: string;
  fileName?: string | null;
  contentType?: string | null;
  size?: number | null;
}

/** An event as it stands in messages/*.json: nothing is trusted yet. */
export type RawEvent = Record<string, unknown>;

/** Where an event stands in the archive: the order it is read in. */
export interface EventPosition {
  /** Index of the messages file in name order. */
  file: number;
  /** Index of the event in its file. */
  index: number;
}

/**
 * One array element of a messages file, as the source read it. `bytes` are the element's exact
 * bytes in the archive (what the rejects folder keeps); `raw` is their parsed value. An element
 * that could not be held or parsed has no `raw`, and says why.
 */
export interface SourceEvent {
  position: EventPosition;
  /** The element's exact bytes; absent only when it was over the event size cap (`tooLarge`). */
  bytes?: Buffer;
  /** The parsed element (any JSON value); absent when `malformed` or `tooLarge`. */
  raw?: unknown;
  /** Why the element's bytes are not valid JSON. */
  malformed?: string;
  /** The element was over the cap: never held; its bytes stand at this range of its messages file. */
  tooLarge?: { offset: number; length: number };
  /** Another event of this export used this id before (its position): this one is a duplicate. */
  duplicateOf?: EventPosition;
  /** Offset within the element of its first byte that is not UTF-8 (read as U+FFFD). */
  invalidUtf8At?: number;
}

/** A checked event, ready for plugins, MIME and fan-out. */
export interface Item {
  id: string;
  type: EventType;
  sentAt: string;
  conversation: Conversation;
  sender: User;
  text?: string;
  html?: string;
  replyToId?: string;
  targetId?: string;
  /** For join/leave: who joined or left. */
  member?: User;
  attachments: AttachmentRef[];
  /** Users taking part in the event (members at that time, sender, join/leave member). */
  participants: User[];
  /** Extra `X-` headers added by plugins (name -> value). */
  headers: Record<string, string>;
  /** The event exactly as read from the archive, for the rejects folder. */
  readonly raw: RawEvent;
  /** The event's exact bytes in the archive (what the rejects folder keeps). */
  readonly bytes?: Buffer;
  readonly position: EventPosition;
}

/** One (mailbox, message) pair, the unit a sink delivers. */
export interface Delivery {
  mailbox: string;
  /** The export the item came from (a batching sink names its batches after it). */
  exportId: string;
  /** Where the item's event stands in its archive (for the checkpoint and for batching). */
  position: EventPosition;
  itemId: string;
  conversationId: string;
  messageId: string;
  /** Milliseconds since the epoch: becomes INTERNALDATE / file mtime. */
  internalDate: number;
  message: Buffer;
  /**
   * Shared by the copies of one item for different mailboxes, whose bytes are identical, and by
   * nothing else: a sink may store such copies once (Maildir: hard links). Absent: never shared.
   */
  copyKey?: string;
}
