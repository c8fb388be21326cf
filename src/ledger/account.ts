import { FailReason, RejectReason } from '../errors.js';
import { runExitCode } from '../exit-policy.js';
import type { RunSummary } from '../status-log.js';

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
   * Items: the archive's events + items plugins added = rejected and kept + rejected not kept
   * + routed to mailboxes + not read by any run yet. Pairs: routed (mailbox, item) pairs =
   * delivered + skipped (already there) + failed, by each pair's final outcome.
   */
  /** `entriesNotRead`: archive entries named like messages files that the latest read passed over (their events are counted nowhere). */
  /**
   * `failedInShards`: items a plugin failed on in a shard (FailReason.PLUGIN_ERROR_IN_SHARD) that
   * no later run of that shard read again: that shard's copies of them are in no mailbox and no
   * rejects folder. Each is counted among the routed items when another shard delivered it, else
   * among the rejected not kept.
   */
  /**
   * `rejectedInSomeShards` (a union of shards only): items some shards rejected (a plugin's drop
   * made on one host only) and others delivered: the mailboxes of the shards that rejected them
   * have no copy. Counted among the routed items; the export is not complete while one stands.
   */
  items: { inArchive?: number; addedByPlugins: number; rejectedKept: number; rejectedNotKept: number; routed: number; notYetRead?: number; entriesNotRead?: number; failedInShards?: number; rejectedInSomeShards?: number };
  /** The export's records after the ledger's last checkpoint: no signature covers them yet. */
  unsealed: number;
  /** `lostFromStore` (among `failed`): pairs delivered or found there before a later run found the store lost. */
  pairs: { total: number; delivered: number; skipped: number; failed: number; lostFromStore?: number };
  /**
   * The shard (`K/N`) the export's runs in this ledger delivered (--shard): the account is that
   * shard's part. Its pairs add up on their own; the items equation only across all N shards
   * (items for other shards are not recorded item by item), so `balanced` is then the pairs'.
   * Absent for an unsharded ledger, and for the union of every shard (`unionAccount`).
   */
  shard?: string;
  /**
   * With `shard`: whether that shard's part is accounted for (its pairs delivered or already
   * there, nothing failed, the archive read to its end). `complete` is then false: one shard's
   * ledger cannot show the export complete; the union of every shard's can.
   */
  shardComplete?: boolean;
  /** Whether the items and the pairs add up (notYetRead 0 and nothing failed is `complete`). */
  balanced: boolean;
  /** The whole export is accounted for, by the counters: never so for one shard's part (see `shardComplete`). */
  complete: boolean;
  /**
   * Whether the ledger the account comes from proves it (`ledgerProves`): its chain, checkpoints
   * and signature hold, its check found no problem, and every record of the export is sealed by a
   * checkpoint. Counters that add up prove nothing otherwise: the verdict is then NOT PROVEN, never
   * COMPLETE (`accountVerdict`), in `status` and `report` alike. Absent until the ledger's check is known.
   */
  proven?: boolean;
  rejectsByReason: Record<string, number>;
  mailboxes: MailboxAccount[];
  /** The rejected items and the pairs whose final outcome is failed: how many, and of those how many rejected and kept, and rejected (or failed in a shard) and not kept. */
  problemCount: ProblemCount;
  /**
   * The first PROBLEMS_LISTED rejected items, then the first PROBLEMS_LISTED failed pairs, each by
   * reason, in the ledger's order within a reason (the report's order: its first rows are these).
   * The report's CSV item list has every one.
   */
  problems: ItemProblem[];
  /** Items by the hour of their `sentAt` (UTC, `YYYY-MM-DDTHH`), for the chart of the day. */
  hours: { hour: string; delivered: number; rejected: number; failed: number }[];
}

/** See `ExportAccount.problemCount`. */
export interface ProblemCount {
  total: number;
  rejectedKept: number;
  notKept: number;
}

/**
 * Rejected items, and failed pairs, an account lists at most (the report's item table shows as
 * many): the rest are counted. A day whose sink was down fails millions of pairs; held each as an object, `status`
 * and `report` of 1M failed pairs took 746 MB (2026-12-02).
 */
export const PROBLEMS_LISTED = 5000;

/** `count` with problem `p` counted in. */
export function countProblem(count: ProblemCount, p: ItemProblem): ProblemCount {
  count.total++;
  if (p.kept) count.rejectedKept++;
  else if (p.outcome === 'rejected' || p.mailbox === null) count.notKept++;
  return count;
}

/** Problems as an account lists them (see `ExportAccount.problems`), in memory bounded by PROBLEMS_LISTED a reason. */
class ProblemList {
  readonly count: ProblemCount = { total: 0, rejectedKept: 0, notKept: 0 };
  /** By outcome (`0` rejected, `1` failed) and reason: the first PROBLEMS_LISTED, in the ledger's order. */
  private readonly byReason = new Map<string, ItemProblem[]>();

  add(p: ItemProblem): void {
    countProblem(this.count, p);
    const key = `${p.outcome === 'rejected' ? 0 : 1}\u0000${p.reason}`;
    let listed = this.byReason.get(key);
    if (!listed) this.byReason.set(key, (listed = []));
    if (listed.length < PROBLEMS_LISTED) listed.push(p);
  }

  /** Rejected, then failed (a day of failed pairs must not hide the rejections, nor these the failures). */
  listed(): ItemProblem[] {
    const keys = [...this.byReason.keys()].sort();
    const first = (outcome: string) => keys.filter((key) => key.startsWith(outcome)).flatMap((key) => this.byReason.get(key)!).slice(0, PROBLEMS_LISTED);
    return [...first('0'), ...first('1')];
  }
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
  /** What the check found that is no failure (a run killed between its summary and its checkpoint, sealed by the next one). */
  notes?: string[];
}

/**
 * Whether `check` (the ledger's) proves `account`: what `report`'s banner calls the ledger's verdict
 * (chain intact, signature not failed, no problem found, none of the export's records after the last
 * checkpoint). Without it the counters say COMPLETE at most "NOT PROVEN".
 */
export function ledgerProves(check: Pick<LedgerCheck, 'chainIntact' | 'signature' | 'problems'>, account: Pick<ExportAccount, 'unsealed'>): boolean {
  return check.chainIntact && check.signature !== 'failed' && check.problems.length === 0 && account.unsealed === 0;
}

/** Sets `account.proven` from the ledger's check (see `ledgerProves`); returns the account. */
export function withProof<A extends ExportAccount>(account: A, check: Pick<LedgerCheck, 'chainIntact' | 'signature' | 'problems'>): A {
  account.proven = ledgerProves(check, account);
  return account;
}

/**
 * The account's verdict, as `status` headlines it and `report`'s banner reads: INCOMPLETE when the
 * counters do not show every item accounted for (`complete`, for one shard's ledger `shardComplete`);
 * else NOT PROVEN when the ledger does not prove them (`proven` false); else COMPLETE, or for one
 * shard's ledger that shard's part only.
 */
export function accountVerdict(a: Pick<ExportAccount, 'shard' | 'shardComplete' | 'complete' | 'proven'>): string {
  const complete = a.shard ? a.shardComplete === true : a.complete;
  const verdict = !complete ? 'INCOMPLETE' : a.proven === false ? 'NOT PROVEN' : a.shard ? 'complete' : 'COMPLETE';
  return a.shard ? `shard ${a.shard}'s part only: ${verdict}` : verdict;
}

/** Which outcome of a (mailbox, item) counts when runs disagree: once in the mailbox, it stays so. */
const RANK = { failed: 0, rejected: 0, skipped: 1, delivered: 2 } as const;

interface Winner {
  seq: number;
  outcome: ItemLine['outcome'];
  runId: string;
}

/**
 * Reconciles one export from the ledger's records, fed in order (`visit`): every run that read
 * it, and each (mailbox, item)'s final outcome. Memory grows with the export's pairs (a key and
 * a number each), not with the ledger.
 */
export class AccountBuilder {
  private readonly starts = new Map<string, LedgerRecordLike>();
  private readonly runs = new Map<string, RunOfExport>();
  private readonly pairs = new Map<string, Winner>();
  /** Rejected items, by item id, reason and where kept (a duplicate id is another item). */
  private readonly rejects = new Map<string, Winner & { kept: boolean; reason: string }>();
  /** Each of `rejects`: its item id, every run that rejected it, and the ledgers those runs are in. */
  private readonly rejectedBy = new Map<string, { itemId: string; runs: Set<string>; ledgers: Set<number> }>();
  /** By ledger and item id, the last run that settled the item (rejected or routed it): each shard's runs settle its own part. */
  private readonly lastRunOf = new Map<string, string>();
  /**
   * By ledger and rejected item (`rejects`' key): its last rejection there (record and run). A
   * later run of that ledger that read the latest archive from the start to its end and recorded
   * nothing of the item settled it (`readAgainAfter`): a shard none of whose mailboxes the item is
   * for records nothing once its plugin no longer drops it.
   */
  private readonly lastRejection = new Map<string, { seq: number; runId: string }>();
  /**
   * Items a plugin failed on in a sharded run, by ledger read and item id: the record, its run, and
   * whether a later run of the same ledger (the same shard) settled the item. A later run that read
   * the latest archive to its end read it again too (its checkpoint stopped at the item). Another
   * shard's delivery of the item settles nothing here: its copies are that shard's.
   */
  private readonly failedInShard = new Map<string, { seq: number; ledger: number; runId: string; itemId: string; settledLater: boolean }>();
  /** Which ledger the records come from: 0, then 1, 2, ... in a union. */
  private ledger = 0;
  /**
   * By ledger, the seq of its latest failure whose error said the store may have lost what it held
   * (`storageLost`: a folder deleted, a failing disk). A pair delivered or found there before it is
   * no longer counted there (failed) until a later record of it says so again: the run that found
   * the loss resumed past items never read again, which the next run reads from the start.
   */
  private readonly storeLostAt = new Map<number, number>();
  /**
   * By ledger and mailbox, the seq of the latest failure of another export's run there whose error
   * said the store was lost, or of a summary whose end-of-run look found its folder gone
   * (`mailboxesLost`, any export's run): a folder deleted took this export's messages in it too.
   * Only that mailbox's pairs (another export's run read nothing of this one, so its loss says nothing of other mailboxes).
   */
  private readonly mailboxLostAt = new Map<string, number>();
  /** The ledger each mailbox's records are in (a mailbox is one shard's). */
  private readonly ledgerOf = new Map<string, number>();
  private readonly problems = new ProblemList();
  private readonly sha256s = new Set<string>();
  private readonly mailboxes = new Map<string, MailboxAccount>();
  private readonly hours = new Map<string, { delivered: number; rejected: number; failed: number }>();
  private readonly sentAtOf = new Map<string, string>();
  private info: Partial<Pick<ExportAccount, 'tenant' | 'archive' | 'size' | 'eventsInArchive'>> = {};
  /** Per ledger read (one, or each shard's for a union): the runs of the export that read an archive to its end, in order: its summary's seq, the archive, and whether from the start (no checkpoint passed over). */
  private readonly readsToEnd: { seq: number; runId: string; sha256: string; fromStart: boolean }[][] = [[]];
  /** Per ledger read: an import read to its end with every batch of the export's latest staging index in the sink. */
  private readonly importedWhole: boolean[] = [false];
  /** The latest archive's sha256 (a corrected archive may come under the same export id). */
  private latestSha256: string | undefined;
  /** Plugins' added items, as the latest complete run of the latest archive counted them. */
  private addedByPlugins = 0;
  /** Entries like messages files the latest read of the latest archive did not read: their events are in no count, so never complete. */
  private entriesNotRead = 0;
  /** The export's records after the last checkpoint (of each ledger read): no signature covers them yet. */
  private unsealed = 0;
  private unsealedInEarlierLedgers = 0;
  /** The shards (`K/N`, or null unsharded) the export's runs were started with. */
  readonly shards = new Set<string | null>();
  /** By command, the options that change the outcome (all but the shard) of the export's latest run, as its start record gives them. */
  readonly latestOptions = new Map<string, Record<string, unknown>>();

  /** `union`: the records of every shard's ledger are fed in turn (`nextLedger` between): one account of the whole export. */
  constructor(
    readonly exportId: string,
    private readonly union = false,
  ) {}

  /** Union of shards: the records that follow are another shard's ledger. */
  nextLedger(): void {
    this.ledger++;
    this.readsToEnd.push([]);
    this.importedWhole.push(false);
    this.unsealedInEarlierLedgers += this.unsealed;
    this.unsealed = 0;
  }

  readonly visit = (r: LedgerRecordLike): void => {
    if (r.record === 'checkpoint') this.unsealed = 0;
    if (r.exportId === this.exportId && r.record !== 'start') this.unsealed++;
    if (r.record === 'outcome' && r.exportId !== this.exportId && r.storageLost === true && typeof r.mailbox === 'string') this.mailboxLostAt.set(`${this.ledger}\u0000${r.mailbox}`, r.seq);
    // The end-of-run look of any export's run found these folders gone: no failure record names them.
    if (r.record === 'summary' && Array.isArray(r.mailboxesLost)) for (const m of r.mailboxesLost) if (typeof m === 'string') this.mailboxLostAt.set(`${this.ledger}\u0000${m}`, r.seq);
    if (r.record === 'start') {
      this.starts.set(r.runId, r);
      if (r.exportId === this.exportId) this.runOf(r.runId);
      return;
    }
    // An import that found this export not whole is one of its runs, whatever it delivered of it.
    if (r.record === 'summary' && Array.isArray(r.exportsNotWhole) && r.exportsNotWhole.includes(this.exportId)) this.runOf(r.runId);
    const run = this.runs.get(r.runId);
    if (r.record === 'outcome' && r.exportId === this.exportId) this.outcome(r, this.runOf(r.runId));
    else if (run && (r.record === 'summary' || r.record === 'failure')) this.ended(run, r);
  };

  private runOf(runId: string): RunOfExport {
    let run = this.runs.get(runId);
    if (run) return run;
    const s = this.starts.get(runId);
    // Its start names the export, or (an import of every staged export) none: its shard and options are this export's too.
    if (s) {
      const { shard, ...outcome } = (s.options ?? {}) as Record<string, unknown>;
      this.shards.add(typeof shard === 'string' ? shard : null);
      this.latestOptions.set(String(s.command), outcome);
    }
    run = { runId, command: (s?.command as RunOfExport['command']) ?? 'run', host: String(s?.host ?? ''), startedAt: String(s?.at ?? ''), ended: 'killed', delivered: 0, skipped: 0, failed: 0, rejected: 0 };
    if (typeof s?.archive === 'string') run.archive = s.archive;
    if (typeof s?.sha256 === 'string') {
      run.sha256 = s.sha256;
      this.sha256s.add(s.sha256);
      if (s.exportId === this.exportId) this.latestSha256 = s.sha256;
    }
    if (s?.exportId === this.exportId) {
      this.info = {
        tenant: (s.tenant as string | undefined) ?? this.info.tenant,
        archive: run.archive ?? this.info.archive,
        size: (s.size as number | undefined) ?? this.info.size,
        eventsInArchive: (s.eventsInArchive as number | undefined) ?? this.info.eventsInArchive,
      };
    }
    this.runs.set(runId, run);
    return run;
  }

  private ended(run: RunOfExport, r: LedgerRecordLike): void {
    run.finishedAt = String(r.record === 'summary' ? r.finishedAt : r.finishedAt ?? r.at);
    run.ended = r.record === 'summary' ? 'summary' : 'failure';
    if (r.record === 'failure') {
      run.exitCode = Number(r.exitCode);
      run.problem = `${String(r.code)}: ${String(r.error)}`;
      return;
    }
    run.exitCode = runExitCode(r as unknown as RunSummary);
    // Its end-of-run look found folders removed (or could not confirm them): as a failure found the store lost (no record names the mailboxes).
    if (r.storageLost === true) this.storeLostAt.set(this.ledger, r.seq);
    const error = r.error as { code: string; message: string } | undefined;
    run.problem = error ? `${error.code}: ${error.message}` : r.interrupted ? 'stopped by a signal' : (r.alarm as string | undefined);
    if (!error && !r.interrupted && r.source === 'pivot-zip' && typeof r.sha256 === 'string') {
      this.readsToEnd.at(-1)!.push({ seq: r.seq, runId: run.runId, sha256: r.sha256, fromStart: Number(r.itemsDoneEarlier ?? 0) === 0 });
      if (r.sha256 === this.latestSha256) {
        this.addedByPlugins = Number(r.itemsAddedByPlugins ?? 0);
        this.entriesNotRead = Number(r.entriesNotRead ?? 0);
      }
    }
    if (!error && !r.interrupted && r.source === 'staged-batches' && Array.isArray(r.exportsImportedWhole) && r.exportsImportedWhole.includes(this.exportId)) {
      this.importedWhole[this.importedWhole.length - 1] = true;
    }
    if (Array.isArray(r.exportsNotWhole) && r.exportsNotWhole.includes(this.exportId)) this.importedWhole[this.importedWhole.length - 1] = false;
  }

  private outcome(r: LedgerRecordLike, run: RunOfExport): void {
    const outcome = r.outcome as ItemLine['outcome'];
    run[outcome]++;
    const itemId = String(r.itemId);
    const mailbox = r.mailbox as string | null;
    const inShard = `${this.ledger}\u0000${itemId}`;
    this.lastRunOf.set(inShard, r.runId);
    if (typeof r.sentAt === 'string') this.sentAtOf.set(itemId, r.sentAt);
    const failedHere = this.failedInShard.get(inShard);
    if (failedHere && failedHere.runId !== r.runId) failedHere.settledLater = true;
    if (mailbox === null && outcome === 'failed' && r.reason === FailReason.PLUGIN_ERROR_IN_SHARD) {
      this.failedInShard.set(inShard, { seq: r.seq, ledger: this.ledger, runId: r.runId, itemId, settledLater: false });
      return;
    }
    if (mailbox === null) {
      // One rejected item (each part of a split under its own id), whichever run kept it (or could not): its id and where its event stands in the archive.
      const key = `${itemId}\u0000${String(r.position ?? r.kept ?? '')}`;
      const kept = outcome === 'rejected';
      const before = this.rejects.get(key);
      if (!before || (kept && !before.kept)) this.rejects.set(key, { seq: r.seq, outcome, runId: r.runId, kept, reason: String(kept ? r.reason : (r.rejectReason ?? r.reason)) });
      this.lastRejection.set(`${this.ledger}\u0000${key}`, { seq: r.seq, runId: r.runId });
      const by = this.rejectedBy.get(key) ?? { itemId, runs: new Set<string>(), ledgers: new Set<number>() };
      by.runs.add(r.runId);
      by.ledgers.add(this.ledger);
      this.rejectedBy.set(key, by);
      return;
    }
    if (outcome === 'failed' && r.storageLost === true) this.storeLostAt.set(this.ledger, r.seq);
    this.ledgerOf.set(mailbox, this.ledger);
    const key = `${mailbox}\u0000${itemId}`;
    const before = this.pairs.get(key);
    if (!before || this.lostSince(mailbox, before.seq) || RANK[outcome] > RANK[before.outcome]) this.pairs.set(key, { seq: r.seq, outcome, runId: r.runId });
  }

  /** Whether the store of `mailbox` was found lost after the record at `seq`: what it said is there may be gone. */
  private lostSince(mailbox: string, seq: number): boolean {
    const ledger = this.ledgerOf.get(mailbox) ?? -1;
    const lostAt = Math.max(this.storeLostAt.get(ledger) ?? -1, this.mailboxLostAt.get(`${ledger}\u0000${mailbox}`) ?? -1);
    return seq < lostAt;
  }

  /** A pair's final outcome: its winner's, but failed when the store was found lost after it. */
  private finalOutcome(mailbox: string, w: { seq: number; outcome: ItemLine['outcome'] }): ItemLine['outcome'] {
    return w.outcome !== 'failed' && this.lostSince(mailbox, w.seq) ? 'failed' : w.outcome;
  }

  /** How many runs touched the export (known after the first pass). */
  get runCount(): number {
    return this.runs.size;
  }

  /** The seqs of the records that decide each item's final outcome (for the item list's second pass). */
  winners(): Set<number> {
    return new Set([...this.pairs.values(), ...this.standingRejects(), ...this.standingFailuresInShards()].map((w) => w.seq));
  }

  /**
   * The rejected items, less those a later run of the same ledger settled otherwise: it routed the
   * item (run with another --domain after a typo, say, or the event at a checkpoint read again), so
   * it counts once. In a union, an item stands rejected when the last run of any shard that rejected
   * it did, whatever the order the ledgers are read in.
   */
  private standingRejects(): (Winner & { kept: boolean; reason: string; itemId: string })[] {
    const readAgain = (ledger: number, key: string) => {
      const last = this.lastRejection.get(`${ledger}\u0000${key}`);
      return last !== undefined && this.readAgainAfter(ledger, last, true);
    };
    return [...this.rejects].flatMap(([key, w]) => {
      const { itemId, runs, ledgers } = this.rejectedBy.get(key)!;
      return [...ledgers].some((ledger) => runs.has(this.lastRunOf.get(`${ledger}\u0000${itemId}`)!) && !readAgain(ledger, key)) ? [{ ...w, itemId }] : [];
    });
  }

  /** The plugin failures of sharded runs that no later run of their shard settled or read again. */
  private standingFailuresInShards(): { seq: number; itemId: string }[] {
    return [...this.failedInShard.values()].filter((f) => !f.settledLater && !this.readAgainAfter(f.ledger, f, false));
  }

  /** Whether another run of `ledger` read the latest archive to its end after the record `at` (`fromStart`: not resumed past anything). */
  private readAgainAfter(ledger: number, at: { seq: number; runId: string }, fromStart: boolean): boolean {
    const latest = this.latestSha256;
    return latest !== undefined && this.readsToEnd[ledger]!.some((read) => read.seq > at.seq && read.runId !== at.runId && read.sha256 === latest && (read.fromStart || !fromStart));
  }

  /** Called with every record again, in order, for the problem list and the chart (the winners only). */
  readonly second = (r: LedgerRecordLike, winners: Set<number>, each?: (line: ItemLine) => void): void => {
    if (r.record !== 'outcome' || r.exportId !== this.exportId || !winners.has(r.seq)) return;
    const line = itemLine(r);
    const lost = line.mailbox !== null && line.outcome !== 'failed' && this.lostSince(line.mailbox, r.seq);
    if (lost) line.outcome = 'failed';
    each?.(line);
    if (line.mailbox !== null) {
      const m = this.mailboxes.get(line.mailbox) ?? { mailbox: line.mailbox, delivered: 0, skipped: 0, failed: 0, runs: [] };
      this.mailboxes.set(line.mailbox, m);
      if (line.outcome !== 'rejected') m[line.outcome]++;
      if (!m.runs.includes(line.runId)) m.runs.push(line.runId);
    }
    const sentAt = line.sentAt ?? this.sentAtOf.get(line.itemId);
    if (sentAt) {
      const hour = sentAt.slice(0, 13);
      const h = this.hours.get(hour) ?? { delivered: 0, rejected: 0, failed: 0 };
      this.hours.set(hour, h);
      h[line.outcome === 'skipped' ? 'delivered' : line.outcome]++;
    }
    if (line.outcome === 'rejected' || line.outcome === 'failed') {
      this.problems.add({
        itemId: line.itemId,
        conversationId: line.conversationId,
        mailbox: line.mailbox,
        outcome: line.outcome,
        reason: line.reason ?? '',
        detail: lost ? STORE_LOST_DETAIL : String(r.detail ?? ''),
        ...(line.kept ? { kept: line.kept } : {}),
        runId: line.runId,
        at: line.at,
      });
    }
  };

  result(): ExportAccount {
    const tally = { delivered: 0, skipped: 0, failed: 0, rejected: 0, lostFromStore: 0 };
    for (const [key, w] of this.pairs) {
      const final = this.storeLostAt.size === 0 && this.mailboxLostAt.size === 0 ? w.outcome : this.finalOutcome(key.slice(0, key.indexOf('\u0000')), w);
      tally[final]++;
      if (final !== w.outcome) tally.lostFromStore++;
    }
    const pairs = { total: this.pairs.size, delivered: tally.delivered, skipped: tally.skipped, failed: tally.failed, ...(tally.lostFromStore > 0 ? { lostFromStore: tally.lostFromStore } : {}) };
    const routedIds = new Set([...this.pairs.keys()].map((k) => k.slice(k.indexOf('\u0000') + 1)));
    // A union: an item some shards rejected and others delivered is one routed item, its rejections a split verdict.
    const standing = this.standingRejects();
    // Not a duplicate id's rejection: its id is the delivered item's by definition.
    const rejectedInSomeShards = this.union ? new Set(standing.filter((x) => routedIds.has(x.itemId) && !x.reason.startsWith(RejectReason.DUPLICATE_ID)).map((x) => x.itemId)) : new Set<string>();
    const rejects = standing.filter((x) => !rejectedInSomeShards.has(x.itemId));
    const rejectsByReason: Record<string, number> = {};
    for (const x of rejects) if (x.kept) rejectsByReason[x.reason] = (rejectsByReason[x.reason] ?? 0) + 1;
    const routed = routedIds.size;
    // An item a plugin failed on in a shard is one item however many shards failed it; routed when another shard delivered it.
    const failedInShards = new Set(this.standingFailuresInShards().map((f) => f.itemId));
    const failedNotRouted = [...failedInShards].filter((id) => !routedIds.has(id)).length;
    const rejectedKept = rejects.filter((x) => x.kept).length;
    const rejectedNotKept = rejects.length - rejectedKept + failedNotRouted;
    const inArchive = this.info.eventsInArchive;
    // Runs of different archives under one export id: read to its end means the latest archive, by every ledger read.
    // No archive read at all (only imports of staged batches): read to its end when an import took in every batch of its staging index, in every ledger.
    const latestRead = this.latestSha256 !== undefined ? this.readsToEnd.every((reads) => reads.some((read) => read.sha256 === this.latestSha256)) : this.importedWhole.every(Boolean);
    // One shard's ledger: the items of other shards are counted, not recorded, so its items equation is checked in the union.
    const [only] = this.shards.size === 1 ? [...this.shards] : [];
    const shard = !this.union && typeof only === 'string' ? only : undefined;
    const accounted = rejects.length + failedNotRouted + routed;
    const notYetRead = latestRead ? 0 : inArchive === undefined || shard ? undefined : Math.max(0, inArchive + this.addedByPlugins - accounted);
    const pairsAddUp = pairs.total === pairs.delivered + pairs.skipped + pairs.failed;
    const itemsAddUp = inArchive === undefined || shard !== undefined || inArchive + this.addedByPlugins === accounted + (notYetRead ?? 0);
    const balanced = pairsAddUp && itemsAddUp;
    // Runs of different archives under one export id: complete only as the latest archive read to its end.
    const accountedFor = balanced && latestRead && notYetRead === 0 && pairs.failed === 0 && rejectedNotKept === 0 && failedInShards.size === 0 && rejectedInSomeShards.size === 0 && this.entriesNotRead === 0;
    const runs = [...this.runs.values()];
    return {
      exportId: this.exportId,
      ...this.info,
      sha256s: [...this.sha256s],
      runs,
      items: { ...(inArchive !== undefined ? { inArchive } : {}), addedByPlugins: this.addedByPlugins, rejectedKept, rejectedNotKept, routed, ...(notYetRead !== undefined ? { notYetRead } : {}), ...(this.entriesNotRead > 0 ? { entriesNotRead: this.entriesNotRead } : {}), ...(failedInShards.size > 0 ? { failedInShards: failedInShards.size } : {}), ...(rejectedInSomeShards.size > 0 ? { rejectedInSomeShards: rejectedInSomeShards.size } : {}) },
      unsealed: this.unsealedInEarlierLedgers + this.unsealed,
      pairs,
      ...(shard ? { shard, shardComplete: accountedFor } : {}),
      balanced,
      complete: shard === undefined && accountedFor,
      rejectsByReason,
      mailboxes: [...this.mailboxes.values()].sort((a, b) => (a.mailbox < b.mailbox ? -1 : 1)),
      problemCount: this.problems.count,
      problems: this.problems.listed(),
      hours: [...this.hours.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([hour, h]) => ({ hour, ...h })),
    };
  }
}

/** Why a pair delivered (or found there) counts failed after all. */
const STORE_LOST_DETAIL = 'delivered (or found there), but a later run found the store lost (a folder deleted, a failing disk): not counted as there until a run confirms it; the next run reads the export from the start';

/** A ledger record as the account reads it (fields by name; the ledger is read, not trusted for types). */
export type LedgerRecordLike = { seq: number; record: string; runId: string; at: string } & Record<string, unknown>;

function itemLine(r: LedgerRecordLike): ItemLine {
  const optional = <K extends keyof ItemLine>(k: K) => (r[k] !== undefined && r[k] !== null ? { [k]: r[k] } : {});
  return {
    itemId: String(r.itemId),
    conversationId: String(r.conversationId ?? ''),
    mailbox: (r.mailbox as string | null) ?? null,
    outcome: r.outcome as ItemLine['outcome'],
    ...optional('reason'),
    ...optional('messageId'),
    ...optional('sentAt'),
    ...optional('size'),
    ...optional('sha256'),
    ...optional('location'),
    ...optional('kept'),
    runId: r.runId,
    at: r.at,
  } as ItemLine;
}
