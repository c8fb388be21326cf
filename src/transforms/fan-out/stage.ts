import { RejectReason } from '../../errors.js';
import { rejectItem, type Delivery } from '../../model.js';
import { parseZonedTime } from '../../formats/pivot-export/time.js';
import type { Recorder } from '../../pipeline/recorder.js';
import { rejected, type Stage, type Unit } from '../../pipeline/unit.js';
import { shardFilter } from '../shard/index.js';
import { targetMailboxes, type FanOutConfig } from './index.js';

/**
 * The fan-out stage: one delivery per target mailbox, all sharing the message's bytes and a
 * `copyKey`; an item with no target is rejected `unmapped`. With a shard, the targets of other
 * shards are left to them (an item with none here is `elsewhere`, counted `itemsForOtherShards`).
 */
export function fanOutStage(config: FanOutConfig, exportId: string, recorder: Recorder): Stage<'built'> {
  const mine = config.shard && shardFilter(config.shard);
  return async ({ item, message, messageId, position }) => {
    const targets = targetMailboxes(item.participants, config);
    if (targets.length === 0) return rejected(rejectItem(item, RejectReason.UNMAPPED, `no participant of item ${item.id} maps to a mailbox of the organisation`));
    // Sharded: only this shard's mailboxes; an item whose targets are all another shard's is delivered there.
    const mailboxes = mine ? targets.filter(mine) : targets;
    if (mailboxes.length === 0) {
      recorder.forOtherShards();
      return { kind: 'elsewhere', position };
    }
    recorder.routed(mailboxes.length);
    const shared = {
      exportId,
      position,
      itemId: item.id,
      conversationId: item.conversation.id,
      messageId,
      internalDate: parseZonedTime(item.sentAt),
      message,
      copyKey: `${exportId}:${position.file}:${position.index}:${item.id}`,
    };
    return mailboxes.map((mailbox): Unit => ({ kind: 'delivery', position, delivery: { mailbox, ...shared } satisfies Delivery }));
  };
}
