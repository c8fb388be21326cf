import { NoteReason, RejectReason } from '../../errors.js';
import { isRejection, positionText, reject, type ExportContext, type Item, type Rejection, type SourceEvent, type User } from '../../model.js';
import { checkEvent, isObject, optional } from '../../formats/pivot-export/event.js';
import type { Recorder } from '../../pipeline/recorder.js';
import { rejected, type Stage } from '../../pipeline/unit.js';

/**
 * Turns one source element into an item, or a rejection with its reason: what the source could
 * not hold or parse, a reused id, fields that break the spec. Never throws.
 */
export function validateEvent(archive: ExportContext, event: SourceEvent): Item | Rejection {
  const { position, raw: input } = event;
  const at = positionText(position);
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
    return reject(raw, position, RejectReason.DUPLICATE_ID, `event ${JSON.stringify(raw.id)} at ${at} reuses the id of the event at ${positionText(first)} (ids are unique per export); the id stays the first's, this one is kept`, original);
  }
  const checked = checkEvent(raw, archive);
  if ('reason' in checked) return reject(raw, position, checked.reason, checked.detail, original);
  const { conversation, sender, member, time, subMs } = checked;
  const participantIds = new Set(archive.membersAt(conversation.id, { time, subMs, ...position }));
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

/**
 * The validate stage: an event becomes an item or a rejection. Bytes that were not UTF-8 (read
 * as U+FFFD) are noted, naming the event, its file and the offset; the item goes on.
 */
export function validateStage(archive: ExportContext, recorder: Recorder): Stage<'event'> {
  return async ({ event }) => {
    const x = validateEvent(archive, event);
    if (isRejection(x)) return rejected(x);
    if (event.invalidUtf8At !== undefined) {
      const file = archive.messageFileName(event.position.file);
      await recorder.note(
        NoteReason.INVALID_UTF8,
        `event ${JSON.stringify(x.id)} (${file}, event ${event.position.index}) holds bytes that are not UTF-8 (the first at byte ${event.invalidUtf8At} of the event); they were read as U+FFFD and the item delivered so; the original bytes stay in the archive`,
        { itemId: x.id, conversationId: x.conversation.id },
      );
    }
    // A message is UTF-8: a lone surrogate cannot be written and becomes U+FFFD, which an auditor must be told.
    const altered = (['text', 'html'] as const).filter((field) => x[field]?.isWellFormed() === false);
    if (altered.length > 0) {
      const file = archive.messageFileName(event.position.file);
      await recorder.note(
        NoteReason.UNPAIRED_SURROGATE,
        `event ${JSON.stringify(x.id)} (${file}, event ${event.position.index}): its ${altered.join(' and ')} holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair), which UTF-8 cannot carry; written as U+FFFD and the item delivered so; the original stays in the archive`,
        { itemId: x.id, conversationId: x.conversation.id },
      );
    }
    return { kind: 'item', position: x.position, item: x };
  };
}
