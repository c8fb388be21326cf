import { ErrorCode, PivotArchiveError } from '../errors.js';
import { InFlight } from '../in-flight.js';
import type { Delivery } from '../model.js';
import type { Stored } from './sink.js';

/** What a sink does at each step of its life; the lifecycle decides when. */
export interface SinkSteps {
  /** Proves the store usable (E_SINK_UNAVAILABLE if not); the sink is open once it resolves. */
  open(): Promise<void>;
  /**
   * Called once when `close()` starts, before it waits for the writes in flight: a batching sink
   * sends what it holds now instead of after its linger, so those writes can settle.
   */
  drain?(): void;
  /** Called once after every write in flight has settled: connections closed, buffers flushed. */
  flush?(): Promise<void>;
}

/** The one error of a write (or an open) at the wrong time, for every sink. */
export function closedError(kind: string, when: 'write before open()' | 'write after close()' | 'open() after close()'): PivotArchiveError {
  return new PivotArchiveError(ErrorCode.SINK_CLOSED, `${kind} sink: ${when}`);
}

/**
 * The life every sink shares: new -> open -> closed. A write is accepted only while open and is
 * tracked until it settles; `close()` stops new writes, drains, waits for every write in flight,
 * then flushes, once however often it is called. The lifecycle is the one place that knows the
 * order; `LifecycleSink` gives every sink the same three methods over it.
 */
export class SinkLifecycle {
  private state: 'new' | 'open' | 'closed' = 'new';
  private readonly inFlight = new InFlight();
  private closing: Promise<void> | null = null;

  constructor(
    private readonly kind: string,
    private readonly steps: SinkSteps,
  ) {}

  /** Whether writes are accepted now. */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** A failed open leaves the sink new: writes are still refused, and `open()` may be tried again. */
  async open(): Promise<void> {
    if (this.state === 'open') return;
    if (this.state === 'closed') throw closedError(this.kind, 'open() after close()');
    await this.steps.open();
    // close() may have come while the store was being proved: it stays closed.
    if (this.state === 'new') this.state = 'open';
  }

  /** Runs one write while open, tracked until it settles; rejects with the shared error otherwise. */
  write<T>(store: () => Promise<T>): Promise<T> {
    if (this.state !== 'open') return Promise.reject(closedError(this.kind, this.state === 'new' ? 'write before open()' : 'write after close()'));
    return this.inFlight.track(store());
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      const wasOpen = this.state === 'open';
      this.state = 'closed';
      if (!wasOpen) return;
      this.steps.drain?.();
      await this.inFlight.idle();
      await this.steps.flush?.();
    })();
    return this.closing;
  }
}

/** The `Sink` methods every sink has, over its lifecycle: a sink supplies `lifecycle` and `store`. */
export abstract class LifecycleSink {
  protected abstract readonly lifecycle: SinkLifecycle;
  /** Stores one delivery durably (or finds it there) and says where; called only while the sink is open. */
  protected abstract store(delivery: Delivery): Promise<Stored>;

  open(): Promise<void> {
    return this.lifecycle.open();
  }

  write(delivery: Delivery): Promise<Stored> {
    return this.lifecycle.write(() => this.store(delivery));
  }

  close(): Promise<void> {
    return this.lifecycle.close();
  }
}
