import { createHash } from 'node:crypto';
import { RejectReason, type RejectReasonValue } from '../../errors.js';
import { canonicalMailbox } from '../../formats/address/index.js';
import type { Recorder } from '../../pipeline/recorder.js';
import type { Unit } from '../../pipeline/unit.js';

/**
 * `--shard K/N`: this process delivers only the mailboxes whose stable hash falls in shard K of
 * N, so N processes (hosts, pods) given 1/N .. N/N together deliver everything exactly once and
 * every mailbox is always written by one of them. K is counted from 1, as people count shards;
 * a Kubernetes `JOB_COMPLETION_INDEX` (0-based) is shard `INDEX+1` of N (examples/kubernetes/).
 */
export interface Shard {
  /** K: 1..count. */
  index: number;
  /** N: 1 or more. */
  count: number;
}

/** The one shard that keeps and records the rejections every shard makes alike (bad, oversize, unmapped); the others count them `rejectedByShard1`. */
export const REJECTS_SHARD = 1;

/**
 * How a shard of two or more settles a rejected item, by its reason:
 * - `shard1`: the rejection follows from the item and the options alone (validation, oversize,
 *   unmapped), so every shard makes it: shard 1 keeps and records it, the others count it;
 * - `own`: a plugin's decision (`dropped:<name>`, `duplicate-id:<name>`) is its host's: each shard
 *   that makes it keeps and records it, so a drop made on one host only (a plugin reading its
 *   host's environment) is in that shard's ledger, and the union of the shards finds the item
 *   delivered elsewhere (was: taken as shard 1's, the item reached none of that shard's mailboxes,
 *   was kept nowhere, and the combined status said COMPLETE);
 * - `failed`: a plugin error (`plugin`, `plugin:<name>`: a throw, a time-out, an unusable result),
 *   which one host may meet (a network blip) and the others not.
 */
export function rejectionInShard(reason: RejectReasonValue): 'shard1' | 'own' | 'failed' {
  const of = (kind: string) => reason === kind || reason.startsWith(`${kind}:`);
  if (of(RejectReason.PLUGIN_ERROR)) return 'failed';
  // A plugin's refusal names it (`duplicate-id:<name>`); the validator's of a reused event id does not.
  return of(RejectReason.PLUGIN_DROP) || reason.startsWith(`${RejectReason.DUPLICATE_ID}:`) ? 'own' : 'shard1';
}

/** Shards above this are surely a typo (a mailbox count given for N). */
export const MAX_SHARDS = 4096;

export const formatShard = (s: Shard): string => `${s.index}/${s.count}`;

/** `K/N` as a Shard, or why it is not one (the caller names the flag or key). */
export function parseShard(value: unknown): Shard | string {
  const written = typeof value === 'string' || typeof value === 'number' ? String(value).trim() : undefined;
  const match = written === undefined ? null : /^(\d+)\s*\/\s*(\d+)$/.exec(written);
  if (!match) return `${written === '' ? 'empty: give' : `${JSON.stringify(value)} is not`} a shard K/N such as 2/3 (shard K of N, K from 1 to N)`;
  const index = Number(match[1]);
  const count = Number(match[2]);
  if (count < 1) return `${JSON.stringify(value)}: N (the number of shards) must be 1 or more`;
  if (count > MAX_SHARDS) return `${JSON.stringify(value)}: N (the number of shards) must be at most ${MAX_SHARDS}`;
  if (index === 0) return `${JSON.stringify(value)}: K is counted from 1 (1/${count} to ${count}/${count}); a 0-based index such as Kubernetes' JOB_COMPLETION_INDEX is shard INDEX+1`;
  if (index > count) return `${JSON.stringify(value)}: K must be from 1 to ${count}`;
  return { index, count };
}

/**
 * The 64-bit hash a mailbox is sharded by: the first 8 bytes (big-endian) of the SHA-256 of its
 * mailbox key (local part NFC lower-cased, domain as lower-case A-label; src/formats/address),
 * so `Anna@Bücher.example` and `anna@xn--bcher-kva.example` are one mailbox. The same on every
 * host, Node version and run: no seed, no insertion order.
 */
export function mailboxHash(mailbox: string): bigint {
  const key = canonicalMailbox(mailbox) ?? mailbox.normalize('NFC').toLowerCase();
  return createHash('sha256').update(key, 'utf8').digest().readBigUInt64BE(0);
}

/** The shard (1..count) a mailbox belongs to. */
export function shardOfMailbox(mailbox: string, count: number): number {
  return Number(mailboxHash(mailbox) % BigInt(count)) + 1;
}

/** A shard's membership test, with the answer kept per mailbox (a day has thousands of them, not millions). */
export function shardFilter(shard: Shard): (mailbox: string) => boolean {
  const known = new Map<string, boolean>();
  return (mailbox) => {
    let mine = known.get(mailbox);
    if (mine === undefined) {
      if (known.size >= 100_000) known.clear();
      mine = shardOfMailbox(mailbox, shard.count) === shard.index;
      known.set(mailbox, mine);
    }
    return mine;
  };
}

/**
 * The shard stage, right after fan-out: what this shard does not deliver leaves the chain as an
 * `elsewhere` unit (settled at once, recorded nowhere, counted):
 * - a delivery or failure for a mailbox of another shard (a staged batch read by `import` holds
 *   every mailbox's messages; a `run` never gets here with one: fan-out routes to this shard's
 *   mailboxes only) is counted `itemsForOtherShards`;
 * - a rejected item that every shard rejects alike (`rejectionInShard` says `shard1`), in every
 *   shard but shard 1, which alone keeps and records it, is counted `rejectedByShard1`; so across
 *   the shards each such item is kept exactly once. A plugin's drop or refusal is kept by each
 *   shard that makes it (the union counts it once, and names an item dropped by some shards only).
 * An item a plugin failed on, in any shard of two or more, becomes `failedInShard`: recorded
 * failed, not kept, the run failed and read again by the next. Taken as shard 1's rejection, it
 * would be lost when shard 1's plugin did not fail (it delivered the item, and this shard's
 * copies went nowhere); kept by shard 1, it would stand beside the other shards' deliveries.
 * Without a shard, or with one shard of 1, the chain is unchanged.
 */
export function shardStage(shard: Shard | undefined, recorder: Recorder): (s: Highland.Stream<Unit>) => Highland.Stream<Unit> {
  if (!shard) return (s) => s;
  const mine = shardFilter(shard);
  return (s) =>
    s.map((unit): Unit => {
      const settledBy = unit.kind === 'rejected' && shard.count > 1 ? rejectionInShard(unit.rejection.reason) : undefined;
      if (unit.kind === 'rejected' && settledBy === 'failed') return { kind: 'failedInShard', position: unit.position, rejection: unit.rejection };
      if (unit.kind === 'rejected' && settledBy === 'shard1' && shard.index !== REJECTS_SHARD) {
        recorder.rejectedByShard1();
        return { kind: 'elsewhere', position: unit.position };
      }
      if ((unit.kind === 'delivery' && !mine(unit.delivery.mailbox)) || (unit.kind === 'failed' && !mine(unit.mailbox))) {
        recorder.readForOtherShard();
        return { kind: 'elsewhere', position: unit.position };
      }
      return unit;
    });
}
