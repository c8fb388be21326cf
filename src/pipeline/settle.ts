import { ErrorCode, FailReason, errorCodeOf, errorMessage } from '../errors.js';
import type { RejectsFolder } from '../formats/rejects/index.js';
import type { Delivery, EventPosition, ExportContext, Rejection } from '../model.js';
import { sha256Hex } from '../hash.js';
import { messageVersion } from '../formats/message/export-id.js';
import { type Sink, type Stored, storageLost } from '../sinks/sink.js';
import type { InFlightLimit } from './in-order.js';
import type { OutcomeLine, Recorder } from './recorder.js';
import { isoTimes } from '../status-log.js';
import { InFlight } from '../in-flight.js';
import type { Unit, UnitOf } from './unit.js';
import { parseZonedTime } from '../formats/pivot-export/time.js';

/** A unit's end: where it stood in the source, and whether it is accounted for without failure. */
export interface Settled {
  position: EventPosition;
  ok: boolean;
  /** A delivery failed as storage that fails does (EIO, EROFS, a folder deleted): what it answered stored before may be lost too (`storageLost`). */
  storageFault?: boolean;
}

/**
 * The chain's last stage: a delivery goes to the sink, a rejection to the rejects folder, and
 * either way its outcome is recorded before the unit counts as settled. Writes overlap up to
 * the sink's bounds: many small messages at once, about one item's worth of big ones.
 */
export class Settler {
  readonly limit: InFlightLimit<Unit>;

  constructor(
    private readonly sink: Sink,
    private readonly rejects: RejectsFolder | undefined,
    private readonly archive: ExportContext | undefined,
    private readonly recorder: Recorder,
    maxItemSize: number,
    /** Stops reading (what is in flight still settles, and is counted), the run's error `reason`. */
    private readonly halt: (reason: Error) => void,
    /** A delivery failed as storage lost: told at once, before its outcome is recorded (Source.storageLost). */
    private readonly storageLostNow: () => void = () => undefined,
  ) {
    this.limit = {
      count: sink.maxInFlight,
      weight: (unit) => (unit.kind === 'delivery' ? unit.delivery.message.length : 0),
      maxWeight: Math.max(maxItemSize, sink.maxInFlightBytes ?? 0),
    };
  }

  /** Settles begun and not yet ended. */
  private readonly pending = new InFlight();

  // A unit that reaches a settle after a record failed is not begun (its delivery would go unrecorded where the record failed); what is in flight settles.
  // A delivery settles in one async step (most units are deliveries, and each step's frame and promise live while the sink writes).
  readonly settle = (unit: Unit): Promise<Settled> =>
    this.pending.track(this.recordFailure !== undefined ? Promise.reject(this.recordFailure) : unit.kind === 'delivery' ? this.deliver(unit) : this.settleOther(unit));

  /**
   * Resolves once every settle begun has ended: a chain stopped by an error leaves some in flight,
   * and the summary must count them, with no outcome line after it.
   */
  async idle(): Promise<void> {
    await this.pending.idle();
  }

  /** The first record (status log, run log, ledger) that could not be written: the run stops, and nothing more begins. */
  private recordFailure: unknown;

  private async settleOther(unit: Exclude<Unit, UnitOf<'delivery'>>): Promise<Settled> {
    try {
      const ok = unit.kind === 'rejected' ? await this.keep(unit) : unit.kind === 'failed' ? await this.fail(unit) : unit.kind === 'failedInShard' ? await this.failInShard(unit) : unit.kind === 'elsewhere' || unsettleable(unit);
      return { position: unit.position, ok };
    } catch (err) {
      throw this.recordFailed(err);
    }
  }

  /** A record (status log, run log, ledger) that could not be written stops reading at once, not when this unit's turn comes (a window of thousands may be ahead of it). */
  private recordFailed(err: unknown): unknown {
    const code = errorCodeOf(err);
    if (code === ErrorCode.STATUS_LOG || code === ErrorCode.LEDGER) {
      if (this.recordFailure === undefined) this.halt(err as Error);
      this.recordFailure ??= err;
    }
    return err;
  }

  /** Not ok (a `storageFault` too when the store may have lost what it held) when the sink did not store it. A status log that cannot be written stops the run. */
  private async deliver({ delivery: d, position }: UnitOf<'delivery'>): Promise<Settled> {
    try {
      let stored: Stored;
      try {
        stored = await this.sink.write(d);
      } catch (err) {
        const lost = storageLost(err);
        if (lost) this.storageLostNow();
        await this.recorder.failed(this.outcomeLine(d), FailReason.SINK_ERROR, errorMessage(err), lost);
        // The sink refuses its own spec (a folder name the server will never take): every write would
        // fail alike, so nothing more is read and the run ends with that error (exit 2 when nothing was delivered).
        if (errorCodeOf(err) === ErrorCode.SINK_CONFIG) this.halt(err as Error);
        return lost ? { position, ok: false, storageFault: true } : { position, ok: false };
      }
      await this.recorder.delivered(this.outcomeLine(d, stored.location), stored.outcome);
      return { position, ok: true };
    } catch (err) {
      throw this.recordFailed(err);
    }
  }

  /** Built once the sink has answered: a line held through the write would outlive the young generation with every slow delivery. */
  private outcomeLine(d: Delivery, location?: string): OutcomeLine {
    return {
      exportId: d.exportId,
      itemId: d.itemId,
      conversationId: d.conversationId,
      mailbox: d.mailbox,
      messageId: d.messageId,
      sentAt: this.sentAtText(d.internalDate),
      size: d.message.length,
      sha256: this.sha256Of(d.message),
      version: messageVersion(d.message),
      location,
    };
  }

  private readonly sentAtText = isoTimes();

  /** An item's copies share one message buffer: hashed once, not once per mailbox. */
  private readonly hashes = new WeakMap<Buffer, string>();
  private sha256Of(message: Buffer): string {
    let hash = this.hashes.get(message);
    if (hash === undefined) this.hashes.set(message, (hash = sha256Hex(message)));
    return hash;
  }

  /** Kept and recorded `rejected`; an item that cannot be kept is recorded `failed` (not-kept). */
  private async keep({ rejection: x }: UnitOf<'rejected'>): Promise<boolean> {
    const line = rejectedLine(x);
    let kept: string;
    try {
      if (!this.archive || !this.rejects) throw new Error('the source has no export and no rejects folder to keep it in');
      kept = await this.rejects.keep(this.archive, x);
    } catch (err) {
      const detail = `rejected (${x.reason}: ${x.detail}) but could not be kept in the rejects folder ${this.rejects?.dir}: ${errorMessage(err)}`;
      await this.recorder.notKept(line, x.reason, FailReason.NOT_KEPT, detail);
      return false;
    }
    await this.recorder.rejected(line, x.reason, x.detail, kept);
    return true;
  }

  /** Recorded `failed` (no mailbox), not kept: the run fails, and its checkpoint stops here so the next run reads the item again. */
  private async failInShard({ rejection: x }: UnitOf<'failedInShard'>): Promise<boolean> {
    const detail = `${x.detail} (sharded: other shards may have delivered this item, so it is not kept as rejected; run this shard again once the plugin works: it reads the item again)`;
    await this.recorder.notKept(rejectedLine(x), x.reason, FailReason.PLUGIN_ERROR_IN_SHARD, detail);
    return false;
  }

  private async fail(x: UnitOf<'failed'>): Promise<boolean> {
    await this.recorder.failed({ itemId: x.itemId, conversationId: x.conversationId, mailbox: x.mailbox, ...(x.exportId ? { exportId: x.exportId } : {}) }, x.reason, x.detail);
    return false;
  }
}

/** A rejected item's outcome line: its id, its event's place in the archive, and its time when it has a real one. */
function rejectedLine(x: Rejection): Omit<OutcomeLine, 'mailbox'> {
  // Only a real time (never one rolled over from 29 February or 24:00, which the event never had).
  const sentAt = typeof x.raw.sentAt === 'string' ? parseZonedTime(x.raw.sentAt) : NaN;
  return { itemId: x.itemId, conversationId: x.conversationId, position: `${x.position.file}.${x.position.index}`, ...(Number.isNaN(sentAt) ? {} : { sentAt: new Date(sentAt).toISOString() }) };
}

function unsettleable(unit: Unit): never {
  throw new Error(`a ${unit.kind} unit reached the end of the chain unbuilt`);
}
