// One chat event as the sink tests deliver it: a room message by one user, built by our MIME
// stage, for one or more mailboxes. Copies for several mailboxes share their bytes and a copyKey,
// as fan-out gives them.
import type { Delivery } from '../../src/model.js';
import { buildMessage, messageIdFor } from '../../src/transforms/mime/index.js';

export interface ChatEvent {
  id: string;
  sentAt: string;
  text: string;
  exportId: string;
  /** Where the event stands in its archive (messages file 0). */
  index: number;
  conversation?: { id: string; name: string };
  sender?: { id: string; displayName: string; email: string };
}

/** The event's deliveries, one per mailbox; with several mailboxes they are copies (one copyKey). */
export function chatDeliveries(event: ChatEvent, mailboxes: string[]): Delivery[] {
  const user = event.sender ?? { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' };
  const conversation = event.conversation ?? { id: 'c_1', name: 'Conformance' };
  const position = { file: 0, index: event.index };
  const message = buildMessage(
    {
      id: event.id,
      type: 'message',
      sentAt: event.sentAt,
      conversation: { ...conversation, type: 'room', members: [user.id] },
      sender: user,
      text: event.text,
      attachments: [],
      participants: [user],
      headers: {},
      raw: {},
      position,
    },
    { tenant: 'acme', exportId: event.exportId },
    [],
  );
  const shared = {
    exportId: event.exportId,
    position,
    itemId: event.id,
    conversationId: conversation.id,
    messageId: messageIdFor('acme', event.id),
    internalDate: Date.parse(event.sentAt),
    message,
  };
  return mailboxes.map((mailbox) => ({ mailbox, ...shared, ...(mailboxes.length > 1 ? { copyKey: `${event.exportId}:${event.id}` } : {}) }));
}
