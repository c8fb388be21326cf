import { RejectReason } from '../../errors.js';
import type { EventPosition, Item, SourceEvent, User } from '../../model.js';
import { checkEvent, isObject, optional, type Directory } from '../../formats/pivot-export/event.js';
import type { MembershipTimeline } from '../../formats/pivot-export/membership.js';

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
