// The event rules of the Pivot export format (v1): what a valid event holds. The source uses them
// to decide membership (only a valid join/leave counts), the validate stage to decide delivery.
import { RejectReason, type RejectReasonValue } from '../../errors.js';
import { readZonedTime } from './time.js';
import { EVENT_TYPES, type AttachmentRef, type Conversation, type EventType, type User } from '../../model.js';

/** What validation needs of the archive. */
export interface Directory {
  users: ReadonlyMap<string, User>;
  conversations: ReadonlyMap<string, Conversation>;
}

/** An event whose fields keep the spec; participants are not resolved yet. */
export interface CheckedEvent {
  id: string;
  type: EventType;
  /** The time in its canonical form (see readZonedTime), whatever ISO 8601 form the event used. */
  sentAt: string;
  /** Milliseconds since the epoch (the fraction's first three digits). */
  time: number;
  /** The fraction of a millisecond the time's further digits give (0 to 1): a join and a message within one millisecond are still ordered. */
  subMs: number;
  conversation: Conversation;
  sender: User;
  /** For join/leave: who joined or left. */
  member?: User;
  attachments: AttachmentRef[];
}

/**
 * Checks one parsed event's fields against the spec (the same rules decide whether a join/leave
 * changes membership and whether the event is delivered). Fields not in the spec are ignored.
 */
export function checkEvent(raw: Record<string, unknown>, directory: Directory): CheckedEvent | { reason: RejectReasonValue; detail: string } {
  const bad = (reason: RejectReasonValue, detail: string) => ({ reason, detail });
  for (const field of ['id', 'type', 'sentAt', 'conversationId', 'senderId'] as const) {
    if (typeof raw[field] !== 'string' || raw[field] === '') {
      return bad(`${RejectReason.MISSING_FIELD}:${field}`, `event has no string ${field}`);
    }
  }
  const id = raw.id as string;
  // A lone surrogate (`"\ud800"`, valid JSON) reads as U+FFFD in UTF-8: two such ids would share one Message-ID.
  if (!id.isWellFormed()) {
    return bad(`${RejectReason.INVALID_FIELD}:id`, `event id ${JSON.stringify(id)} is not well-formed Unicode (a lone surrogate escape): it cannot name a message`);
  }
  const type = raw.type as string;
  if (!(EVENT_TYPES as readonly string[]).includes(type)) return bad(RejectReason.UNKNOWN_TYPE, `event ${id} has unknown type ${JSON.stringify(type)}`);
  const when = readZonedTime(raw.sentAt as string);
  if (!when) {
    return bad(`${RejectReason.INVALID_FIELD}:sentAt`, `event ${id} has sentAt ${JSON.stringify(raw.sentAt)}, not a valid ISO 8601 time with a zone`);
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
  return { id, type: type as EventType, sentAt: when.canonical, time: when.time, subMs: when.subMs, conversation, sender, member, attachments: attachments as AttachmentRef[] };
}

export function optional(raw: Record<string, unknown>, field: string): string | undefined {
  return typeof raw[field] === 'string' ? (raw[field] as string) : undefined;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
