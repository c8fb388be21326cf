import type { Delivery } from '../model.js';

/** `delivered`: the sink holds it durably now; `skipped`: it already held it. */
export type WriteOutcome = 'delivered' | 'skipped';

/**
 * What every sink implements (see src/sinks/SPEC.md). `write` resolves only once the message
 * is durable in the sink and rejects when it is not; `close` waits for every write and
 * flushes. A sink validates its config before any I/O (in its factory).
 */
export interface Sink {
  /** The sink's kind, e.g. `maildir`; goes into the status log. */
  readonly kind: string;
  /** Where it writes, with no secret in it; for logs. */
  readonly description: string;
  /** How many writes the pipeline keeps in flight at once. */
  readonly maxInFlight: number;
  /** Bytes of messages the pipeline may keep in flight (a batching sink needs a batch's worth). */
  readonly maxInFlightBytes?: number;
  open(): Promise<void>;
  write(delivery: Delivery): Promise<WriteOutcome>;
  close(): Promise<void>;
}

/** What the command line tells every sink factory. */
export interface SinkOptions {
  /** Relative paths resolve against it. */
  cwd: string;
  /** Allow clear-text protocols to hosts other than loopback. */
  insecure?: boolean;
  /**
   * Aborted on SIGINT/SIGTERM: a sink stops waiting (retry back-off, reconnects) and fails what
   * it still holds at once, so the run ends within seconds; those items are recorded failed.
   */
  stop?: AbortSignal;
}

export interface SinkFactory {
  /** The scheme of the sink spec, e.g. `maildir` in `maildir:/srv/mail`. */
  scheme: string;
  /** Parses and validates the spec; throws E_SINK_CONFIG on anything unknown. Does no I/O. */
  create(spec: string, options: SinkOptions): Sink;
}
