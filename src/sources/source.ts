import type { Readable } from 'node:stream';
import type { NoteReasonValue } from '../errors.js';
import type { EventPosition, ExportContext } from '../model.js';

/** What the summary says of a source, beside the chain's own counters. */
export interface SourceSummary {
  /** Which input: the archive and its sha256, or the staging location; the export, when one. */
  identity: { exportId: string | null } & Record<string, string | number | null>;
  /** The source's own counters (events in the archive; staged batches imported and failed). */
  counters: Record<string, number>;
  /** Units an earlier run settled, skipped by this one (a resume from a checkpoint). */
  itemsDoneEarlier: number;
  /** The source's own counters add up (every staged message read is accounted for). */
  balanced: boolean;
  /** Staged batches: the exports whose every indexed batch is now in the sink (see RunSummary). */
  exportsImportedWhole?: string[];
  /** Staged batches: the exports found not whole (see RunSummary). */
  exportsNotWhole?: string[];
}

/**
 * Where the chain's units come from (see src/sources/SPEC.md): a Pivot export archive yields
 * `event` units, staged batches yield `delivery` units already built for their mailbox.
 */
export interface Source {
  /** `pivot-zip` or `staged-batches`: the summary's `source`. */
  readonly kind: string;
  /** The export the units come from, for the stages that build messages; none for built ones. */
  readonly export?: ExportContext;
  /** Notes on the input as a whole (entries outside the layout, hostile names): recorded first. */
  readonly notes: readonly { reason: NoteReasonValue; detail: string; conversationId?: string }[];
  /**
   * The units, in source order, as an object stream with backpressure. Once `stop` is aborted
   * no further unit is read. A failure of the input as a whole (the archive changed under the
   * run) is a stream error: it stops the chain.
   */
  read(stop?: AbortSignal): Readable;
  /**
   * Told, in source order, how each unit's outputs settled (the checkpoint; marking batches);
   * `storageFault`: one failed as failing storage does (see Settled).
   */
  settled(position: EventPosition, ok: boolean, storageFault?: boolean): Promise<void> | void;
  /** Told at once, out of source order, that a delivery failed as failing storage does (the checkpoint must not be saved past it). */
  storageLost?(): void;
  /** How far reading is, for the progress line. */
  progress(): { read: number; total?: number; bytesRead?: number; bytesTotal?: number };
  /** Read to the end (not stopped by a signal). */
  readonly exhausted: boolean;
  summaryFields(): SourceSummary;
}
