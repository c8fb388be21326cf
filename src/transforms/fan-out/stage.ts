import { RejectReason } from '../../errors.js';
import { rejectItem, type Delivery } from '../../model.js';
import type { Recorder } from '../../pipeline/recorder.js';
import { rejected, type Stage, type Unit } from '../../pipeline/unit.js';
import { targetMailboxes, type FanOutConfig } from './index.js';

/**
 * The fan-out stage: one delivery per target mailbox, all sharing the message's bytes and a
 * `copyKey`; an item with no target is rejected `unmapped`.
 */
export function fanOutStage(config: FanOutConfig, exportId: string, recorder: Recorder): Stage<'built'> {
  return async ({ item, message, messageId, position }) => {
    const mailboxes = targetMailboxes(item.participants, config);
    if (mailboxes.length === 0) return rejected(rejectItem(item, RejectReason.UNMAPPED, `no participant of item ${item.id} maps to a mailbox of the organisation`));
    recorder.routed(mailboxes.length);
    const shared = {
      exportId,
      position,
      itemId: item.id,
      conversationId: item.conversation.id,
      messageId,
      internalDate: Date.parse(item.sentAt),
      message,
      copyKey: `${exportId}:${position.file}:${position.index}:${item.id}`,
    };
    return mailboxes.map((mailbox): Unit => ({ kind: 'delivery', position, delivery: { mailbox, ...shared } satisfies Delivery }));
  };
}
