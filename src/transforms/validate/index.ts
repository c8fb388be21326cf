import { RejectReason } from '../../errors.js';
import { EVENT_TYPES, type AttachmentRef, type EventPosition, type EventType, type Item, type User } from '../../model.js';
import type { PivotExportArchive, SourceEvent } from '../../sources/pivot-zip/index.js';

/** A bad or refused item: never delivered, always recorded with its reason. */
export interface Rejection {
  rejected: true;
  /** Where the event stands in the archive (for the resume checkpoint). */
  position: EventPosition;
  itemId: string;
  conversationId: string;
  reason: string;
  detail: string;
  raw: Record<string, unknown>;
}

export function reject(
  raw: Record<string, unknown>,
  position: EventPosition,
  reason: string,
  detail: string,
): Rejection {
  return {
    rejected: true,
    position,
    itemId: typeof raw.id === 'string' ? raw.id : '',
    conversationId: typeof raw.conversationId === 'string' ? raw.conversationId : '',
    reason,
    detail,
    raw,
  };
}

export function isRejection(value: unknown): value is Rejection {
  return typeof value === 'object' && value !== null && (value as Rejection).rejected === true;
}

const ZONED_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)$/;

/**
 * Checks one event against the spec and resolves its conversation, users and participants.
 * Fields not in the spec are ignored; anything that breaks it is a rejection, never a throw.
 */
export function validateEvent(archive: PivotExportArchive, { raw: input, position }: SourceEvent): Item | Rejection {
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return reject({ value: input as unknown }, position, RejectReason.INVALID_FIELD, `event at ${position.file}:${position.index} is not a JSON object`);
  }
  const raw = input;
  const bad = (reason: string, detail: string) => reject(raw, position, reason, detail);
  for (const field of ['id', 'type', 'sentAt', 'conversationId', 'senderId'] as const) {
    if (typeof raw[field] !== 'string' || raw[field] === '') {
      return bad(`${RejectReason.MISSING_FIELD}:${field}`, `event has no string ${field}`);
    }
  }
  const id = raw.id as string;
  const type = raw.type as string;
  if (!(EVENT_TYPES as readonly string[]).includes(type)) return bad(RejectReason.UNKNOWN_TYPE, `event ${id} has unknown type ${JSON.stringify(type)}`);
  const sentAt = raw.sentAt as string;
  const time = Date.parse(sentAt);
  if (!ZONED_TIME.test(sentAt) || Number.isNaN(time)) {
    return bad(`${RejectReason.INVALID_FIELD}:sentAt`, `event ${id} has sentAt ${JSON.stringify(sentAt)}, not an ISO 8601 time with a zone`);
  }
  const conversation = archive.conversations.get(raw.conversationId as string);
  if (!conversation) return bad(RejectReason.UNKNOWN_CONVERSATION, `event ${id} names unknown conversation ${JSON.stringify(raw.conversationId)}`);
  const sender = archive.users.get(raw.senderId as string);
  if (!sender) return bad(RejectReason.UNKNOWN_USER, `event ${id} names unknown sender ${JSON.stringify(raw.senderId)}`);
  for (const field of ['text', 'html', 'replyToId', 'targetId', 'memberId'] as const) {
    if (raw[field] !== undefined && raw[field] !== null && typeof raw[field] !== 'string') {
      return bad(`${RejectReason.INVALID_FIELD}:${field}`, `event ${id} has a non-string ${field}`);
    }
  }
  const optional = (field: string) => (typeof raw[field] === 'string' ? (raw[field] as string) : undefined);
  if ((type === 'edit' || type === 'delete') && !optional('targetId')) {
    return bad(`${RejectReason.MISSING_FIELD}:targetId`, `${type} event ${id} has no targetId`);
  }
  let member: User | undefined;
  if (type === 'join' || type === 'leave') {
    const memberId = optional('memberId') ?? sender.id;
    member = archive.users.get(memberId);
    if (!member) return bad(RejectReason.UNKNOWN_USER, `event ${id} names unknown member ${JSON.stringify(memberId)}`);
  }
  const attachments = raw.attachments ?? [];
  if (!Array.isArray(attachments) || attachments.some((a) => a === null || typeof a !== 'object' || typeof a.id !== 'string' || a.id === '')) {
    return bad(`${RejectReason.INVALID_FIELD}:attachments`, `event ${id} has attachments that are not objects with a string id`);
  }

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
    id,
    type: type as EventType,
    sentAt,
    conversation,
    sender,
    text: optional('text'),
    html: optional('html'),
    replyToId: optional('replyToId'),
    targetId: optional('targetId'),
    member,
    attachments: attachments as AttachmentRef[],
    participants,
    headers: {},
    raw,
    position,
  };
}
