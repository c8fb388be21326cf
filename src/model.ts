import type { Writable } from 'node:stream';
import type { RejectReasonValue } from './errors.js';
import type { ZipEntry } from './formats/zip/index.js';

/** Types of the input contract (the Pivot export format v1, see the README) and of items in the chain. */

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

/** Where an event stands, as messages and logs say it: `messages file F, event E`. */
export function positionText(position: EventPosition): string {
  return `messages file ${position.file}, event ${position.index}`;
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
  /** Extra `X-` headers added by plugins (name -> value); see `whyNotPluginHeader`. */
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

/** A bad or refused item: never delivered, always recorded with its reason. */
export interface Rejection {
  rejected: true;
  /** Where the event stands in the archive (for the resume checkpoint). */
  position: EventPosition;
  itemId: string;
  conversationId: string;
  reason: RejectReasonValue;
  detail: string;
  /** The parsed event (or what could be made of it); for plugins' and logs' sake. */
  raw: Record<string, unknown>;
  /** The event's exact bytes in the archive, kept as they were (absent when too large to hold). */
  bytes?: Buffer;
  /** Where the bytes of an event too large to hold stand in its messages file. */
  tooLarge?: { offset: number; length: number };
}

export function reject(
  raw: Record<string, unknown>,
  position: EventPosition,
  reason: RejectReasonValue,
  detail: string,
  original: { bytes?: Buffer; tooLarge?: { offset: number; length: number } } = {},
): Rejection {
  return {
    rejected: true,
    position,
    itemId: typeof raw.id === 'string' ? raw.id : '',
    conversationId: typeof raw.conversationId === 'string' ? raw.conversationId : '',
    reason,
    detail,
    raw,
    ...(original.bytes ? { bytes: original.bytes } : {}),
    ...(original.tooLarge ? { tooLarge: original.tooLarge } : {}),
  };
}

/**
 * A rejection of a checked item, carrying its exact bytes for the rejects folder. It is named as
 * its deliveries would be (`item.id`): a part a plugin split off is its own item, not its event.
 */
export function rejectItem(item: Item, reason: RejectReasonValue, detail: string): Rejection {
  return { ...reject(item.raw, item.position, reason, detail, { bytes: item.bytes }), itemId: item.id, conversationId: item.conversation.id };
}

export function isRejection(value: unknown): value is Rejection {
  return typeof value === 'object' && value !== null && (value as Rejection).rejected === true;
}

/**
 * What the stages of the chain may ask of the export an item came from: its identity, its
 * directory (users, conversations, membership over time) and its bytes (attachments, and the
 * exact bytes of events too large to hold). A source of already built messages has none.
 */
export interface ExportContext {
  exportId: string;
  tenant: string;
  users: ReadonlyMap<string, User>;
  conversations: ReadonlyMap<string, Conversation>;
  /** The members of a conversation at an event (its time, `subMs` its fraction of a millisecond; at the same time, its place in its file). */
  membersAt(conversationId: string, at: EventPosition & { time: number; subMs: number }): Iterable<string>;
  attachment(id: string): ZipEntry | undefined;
  /** Name of a messages file, for notes that point at bytes. */
  messageFileName(index: number): string | undefined;
  /** Streams the exact bytes of an event too large to hold into `out`, and ends it. */
  copyEventBytes(position: EventPosition, range: { offset: number; length: number }, out: Writable): Promise<void>;
  /**
   * Whether `id` is one of the export's events' ids: an item a plugin gives it is refused. Without
   * it (a test's stand-in) the ids plugins give are checked only against each other.
   */
  hasEventId?(id: string): boolean;
}

/** The headers every message carries itself, and the IMAP sink's version field: a plugin may not set them. */
const BUILT_IN_X_HEADERS: ReadonlySet<string> = new Set(['x-pivot-item-id', 'x-pivot-conversation-id', 'x-pivot-export-id', 'x-pivot-event-type', 'x-pivot-version']);

/** Why a plugin may not add a header of this name (only `X-` names of its own), or undefined when it may. */
export function whyNotPluginHeader(name: string): string | undefined {
  if (!/^X-[A-Za-z0-9-]{1,60}$/i.test(name)) return `header ${JSON.stringify(name)} is not an X- header (X- then 1-60 letters, digits or hyphens): plugins add only X- headers`;
  if (BUILT_IN_X_HEADERS.has(name.toLowerCase())) return `header ${JSON.stringify(name)} is set by pivot-archive itself`;
  return undefined;
}
