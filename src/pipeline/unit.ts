import type { FailReasonValue } from '../errors.js';
import type { Delivery, EventPosition, Item, Rejection, SourceEvent } from '../model.js';
import _ from 'highland';

/**
 * What flows through the chain, tagged with how far it got. A stage takes the units of one kind
 * and passes every other kind through untouched: a rejection flows on to be kept, and a source
 * of already built messages (staged batches) feeds `delivery` units that skip building.
 */
export type Unit =
  | { kind: 'event'; position: EventPosition; event: SourceEvent }
  | { kind: 'item'; position: EventPosition; item: Item }
  | { kind: 'built'; position: EventPosition; item: Item; message: Buffer; messageId: string }
  | { kind: 'delivery'; position: EventPosition; delivery: Delivery }
  | { kind: 'rejected'; position: EventPosition; rejection: Rejection }
  /** Read from the source but unusable as it stands (a staged message that fails its check). */
  | { kind: 'failed'; position: EventPosition; exportId?: string; itemId: string; conversationId: string; mailbox: string; reason: FailReasonValue; detail: string }
  /**
   * Sharded: a rejection this shard cannot stand by (a plugin failed on the item: other shards may
   * have delivered it; src/transforms/shard/): recorded failed, not kept, read again by the next run.
   */
  | { kind: 'failedInShard'; position: EventPosition; rejection: Rejection }
  /** Another shard's to deliver or keep (--shard, src/transforms/shard/): settled at once, counted, recorded nowhere. */
  | { kind: 'elsewhere'; position: EventPosition };

export type UnitOf<K extends Unit['kind']> = Extract<Unit, { kind: K }>;

export const rejected = (rejection: Rejection): Unit => ({ kind: 'rejected', position: rejection.position, rejection });

/** A stage of the chain: handles one kind of unit, one at a time, in order; may yield several units. */
export type Stage<K extends Unit['kind']> = (unit: UnitOf<K>) => Promise<Unit | Unit[]>;

/**
 * Applies `stage` to the units of `kind`, one at a time (a stage may await: plugins, attachment
 * reads, notes), passes the others through at once, and flattens what it yields. Without a stage
 * (a source that has no export to build from), a unit of that kind is a bug and stops the chain.
 */
export function step<K extends Unit['kind']>(kind: K, stage: Stage<K> | undefined): (s: Highland.Stream<Unit>) => Highland.Stream<Unit> {
  return (s) =>
    s.consume((err, unit, push, next) => {
      if (err) {
        push(err);
        next();
      } else if (_.isNil(unit)) {
        push(null, unit);
      } else if (unit.kind !== kind) {
        push(null, unit);
        next();
      } else if (!stage) {
        push(new Error(`a ${kind} unit reached the chain from a source that cannot build it`));
        next();
      } else {
        stage(unit as UnitOf<K>).then(
          (out) => {
            if (Array.isArray(out)) for (const u of out) push(null, u);
            else push(null, out);
            next();
          },
          (e: Error) => {
            push(e);
            next();
          },
        );
      }
    });
}
