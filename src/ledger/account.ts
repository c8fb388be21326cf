/**
 * One export's account across every run that touched it (killed, resumed, re-run), reconciled
 * from the ledger: what `status --export`, `report` and `verify` read.
 */

/** One run's part in an export. */
export interface RunOfExport {
  runId: string;
  command: 'run' | 'import';
  host: string;
  startedAt: string;
  /** Absent for a run killed before its summary. */
  finishedAt?: string;
  /** How it ended: a summary, a failure record before delivering, or nothing (killed). */
  ended: 'summary' | 'failure' | 'killed';
  /** Its exit code (summary or failure), when it ended. */
  exitCode?: number;
  /** The error or alarm it ended with, if any. */
  problem?: string;
  archive?: string;
  sha256?: string;
  /** Outcomes this run recorded for this export. */
  delivered: number;
  skipped: number;
  failed: number;
  rejected: number;
}

/** One mailbox's (mailbox, item) pairs, by their final outcome across runs. */
export interface MailboxAccount {
  mailbox: string;
  delivered: number;
  skipped: number;
  failed: number;
  /** The runs that recorded outcomes for this mailbox. */
  runs: string[];
}

/** A rejected item (kept, or not kept and so failed), or a (mailbox, item) whose final outcome is failed. */
export interface ItemProblem {
  itemId: string;
  conversationId: string;
  /** null for a rejected item (it reached no mailbox). */
  mailbox: string | null;
  outcome: 'rejected' | 'failed';
  reason: string;
  detail: string;
  /** Where the rejects folder keeps its original (rejected items). */
  kept?: string;
  runId: string;
  at: string;
}

/** One line of the item list (`report --csv`): the final outcome of one item, or one (mailbox, item). */
export interface ItemLine {
  itemId: string;
  conversationId: string;
  mailbox: string | null;
  outcome: 'delivered' | 'skipped' | 'rejected' | 'failed';
  reason?: string;
  messageId?: string;
  sentAt?: string;
  size?: number;
  sha256?: string;
  location?: string;
  kept?: string;
  runId: string;
  at: string;
}

export interface ExportAccount {
  exportId: string;
  tenant?: string;
  /** The archive as its runs read it (every sha256 seen: more than one means the archive changed between runs). */
  archive?: string;
  sha256s: string[];
  size?: number;
  eventsInArchive?: number;
  runs: RunOfExport[];
  /**
   * Items: the archive's events (plus items plugins added) = rejected and kept + rejected not kept
   * + routed to mailboxes + not read by any run yet. Pairs: routed (mailbox, item) pairs =
   * delivered + skipped (already there) + failed, by each pair's final outcome.
   */
  items: { inArchive?: number; rejectedKept: number; rejectedNotKept: number; routed: number; notYetRead?: number };
  pairs: { total: number; delivered: number; skipped: number; failed: number };
  /** Whether the items and the pairs add up (notYetRead 0 and nothing failed is `complete`). */
  balanced: boolean;
  complete: boolean;
  rejectsByReason: Record<string, number>;
  mailboxes: MailboxAccount[];
  /** Every rejected item and every pair whose final outcome is failed. */
  problems: ItemProblem[];
  /** Items by the hour of their `sentAt` (UTC, `YYYY-MM-DDTHH`), for the chart of the day. */
  hours: { hour: string; delivered: number; rejected: number; failed: number }[];
}

/** What the ledger's own check found (see src/ledger/SPEC.md), as the report shows it. */
export interface LedgerCheck {
  path: string;
  records: number;
  /** sha256 of the last line. */
  head: string;
  /** The chain holds: no line changed, removed, re-ordered or cut. */
  chainIntact: boolean;
  checkpoints: number;
  /** `verified` with the given public key; `failed`; `unsigned` (no key at the run); `not checked` (no key given now). */
  signature: 'verified' | 'failed' | 'unsigned' | 'not checked';
  /** Records after the last checkpoint (a run killed, or one running now): not covered by a signature. */
  unsealed: number;
  problems: string[];
}
