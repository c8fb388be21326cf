import { RejectReason } from '../../errors.js';
import { EVENT_TYPES, type AttachmentRef, type Conversation, type EventPosition, type EventType, type Item, type SourceEvent, type User } from '../../model.js';
import type { MembershipTimeline } from '../participants/index.js';

/** A bad or refused item: never delivered, always recorded with its reason. */
export interface Rejection {
  rejected: true;
  /** Where the event stands in the archive (for the resume checkpoint). */
  position: EventPosition;
  itemId: string;
  conversationId: string;
  reason: string;
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
  reason: string,
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

export function isRejection(value: unknown): value is Rejection {
  return typeof value === 'object' && value !== null && (value as Rejection).rejected === true;
}

/** What validation needs of the archive. */
export interface Directory {
  users: ReadonlyMap<string, User>;
  conversations: ReadonlyMap<string, Conversation>;
}

/** An event whose fields keep the spec; participants are not resolved yet. */
export interface CheckedEvent {
  id: string;
  type: EventType;
  sentAt: string;
  time: number;
  conversation: Conversation;
  sender: User;
  /** For join/leave: who joined or left. */
  member?: User;
  attachments: AttachmentRef[];
}

const ZONED_TIME = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.\d+)?)?(?:Z|[+-](\d\d):?(\d\d))$/;

/**
 * Milliseconds since the epoch of an ISO 8601 time with a zone, or NaN. Impossible calendar
 * values (`2026-02-31`, `25:00`, a zone of `+24:00`) are NaN, never rolled over as Date.parse does.
 */
export function parseZonedTime(value: string): number {
  const m = ZONED_TIME.exec(value);
  if (!m) return NaN;
  const [year, month, day, hour, minute, second = 0, zoneHour = 0, zoneMinute = 0] = m.slice(1).map((x) => (x === undefined ? undefined : Number(x))) as number[];
  const daysInMonth = new Date(Date.UTC(year!, month!, 0)).getUTCDate();
  if (month! < 1 || month! > 12 || day! < 1 || day! > daysInMonth || hour! > 23 || minute! > 59 || second > 59 || zoneHour > 23 || zoneMinute > 59) return NaN;
  return Date.parse(value);
}

/**
 * Checks one parsed event's fields against the spec (the same rules decide whether a join/leave
 * changes membership and whether the event is delivered). Fields not in the spec are ignored.
 */
export function checkEvent(raw: Record<string, unknown>, directory: Directory): CheckedEvent | { reason: string; detail: string } {
  const bad = (reason: string, detail: string) => ({ reason, detail });
  for (const field of ['id', 'type', 'sentAt', 'conversationId', 'senderId'] as const) {
    if (typeof raw[field] !== 'string' || raw[field] === '') {
      return bad(`${RejectReason.MISSING_FIELD}:${field}`, `event has no string ${field}`);
    }
  }
  const id = raw.id as string;
  const type = raw.type as string;
  if (!(EVENT_TYPES as readonly string[]).includes(type)) return bad(RejectReason.UNKNOWN_TYPE, `event ${id} has unknown type ${JSON.stringify(type)}`);
  const sentAt = raw.sentAt as string;
  const time = parseZonedTime(sentAt);
  if (Number.isNaN(time)) {
    return bad(`${RejectReason.INVALID_FIELD}:sentAt`, `event ${id} has sentAt ${JSON.stringify(sentAt)}, not a valid ISO 8601 time with a zone`);
  }
  const conversation = directory.conversations.get(raw.conversationId as string);
  if (!conversation) return bad(RejectReason.UNKNOWN_CONVERSATION, `event ${id} names unknown conversation ${JSON.stringify(raw.conversationId)}`);
  const sender = directory.users.get(raw.senderId as string);
  if (!sender) return bad(RejectReason.UNKNOWN_USER, `event ${id} names unknown sender ${JSON.stringify(raw.senderId)}`);
  for (const field of ['text', 'html', 'replyToId', 'targetId', 'memberId'] as const) {
    if (raw[field] !== undefined && raw[field] !== null && typeof raw[field] !== 'string') {
      return bad(`${RejectReason.INVALID_FIELD}:${field}`, `event ${id} has a non-string ${field}`);
    }
  }
  if ((type === 'edit' || type === 'delete') && !optional(raw, 'targetId')) {
    return bad(`${RejectReason.MISSING_FIELD}:targetId`, `${type} event ${id} has no targetId`);
  }
  let member: User | undefined;
  if (type === 'join' || type === 'leave') {
    const memberId = optional(raw, 'memberId') ?? sender.id;
    member = directory.users.get(memberId);
    if (!member) return bad(RejectReason.UNKNOWN_USER, `event ${id} names unknown member ${JSON.stringify(memberId)}`);
  }
  const attachments = raw.attachments ?? [];
  if (!Array.isArray(attachments) || attachments.some((a) => a === null || typeof a !== 'object' || typeof a.id !== 'string' || a.id === '')) {
    return bad(`${RejectReason.INVALID_FIELD}:attachments`, `event ${id} has attachments that are not objects with a string id`);
  }
  return { id, type: type as EventType, sentAt, time, conversation, sender, member, attachments: attachments as AttachmentRef[] };
}

function optional(raw: Record<string, unknown>, field: string): string | undefined {
  return typeof raw[field] === 'string' ? (raw[field] as string) : undefined;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Turns one source element into an item, or a rejection with its reason: what the source could
 * not hold or parse, a reused id, fields that break the spec. Never throws.
 */
export function validateEvent(archive: Directory & { membership: MembershipTimeline }, event: SourceEvent): Item | Rejection {
  const { position, raw: input } = event;
  const at = `messages file ${position.file}, event ${position.index}`;
  const original = { bytes: event.bytes, tooLarge: event.tooLarge };
  if (event.tooLarge) {
    return reject({}, position, RejectReason.EVENT_TOO_LARGE, `event at ${at} is ${event.tooLarge.length} bytes, over the event size limit; its bytes are kept, never read whole`, original);
  }
  if (event.malformed !== undefined) {
    return reject({}, position, RejectReason.MALFORMED_JSON, `event at ${at} is not valid JSON: ${event.malformed}`, original);
  }
  if (!isObject(input)) {
    return reject({}, position, RejectReason.INVALID_FIELD, `event at ${at} is not a JSON object`, original);
  }
  const raw = input;
  if (event.duplicateOf) {
    const first = event.duplicateOf;
    return reject(raw, position, RejectReason.DUPLICATE_ID, `event ${JSON.stringify(raw.id)} at ${at} reuses the id of the event at messages file ${first.file}, event ${first.index} (ids are unique per export); the first is delivered, this one kept`, original);
  }
  const checked = checkEvent(raw, archive);
  if ('reason' in checked) return reject(raw, position, checked.reason, checked.detail, original);
  const { conversation, sender, member, time } = checked;
  const participantIds = new Set(archive.membership.membersAt(conversation.id, { time, ...position }));
  participantIds.add(sender.id);
  if (member) participantIds.add(member.id);
  const participants: User[] = [];
  for (const participantId of participantIds) {
    const user = archive.users.get(participantId);
    // A member id missing from users.json cannot be addressed; it is kept as a bare id.
    participants.push(user ?? { id: participantId });
  }
  return {
    id: checked.id,
    type: checked.type,
    sentAt: checked.sentAt,
    conversation,
    sender,
    text: optional(raw, 'text'),
    html: optional(raw, 'html'),
    replyToId: optional(raw, 'replyToId'),
    targetId: optional(raw, 'targetId'),
    member,
    attachments: checked.attachments,
    participants,
    headers: {},
    raw,
    bytes: event.bytes,
    position,
  };
}
