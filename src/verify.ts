import { randomInt } from 'node:crypto';
import { ExpectedMessages, type Expected } from './expected-messages.js';
import { basename, resolve } from 'node:path';
import { ErrorCode, ExitCode, PivotArchiveError, errorMessage } from './errors.js';
import { verifyExitCode } from './exit-policy.js';
import { ledgerExitCode, ledgerTrust, requireLedger, type LedgerCheck } from './ledger/index.js';
import { checkLedger, ledgerRecords } from './ledger/reader.js';
import type { LedgerLine } from './ledger/writer.js';
import type { Logger } from './logger.js';
import { createStoreReader } from './sinks/index.js';
import type { UnexpectedMessage } from './sinks/sink.js';
import { StateDir } from './state/index.js';
import { visible } from './formats/one-line.js';
import { parseShard, shardFilter } from './transforms/shard/index.js';
import { normalSinkDescription } from './sinks/maildir/config.js';
import { shardSetProblems } from './ledger/shards.js';
import { secondOf } from './sinks/held.js';
import type { HeldMessage } from './sinks/sink.js';
import { AccountBuilder, type ExportAccount, type LedgerRecordLike } from './ledger/account.js';
import { openFileLimit } from './launch.js';
import { isCode } from './fs-util.js';

export interface VerifyConfig {
  stateDir: string;
  /** The store to read back; without it only the ledger is checked. */
  sink?: string;
  exportId?: string;
  /** Only runs started at or after this time (ISO 8601 date or time). */
  since?: string;
  /** Check a random sample of this many messages. */
  sample?: number;
  publicKey?: string;
  checkpoints: string[];
  insecure: boolean;
}

export interface VerifyResult {
  ledger: LedgerCheck;
  /** Absent when only the ledger was checked. */
  store?: {
    sink: string;
    checked: number;
    of: number;
    sampled: boolean;
    /**
     * Outcomes in scope of runs into other sinks than this one, by sink (as the ledger describes
     * it, no secrets): not checked here (verify them with that --sink). Messages there are in no count above.
     */
    notChecked: { sink: string; outcomes: number }[];
    intact: number;
    /**
     * Of `intact`: messages the store holds as the version the record carries (src/ledger/version.ts)
     * in a copy whose X-Pivot-Export-Id field is not the one delivered (the same event as another
     * export built it, kept when the store removed our copy as its duplicate): the bytes delivered
     * but for that one field. Only records that carry a version; a copy that differs in anything
     * else is altered.
     */
    intactByVersion: { mailbox: string; itemId: string; messageId: string; location: string; exportId: string | null; expected: string; found: string; version: string }[];
    /** Found, never delivered by a run in this ledger, and not as this tool builds it: not ours to hash. */
    notHashed: number;
    missing: { mailbox: string; itemId: string; messageId: string; location?: string }[];
    altered: { mailbox: string; itemId: string; messageId: string; location: string; expected: string; found: string }[];
    /** null when not looked for (a filtered or sampled check). */
    unexpected: { mailbox: string; messageId: string; location: string }[] | null;
  };
  /**
   * The (mailbox, item) pairs the ledger records as failed (by a run in scope: --export, --since)
   * that no run of the ledger delivered or found there, before or after: in no mailbox, whatever
   * the store holds. Not zero: verified is not complete (exit 1, as `status` says INCOMPLETE).
   */
  failedNotDelivered: FailedNotDelivered;
  /**
   * The exports (of the scope: --export, --since) whose runs never settled every item for a cause
   * other than failed pairs (those are `failedNotDelivered`'s): `status --export` calls each
   * INCOMPLETE (for a shard's ledger, its part). Not empty: verified is not complete (exit 1).
   */
  notComplete: ExportNotComplete[];
  /**
   * Archives a run in scope (not with --export) refused before their export was known (unreadable,
   * hostile, against the spec), that no later run of the same bytes or file name read to its
   * export: none of their items is in any mailbox. Not empty: verified is not complete (exit 1).
   */
  archivesRefused: ArchiveRefused[];
  /** The shard (`K/N`) the state dir belongs to: its ledger answers for that shard's mailboxes only. */
  shard?: string;
  exitCode: number;
}

/** Pairs recorded failed and delivered by no run of the ledger (see `VerifyResult.failedNotDelivered`). */
export interface FailedNotDelivered {
  pairs: number;
  /** By export id (`null`: a source that had none). */
  byExport: { exportId: string | null; pairs: number }[];
  /** The first of them in the ledger's order (at most LISTED), each as its latest failure recorded it. */
  listed: { exportId: string | null; mailbox: string; itemId: string; reason?: string; detail?: string; runId: string; at: string }[];
}

/**
 * One export that `status --export` calls INCOMPLETE for a cause other than failed pairs, with the
 * counts its account gives (src/ledger/account.ts) and why, in words (`reasons`).
 */
export interface ExportNotComplete {
  exportId: string;
  /** The shard (`K/N`) whose part it is, for a shard's ledger. */
  shard?: string;
  reasons: string[];
  /** A run read the export's latest archive to its end (or, only imports, imported it whole). */
  readToEnd: boolean;
  /** Items of the archive no run read yet (null: not known, as for a shard's part). */
  notYetRead: number | null;
  /** Rejected items the rejects folder could not keep: in no mailbox and no rejects folder. */
  rejectedNotKept: number;
  /** Items a plugin failed on in this shard that no later run of it read again. */
  failedInShards: number;
  /** Archive entries named like messages files that the latest read passed over. */
  entriesNotRead: number;
  /** The account's counters add up. */
  balanced: boolean;
  /** (mailbox, item) pairs whose final outcome is failed (those of the scope are in `failedNotDelivered` too). */
  pairsFailed: number;
  /** The export's latest run, as its account gives it. */
  latestRun: { runId: string; command: string; startedAt: string; ended: 'summary' | 'failure' | 'killed'; exitCode?: number; problem?: string } | null;
}

/** An archive a run in scope refused before its export was known (see `VerifyResult.archivesRefused`). */
export interface ArchiveRefused {
  archive: string;
  sha256: string;
  runId: string;
  at: string;
  code: string;
  error: string;
}

/** How many failed pairs verify lists by name (all of them: `status --export ID`, `report --csv`). */
const LISTED = 20;

/**
 * Finds the pairs the ledger records failed and no run delivered, in two passes over the ledger,
 * holding only the pairs failed and not delivered yet (a key and a number each). The first pass
 * (`visit`, every record in order) notes each failure in scope and forgets a pair once a later run
 * delivers it or finds it there; the second (`settle`, only when a pair is left) forgets those a
 * run delivered before their failure (a re-run that failed a pair already delivered: delivered, as
 * `status` counts it), and lists the first that remain.
 */
class FailedPairs {
  /** By pair, the seq of its latest failure in scope. */
  private readonly open = new Map<string, number>();

  constructor(private readonly inScope: (line: LedgerLine & { record: 'outcome' }) => boolean) {}

  readonly visit = (line: LedgerLine): void => {
    if (line.record !== 'outcome' || !line.mailbox) return;
    if (line.outcome === 'failed') {
      if (this.inScope(line)) this.open.set(pairKey(line), line.seq);
    } else if ((line.outcome === 'delivered' || line.outcome === 'skipped') && this.open.size > 0) this.open.delete(pairKey(line));
  };

  async settle(path: string): Promise<FailedNotDelivered> {
    const listed: FailedNotDelivered['listed'] = [];
    const byExport = new Map<string | null, number>();
    if (this.open.size > 0) {
      for await (const line of ledgerRecords(path)) {
        if (line.record !== 'outcome' || !line.mailbox) continue;
        const key = pairKey(line);
        const seq = this.open.get(key);
        if (seq === undefined) continue;
        // A delivery before the pair's latest failure: a later one was forgotten in the first pass.
        if (line.outcome === 'delivered' || line.outcome === 'skipped') this.open.delete(key);
        else if (line.outcome === 'failed' && line.seq === seq) {
          // Every record before this one was read: the pair stays failed.
          byExport.set(line.exportId, (byExport.get(line.exportId) ?? 0) + 1);
          if (listed.length < LISTED) {
            listed.push({ exportId: line.exportId, mailbox: line.mailbox, itemId: line.itemId, ...(line.reason ? { reason: line.reason } : {}), ...(line.detail ? { detail: line.detail } : {}), runId: line.runId, at: line.at });
          }
        }
      }
    }
    return { pairs: [...byExport.values()].reduce((n, c) => n + c, 0), byExport: [...byExport].map(([exportId, pairs]) => ({ exportId, pairs })), listed };
  }
}

/** One (mailbox, item) of one export, as `status` counts pairs. */
function pairKey(line: { exportId: string | null; mailbox: string | null; itemId: string }): string {
  return `${line.exportId ?? ''}\u0000${line.mailbox}\u0000${line.itemId}`;
}

/** One export as the ledger's runs left it, in a few fields (no per-item memory): see `Settlement`. */
interface ExportRuns {
  /** The sha256 of the archive the latest start record of the export names. */
  latestSha256?: string;
  /** The sha256s of the archives a run of the export read to its end (no error, not stopped). */
  readToEnd: Set<string>;
  /** Only imports: the latest import summary that names the export lists it imported whole. */
  importedWhole: boolean;
  /** `entriesNotRead` of the latest run that read the latest archive to its end. */
  entriesNotRead: number;
  /** A run in scope touched it (its start, an outcome, a summary naming it). */
  inScope: boolean;
  /** A run in scope recorded an item of it in no mailbox and no rejects folder, or counters that do not add up. */
  suspect: boolean;
}

/**
 * Which exports of the scope `status --export` may call INCOMPLETE for a cause other than failed
 * pairs, found while the ledger is read once, in a few fields per export: its latest archive not
 * read to its end by any run (AccountBuilder's rule, the same fields: whatever run read it, before
 * or after another was stopped), or a run in scope that recorded an item in no mailbox and no
 * rejects folder (a rejected item not kept; a plugin's failure in a shard), an archive entry it
 * passed over, or counters that do not add up. Only these candidates (`candidates`) have their
 * account reconciled (`notComplete`), whose verdict decides: it never says less than `status`.
 */
class Settlement {
  private readonly exports = new Map<string, ExportRuns>();
  /** By run, the exports it touched (its start's, its outcomes'). */
  private readonly exportsOf = new Map<string, Set<string>>();
  /** By mailbox, the seq of the latest failure of a run in scope that found its store lost: every export's earlier pairs there may be gone. */
  readonly lostMailboxes = new Map<string, number>();
  /** Runs of an archive (`run`), by run: its start's command. */
  private readonly commandOf = new Map<string, string>();
  /** Archives refused before their export was known, by their sha256: until a later run of the same bytes or name reads one to its export. */
  private readonly refused = new Map<string, ArchiveRefused>();

  constructor(
    private readonly runInScope: (runId: string) => boolean,
    /** --export: that export only. */
    private readonly exportId: string | undefined,
  ) {}

  readonly visit = (line: LedgerLine): void => {
    if (line.record === 'failure') this.failed(line);
    if (line.record === 'start') {
      this.commandOf.set(line.runId, line.command);
      if (typeof line.exportId !== 'string') return;
      // The same archive (its bytes, or a file of its name) read to its export: that export's account says the rest.
      for (const [sha256, r] of this.refused) if (sha256 === line.sha256 || (line.archive !== undefined && basename(line.archive) === basename(r.archive))) this.refused.delete(sha256);
      const e = this.touch(line.runId, line.exportId);
      if (e && typeof line.sha256 === 'string') e.latestSha256 = line.sha256;
    } else if (line.record === 'outcome') {
      if (line.outcome === 'failed' && line.storageLost === true && typeof line.mailbox === 'string' && this.runInScope(line.runId)) this.lostMailboxes.set(line.mailbox, line.seq);
      if (line.exportId === null) return;
      const e = this.touch(line.runId, line.exportId);
      // A rejected item not kept, or the store found lost (what was delivered before is not counted as there).
      if (e && line.outcome === 'failed' && (line.mailbox === null || line.storageLost === true) && this.runInScope(line.runId)) e.suspect = true;
    } else if (line.record === 'summary') {
      if (this.runInScope(line.runId)) for (const m of line.mailboxesLost ?? []) this.lostMailboxes.set(m, line.seq);
      const notWhole = Array.isArray(line.exportsNotWhole) ? line.exportsNotWhole : [];
      for (const id of notWhole) this.touch(line.runId, id);
      const clean = !line.error && !line.interrupted;
      for (const id of this.exportsOf.get(line.runId) ?? []) {
        const e = this.exports.get(id)!;
        if (clean && line.source === 'pivot-zip' && typeof line.sha256 === 'string') {
          e.readToEnd.add(line.sha256);
          if (line.sha256 === e.latestSha256) e.entriesNotRead = line.entriesNotRead ?? 0;
        }
        if (clean && line.source === 'staged-batches' && line.exportsImportedWhole?.includes(id)) e.importedWhole = true;
        if (notWhole.includes(id)) e.importedWhole = false;
        if (this.runInScope(line.runId) && (!line.balanced || (line.entriesNotRead ?? 0) > 0 || line.storageLost === true)) e.suspect = true;
      }
    }
  };

  /**
   * A run of an archive that failed before its export was known (no start or outcome named one),
   * once the archive was hashed (it was there): none of its items is in any mailbox. Not a run
   * that only stopped (E_STOPPED) or could not find or hash its archive (nothing of it is known).
   */
  private failed(line: LedgerLine & { record: 'failure' }): void {
    if (this.exportId !== undefined || !this.runInScope(line.runId) || this.commandOf.get(line.runId) !== 'run') return;
    if (typeof line.sha256 !== 'string' || line.code === ErrorCode.STOPPED || this.exportsOf.has(line.runId)) return;
    this.refused.set(line.sha256, { archive: line.archive, sha256: line.sha256, runId: line.runId, at: line.at, code: line.code, error: line.error });
  }

  /** Archives in scope refused before their export was known, that no later run read to its export. */
  archivesRefused(): ArchiveRefused[] {
    return [...this.refused.values()];
  }

  /** The exports of the scope that may not be settled (each to be reconciled). */
  candidates(): string[] {
    return [...this.exports].filter(([, e]) => e.inScope && (!readWhole(e) || e.entriesNotRead > 0 || e.suspect)).map(([id]) => id);
  }

  /** Whether `exportId` is one this verify looks at (--export). */
  covers(exportId: string): boolean {
    return this.exportId === undefined || exportId === this.exportId;
  }

  /** Whether the export's latest archive was read to its end (AccountBuilder's `latestRead`). */
  readToEnd(exportId: string): boolean {
    const e = this.exports.get(exportId);
    return e !== undefined && readWhole(e);
  }

  private touch(runId: string, exportId: string): ExportRuns | undefined {
    if (this.exportId !== undefined && exportId !== this.exportId) return undefined;
    let e = this.exports.get(exportId);
    if (!e) this.exports.set(exportId, (e = { readToEnd: new Set(), importedWhole: false, entriesNotRead: 0, inScope: false, suspect: false }));
    if (this.runInScope(runId)) e.inScope = true;
    let ids = this.exportsOf.get(runId);
    if (!ids) this.exportsOf.set(runId, (ids = new Set()));
    ids.add(exportId);
    return e;
  }
}

function readWhole(e: ExportRuns): boolean {
  return e.latestSha256 !== undefined ? e.readToEnd.has(e.latestSha256) : e.importedWhole;
}

/**
 * The candidates' accounts, reconciled from the ledger in one more pass (as `status --export`
 * does, src/ledger/account.ts), and those not complete for a cause other than failed pairs. An
 * outcome goes to its export's builder alone (it counts for no other), but for a store found lost;
 * every other record to all.
 */
async function notCompleteExports(path: string, settlement: Settlement): Promise<ExportNotComplete[]> {
  const ids = new Set(settlement.candidates());
  // A store found lost (a folder deleted) took what every export had there: those with pairs in it before are candidates too (read once more, only then).
  const lost = settlement.lostMailboxes;
  if (lost.size > 0) {
    for await (const line of ledgerRecords(path)) {
      if (line.record === 'outcome' && line.exportId !== null && typeof line.mailbox === 'string' && line.seq < (lost.get(line.mailbox) ?? -1) && settlement.covers(line.exportId)) ids.add(line.exportId);
    }
  }
  if (ids.size === 0) return [];
  const builders = new Map([...ids].map((id) => [id, new AccountBuilder(id)]));
  for await (const line of ledgerRecords(path)) {
    const record = line as unknown as LedgerRecordLike;
    // Another export's store-lost failure counts for every export (see AccountBuilder's mailboxLostAt).
    if (line.record === 'outcome' && line.storageLost !== true) builders.get(line.exportId ?? '')?.visit(record);
    else for (const builder of builders.values()) builder.visit(record);
  }
  const out: ExportNotComplete[] = [];
  for (const [id, builder] of builders) {
    const found = notComplete(builder.result(), settlement.readToEnd(id));
    if (found) out.push(found);
  }
  return out;
}

/** The account's verdict as `status --export` gives it, less failed pairs: undefined when complete but for them. */
function notComplete(a: ExportAccount, readToEnd: boolean): ExportNotComplete | undefined {
  const complete = a.shard ? a.shardComplete === true : a.complete;
  if (complete) return undefined;
  const i = a.items;
  const latest = a.runs.at(-1);
  const reasons: string[] = [];
  const plural = (n: number, one: string, many: string) => `${n} ${n === 1 ? one : many}`;
  if (!readToEnd) {
    const notYet = i.notYetRead ? `${plural(i.notYetRead, 'item', 'items')} not read yet; ` : '';
    reasons.push(`its archive was not read to the end (${notYet}${latest ? `its latest run ${latest.runId} ${howItEnded(latest)}` : 'no run of it recorded an end'}): run it again to finish`);
  }
  if (i.rejectedNotKept > 0) reasons.push(`${plural(i.rejectedNotKept, 'rejected item', 'rejected items')} could not be kept in the rejects folder: in no mailbox and no rejects folder (a re-run with a rejects folder it can write keeps them)`);
  if (i.failedInShards) reasons.push(`${plural(i.failedInShards, 'item', 'items')} a plugin failed on in this shard: this shard's copies are in no mailbox and no rejects folder (run the shard again once the plugin works)`);
  if (i.entriesNotRead) reasons.push(`${plural(i.entriesNotRead, 'archive entry', 'archive entries')} named like a messages file ${i.entriesNotRead === 1 ? 'was' : 'were'} not read: their events are counted nowhere`);
  if (!a.balanced) reasons.push(`its counters do not add up (status --export ${a.exportId} shows them)`);
  if (a.pairs.lostFromStore) reasons.push(`${plural(a.pairs.lostFromStore, 'pair', 'pairs')} delivered (or found there) before a later run found the store lost (a folder deleted, a failing disk): not confirmed in their mailboxes; run the export again (it reads from the start) or verify --sink`);
  // Failed pairs alone are `failedNotDelivered`'s (within the scope); a cause not named above is still one.
  if (reasons.length === 0 && a.pairs.failed > 0) return undefined;
  if (reasons.length === 0) reasons.push(`status --export ${a.exportId} calls it INCOMPLETE`);
  return {
    exportId: a.exportId,
    ...(a.shard ? { shard: a.shard } : {}),
    reasons,
    readToEnd,
    notYetRead: i.notYetRead ?? null,
    rejectedNotKept: i.rejectedNotKept,
    failedInShards: i.failedInShards ?? 0,
    entriesNotRead: i.entriesNotRead ?? 0,
    balanced: a.balanced,
    pairsFailed: a.pairs.failed,
    latestRun: latest
      ? { runId: latest.runId, command: latest.command, startedAt: latest.startedAt, ended: latest.ended, ...(latest.exitCode !== undefined ? { exitCode: latest.exitCode } : {}), ...(latest.problem ? { problem: latest.problem } : {}) }
      : null,
  };
}

/** How a run of an account ended, in words. */
function howItEnded(r: ExportAccount['runs'][number]): string {
  if (r.ended === 'killed') return 'has no end recorded (killed, or its records could not be written)';
  const code = r.exitCode !== undefined ? `exit ${r.exitCode}` : 'no exit code';
  if (r.ended === 'failure') return `failed before delivering (${code})${r.problem ? `: ${cut(r.problem, 200)}` : ''}`;
  return `ended ${code}${r.problem ? `: ${cut(r.problem, 200)}` : ''}`;
}

/**
 * `verify` of several state dirs: when one is a shard's, they must be the N shards of one export,
 * each once (as `status` of several state dirs checks them, `shardSetProblems`), or the store is
 * not checked whole: a shard forgotten is one whose mailboxes nobody reads back. Refused (exit 2)
 * before anything is checked. State dirs of no shard (several unsharded ledgers) are not a set.
 */
export async function checkShardSet(dirs: string[], cwd = process.cwd()): Promise<void> {
  const parts = await Promise.all(
    dirs.map(async (dir) => {
      const state = new StateDir(resolve(cwd, dir));
      return { path: state.dir, shard: (await state.shard()) ?? null };
    }),
  );
  if (parts.every((p) => p.shard === null)) return;
  const problems = shardSetProblems(parts);
  if (problems.length > 0) {
    throw new PivotArchiveError(ErrorCode.USAGE, `the state dirs given are not every shard once, so the shared store would not be checked whole: ${problems.join('; ')}`);
  }
}

/**
 * `verify`: checks the ledger (chain, checkpoints, signatures, copies kept off the host) and,
 * given the sink, reads the store back: every (mailbox, message) recorded as delivered or found
 * there must still be there, byte for byte (sha256), whatever flags a client set since; the
 * messages of ours the ledger does not know are listed too when the whole ledger is checked.
 */
export async function verify(config: VerifyConfig, logger: Logger, cwd = process.cwd()): Promise<VerifyResult> {
  try {
    return await verifyWithin(config, logger, cwd);
  } catch (err) {
    // Out of descriptors all the same (other processes' share of the system's table, ENFILE): a limit of this host, not a bug (70).
    if (err instanceof PivotArchiveError || !(isCode(err, 'EMFILE') || isCode(err, 'ENFILE'))) throw err;
    const limit = openFileLimit();
    throw new PivotArchiveError(
      ErrorCode.OPEN_FILE_LIMIT,
      `verify ran out of open files (${errorMessage(err)})${limit === undefined ? '' : ` under an open-file limit (ulimit -n) of ${limit}`}: nothing is known of what was not checked yet; raise the limit (ulimit -n 1024 in the shell or crontab line, LimitNOFILE=1024 in a systemd unit), then verify again`,
      { cause: err },
    );
  }
}

async function verifyWithin(config: VerifyConfig, logger: Logger, cwd: string): Promise<VerifyResult> {
  const state = new StateDir(resolve(cwd, config.stateDir));
  const since = config.since === undefined ? undefined : Date.parse(config.since);
  if (since !== undefined && Number.isNaN(since)) throw new PivotArchiveError(ErrorCode.USAGE, `--since ${JSON.stringify(config.since)} is not a date such as 2026-11-23 or 2026-11-23T02:00:00Z`);
  await requireLedger(state);
  await refuseWhileRunning(state);
  const trust = await ledgerTrust(config.publicKey, config.checkpoints.map((p) => resolve(cwd, p)), state.checkpointNotePath);
  const reader = config.sink ? await createStoreReader(config.sink, { cwd, insecure: config.insecure }) : undefined;
  const expected = reader ? new ExpectedMessages() : undefined;
  try {
    // Every outcome is read (an earlier delivery decides what a later skip must find), then the
    // scope (--export, --since, the sink) chooses what is checked.
    const scope = { runs: new Set<string>(), exportSeen: false, unsealed: 0, inScopeByRun: new Map<string, number>() };
    const sinkOf = new Map<string, string>();
    // `maildir:/srv/mail/` and `maildir:/srv/mail` are one store: descriptions are compared normalised.
    const given = reader ? normalSinkDescription(reader.description) : undefined;
    // A run's store as its outcomes' locations show it (a Maildir folder older start records leave out).
    const storeOf = new Map<string, string>();
    // Pairs recorded failed: whatever --sink (or none) is given, they are in no mailbox.
    const failed = new FailedPairs((line) => (since === undefined || scope.runs.has(line.runId)) && (config.exportId === undefined || line.exportId === config.exportId));
    // Exports whose runs may not have settled every item (an archive not read to its end, rejects not kept).
    const settlement = new Settlement((runId) => since === undefined || scope.runs.has(runId), config.exportId);
    const ledger = await checkLedger(state.ledgerPath, trust, (line) => {
      failed.visit(line);
      if (line.record === 'checkpoint') scope.unsealed = 0;
      if (line.record === 'start') {
        sinkOf.set(line.runId, line.sink);
        storeOf.set(line.runId, normalSinkDescription(line.sink));
        if (since === undefined || Date.parse(line.at) >= since) scope.runs.add(line.runId);
      }
      settlement.visit(line);
      if (line.record !== 'outcome') return;
      const inScope = (since === undefined || scope.runs.has(line.runId)) && (config.exportId === undefined || line.exportId === config.exportId);
      if (inScope) {
        scope.exportSeen = true;
        scope.unsealed++;
        scope.inScopeByRun.set(line.runId, (scope.inScopeByRun.get(line.runId) ?? 0) + 1);
      }
      const recorded = sinkOf.get(line.runId);
      if (recorded !== undefined && line.location !== undefined) storeOf.set(line.runId, normalSinkDescription(recorded, line.location));
      if (reader && recorded !== undefined && storeOf.get(line.runId) !== given) return;
      expected?.add(line, inScope);
    });
    // Counted by run at the end: a run's rejects, recorded before its first delivery, are of the store its deliveries show.
    const otherSinks = new Map<string, number>();
    let thisSink = 0;
    for (const [runId, outcomes] of scope.inScopeByRun) {
      const sink = storeOf.get(runId);
      if (sink === undefined || sink === given) thisSink += outcomes;
      else otherSinks.set(sink, (otherSinks.get(sink) ?? 0) + outcomes);
    }
    if (config.exportId !== undefined && !scope.exportSeen) throw new PivotArchiveError(ErrorCode.USAGE, `the ledger ${state.ledgerPath} records nothing of export ${JSON.stringify(config.exportId)}${since !== undefined ? ` since ${config.since}` : ''}`);
    if (since !== undefined && scope.runs.size === 0) throw new PivotArchiveError(ErrorCode.USAGE, `the ledger ${state.ledgerPath} records no run started since ${config.since}`);
    // With a public key, what is checked must be covered by a signed checkpoint.
    if (trust.key && scope.unsealed > 0 && (config.exportId !== undefined || since !== undefined)) {
      ledger.chainIntact = false;
      ledger.problems.push(`${scope.unsealed} records in scope are after the last checkpoint: no signature covers them yet (let the next run seal them, then verify)`);
    }
    if (!ledger.chainIntact || ledger.signature === 'failed') logger.error(`ledger ${ledger.path} fails its check: ${ledger.problems.join('; ')}`);
    const shardOwner = await state.shard();
    const ofShard = shardOwner === undefined ? {} : { shard: shardOwner };
    const failedNotDelivered = await failed.settle(state.ledgerPath);
    const notComplete = await notCompleteExports(state.ledgerPath, settlement);
    const archivesRefused = settlement.archivesRefused();
    const settled = { failedNotDelivered: failedNotDelivered.pairs, exportsNotComplete: notComplete.length + archivesRefused.length };
    if (!reader || !expected) return { ledger, failedNotDelivered, notComplete, archivesRefused, ...ofShard, exitCode: verifyExitCode({ ledger: ledgerExitCode(ledger), storeHolds: true, ...settled }) };
    // Runs into other sinks only (a mistyped root, a moved mount point, the IMAP server of a Maildir
    // ledger): nothing here could be checked, which must not pass for a store that holds it all.
    const notChecked = [...otherSinks].map(([sink, outcomes]) => ({ sink: visible(sink), outcomes }));
    if (thisSink === 0 && notChecked.length > 0) {
      const what = `${config.exportId !== undefined ? ` of export ${JSON.stringify(config.exportId)}` : ''}${since !== undefined ? ` since ${config.since}` : ''}`;
      throw new PivotArchiveError(
        ErrorCode.USAGE,
        `--sink ${visible(reader.description)} is not the store of any run the ledger ${state.ledgerPath} records${what}: its runs delivered into ${notChecked.map((o) => `${o.sink} (${o.outcomes} outcomes)`).join(', ')}; give verify the --sink those runs were given`,
      );
    }

    // A sample needs the count first: a pass over the groups that only counts.
    let of: number | undefined;
    if (config.sample !== undefined) {
      of = 0;
      for (const group of expected.groups()) for (const e of group) if (e.inScope) of++;
    }
    const sampled = of !== undefined && config.sample! < of;
    const filtered = sampled || config.exportId !== undefined || since !== undefined;
    const result: NonNullable<VerifyResult['store']> = { sink: reader.description, checked: 0, of: 0, sampled, notChecked, intact: 0, intactByVersion: [], notHashed: 0, missing: [], altered: [], unexpected: filtered ? null : [] };
    // A shard's ledger (its state dir is bound to it: STATE/shard) answers for that shard's mailboxes of a shared store only.
    const shard = shardOwner === undefined ? undefined : parseShard(shardOwner);
    const ours = typeof shard === 'object' ? shardFilter(shard) : () => true;
    const check = async (mailbox: string, wanted: Expected[]) => {
      // The other versions of an item are among the copies a mailbox read whole lists: a filtered
      // check reads so the mailboxes where it needs them; a sample checks the latest versions only.
      const versionsChecked = !sampled && wanted.some((e) => e.versions !== undefined);
      const found = await reader.mailbox(mailbox, wanted, { sample: filtered && !versionsChecked });
      // The copies of each item (Message-ID and second) among the unexpected ones, found by key; a
      // version found is taken off (`taken`), so it is not reported unexpected.
      const itemKey = (messageId: string, sentAt: string) => `${messageId}\u0000${secondOf(sentAt)}`;
      const copiesOf = new Map<string, UnexpectedMessage[]>();
      if (versionsChecked) {
        for (const u of found.unexpected) {
          if (u.sentAt === undefined) continue;
          const key = itemKey(u.messageId, u.sentAt);
          const copies = copiesOf.get(key);
          if (copies) copies.push(u);
          else copiesOf.set(key, [u]);
        }
      }
      const taken = new Set<UnexpectedMessage>();
      const missing = (e: Expected, location: string | undefined) => result.missing.push({ mailbox, itemId: e.itemId, messageId: e.messageId, ...(location ? { location } : {}) });
      // A copy of the version a record carries, not its bytes: intact by version (see `intactByVersion`).
      const byVersion = (e: Expected, copy: HeldMessage, expected: string, version: string) => {
        result.intact++;
        result.intactByVersion.push({ mailbox, itemId: e.itemId, messageId: e.messageId, location: copy.location, exportId: copy.exportId ?? null, expected, found: copy.sha256, version });
      };
      for (const e of wanted) {
        const held = found.held.get(e);
        const recorded = e.sha256 ?? e.builtSha256;
        const recordedVersion = e.sha256 !== undefined ? e.version : e.builtVersion;
        // The held copy is the record's version in other bytes: the same message but for its
        // X-Pivot-Export-Id field (a copy that differs in anything else is another version).
        const sameVersion = held !== undefined && recorded !== undefined && held.sha256 !== recorded && recordedVersion !== undefined && held.version === recordedVersion;
        // The held copy is an earlier version (the latest one gone), which it answers for.
        const heldVersion = held && held.sha256 !== recorded && !sameVersion ? e.versions?.find((v) => v.sha256 === held.sha256) : undefined;
        if (!held) missing(e, e.location);
        else if (sameVersion) byVersion(e, held, recorded!, recordedVersion!);
        else if (heldVersion) missing(e, e.location);
        else if (e.sha256 === undefined && held.sha256 !== e.builtSha256) result.notHashed++;
        else if (held.sha256 !== recorded) result.altered.push({ mailbox, itemId: e.itemId, messageId: e.messageId, location: held.location, expected: recorded!, found: held.sha256 });
        else result.intact++;
        if (sampled) continue;
        // Every other version this ledger delivered must be there too: the held copy, or a copy the
        // store tells apart as that version (no longer unexpected). A plain copy with its bytes (one
        // the store does not tell from another copy of the item) holds it too, and stays unexpected.
        if (e.versions === undefined) continue;
        const copies = (copiesOf.get(itemKey(e.messageId, e.sentAt)) ?? []).filter((u) => !taken.has(u));
        for (const version of e.versions) {
          result.checked++;
          result.of++;
          const copy = version === heldVersion ? held : copies.find((u) => !taken.has(u) && u.version === version.sha256);
          if (copy !== undefined && copy !== held) taken.add(copy as UnexpectedMessage);
          if (copy !== undefined || copies.some((u) => !taken.has(u) && u.sha256 === version.sha256)) result.intact++;
          // The held copy is that delivery's version in other bytes (an export of another id delivered the event again).
          else if (held !== undefined && version.version !== undefined && held.version === version.version) byVersion(e, held, version.sha256, version.version);
          else missing(e, version.location);
        }
      }
      if (result.unexpected) {
        for (const u of found.unexpected) {
          if (taken.has(u)) continue;
          const entry = { mailbox, messageId: u.messageId, location: u.location };
          result.unexpected.push(entry);
          // Another version of an item a record answered for (a corrected re-delivery stored beside the first): looked up in the ledger below.
          if (u.version !== undefined && u.sentAt !== undefined) versions.set(versionKey(mailbox, u.messageId, u.sentAt, u.version), entry);
        }
      }
    };
    const versions = new Map<string, { mailbox: string; messageId: string; location: string }>();
    await reader.open();
    try {
      const checked = new Set<string>();
      for (const group of expected.groups()) {
        const byMailbox = new Map<string, Expected[]>();
        for (const e of group) {
          if (!e.inScope) continue;
          result.of++;
          // Knuth's selection sampling: each of the `of` is chosen with the chance that leaves exactly `sample` chosen.
          if (sampled && randomInt(of! - (result.of - 1)) >= config.sample! - result.checked) continue;
          result.checked++;
          const list = byMailbox.get(e.mailbox);
          if (list) list.push(e);
          else byMailbox.set(e.mailbox, [e]);
        }
        for (const mailbox of [...byMailbox.keys()].sort()) {
          checked.add(mailbox);
          await check(mailbox, byMailbox.get(mailbox)!);
        }
      }
      // Mailboxes of the store the ledger never names hold only unexpected messages.
      if (!filtered) for (const mailbox of (await reader.mailboxes()).filter((m) => ours(m) && !checked.has(m)).sort()) await check(mailbox, []);
    } finally {
      await reader.close();
    }
    // A version the store keeps beside another that no delivery of this ledger made (another
    // writer's corrected re-delivery) is answered for by a skip of this store with its sha256 (a
    // run found it there). Read again only when the store holds such a version (a plain copy of a
    // version already answered for stays unexpected).
    if (versions.size > 0 && result.unexpected) {
      const answered = new Set<string>();
      await checkLedger(state.ledgerPath, {}, (line) => {
        if (line.record !== 'outcome' || (line.outcome !== 'delivered' && line.outcome !== 'skipped') || !line.mailbox || !line.messageId || !line.sentAt || !line.sha256) return;
        if (storeOf.get(line.runId) !== given) return;
        const key = versionKey(line.mailbox, line.messageId, line.sentAt, line.sha256);
        if (versions.has(key)) answered.add(key);
      });
      const kept = new Set([...answered].map((key) => versions.get(key)!));
      result.unexpected = result.unexpected.filter((u) => !kept.has(u));
      result.checked += kept.size;
      result.of += kept.size;
      result.intact += kept.size;
    }
    const storeOk = result.missing.length === 0 && result.altered.length === 0 && (result.unexpected?.length ?? 0) === 0;
    return { ledger, store: result, failedNotDelivered, notComplete, archivesRefused, ...ofShard, exitCode: verifyExitCode({ ledger: ledgerExitCode(ledger), storeHolds: storeOk, ...settled }) };
  } finally {
    expected?.dispose();
  }
}

/** `text` cut to `max` characters, saying so. */
function cut(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${text.length - max} more characters)`;
}

/** One version of an item in a mailbox: its identity (Message-ID, sentAt's second) and sha256. */
function versionKey(mailbox: string, messageId: string, sentAt: string, sha256: string): string {
  return `${mailbox}\u0000${messageId}\u0000${secondOf(sentAt)}\u0000${sha256}`;
}

/** verify reads a store a run may be writing: refused while a live run holds the state dir (exit 3). */
async function refuseWhileRunning(state: StateDir): Promise<void> {
  // A holder in another PID namespace or on another host counts while its lease runs: its pid cannot be asked here.
  if (!(await state.heldByLiveRun())) return;
  const holder = await state.holder();
  throw new PivotArchiveError(ErrorCode.LOCKED, `a run holds ${state.lockPath}${holder ? ` (pid ${holder.pid} on ${holder.host}, since ${holder.startedAt})` : ''}: verify once it has ended, or its messages not yet recorded show as unexpected`);
}

/** What verify prints for people. */
export function formatVerify(r: VerifyResult): string {
  const l = r.ledger;
  const lines = [
    `ledger ${l.path}: ${l.records} records, ${l.checkpoints} checkpoint${l.checkpoints === 1 ? '' : 's'}, head ${l.head}`,
    `  chain ${l.chainIntact ? 'intact' : 'BROKEN'}; signature ${l.signature}${l.unsealed ? `; ${l.unsealed} records after the last checkpoint (a run killed or running)` : ''}`,
    ...l.problems.map((p) => `  problem: ${p}`),
    ...(l.notes ?? []).map((n) => `  note: ${n}`),
  ];
  const s = r.store;
  if (s) {
    lines.push(`store ${s.sink}: checked ${s.checked}${s.sampled ? ` (a random sample of ${s.of})` : ''} messages the ledger records as delivered or present`);
    const skipped = s.notChecked.reduce((n, o) => n + o.outcomes, 0);
    if (skipped > 0) lines.push(`  NOT CHECKED: ${skipped} outcome${skipped === 1 ? '' : 's'} of runs into other sinks: ${s.notChecked.map((o) => `${o.sink} (${o.outcomes})`).join(', ')}; verify each with its own --sink`);
    const byVersion = s.intactByVersion.length;
    lines.push(`  intact ${s.intact}${byVersion ? ` (of which ${byVersion} the same version in another copy: the bytes delivered but for X-Pivot-Export-Id)` : ''}, missing ${s.missing.length}, altered ${s.altered.length}, unexpected ${s.unexpected === null ? '(not looked for: filtered or sampled)' : s.unexpected.length}${s.notHashed ? `, present but never delivered by this ledger's runs ${s.notHashed}` : ''}`);
    for (const v of s.intactByVersion.slice(0, 20)) {
      const copy = v.exportId === null ? 'a copy whose X-Pivot-Export-Id field is not the one delivered' : `a copy holding X-Pivot-Export-Id ${v.exportId} (another export's build of the same event)`;
      lines.push(`  SAME VERSION ${v.mailbox} ${v.messageId} (item ${v.itemId}) at ${v.location}: ${copy}, the bytes delivered but for that field: sha256 ${v.found}, delivered ${v.expected}, version ${v.version}`);
    }
    if (byVersion > 20) lines.push(`  ... and ${byVersion - 20} more the same version in another copy (see --json)`);
    for (const m of s.missing.slice(0, 20)) lines.push(`  MISSING ${m.mailbox} ${m.messageId} (item ${m.itemId}${m.location ? `, was ${m.location}` : ''})`);
    for (const a of s.altered.slice(0, 20)) lines.push(`  ALTERED ${a.mailbox} ${a.messageId} at ${a.location}: sha256 ${a.found}, delivered ${a.expected}`);
    for (const u of (s.unexpected ?? []).slice(0, 20)) lines.push(`  UNEXPECTED ${u.mailbox} ${u.messageId} at ${u.location} (no record of the ledger accounts for it)`);
    const more = s.missing.length + s.altered.length + (s.unexpected?.length ?? 0) - Math.min(20, s.missing.length) - Math.min(20, s.altered.length) - Math.min(20, s.unexpected?.length ?? 0);
    if (more > 0) lines.push(`  ... and ${more} more (see --json)`);
  }
  // Failed pairs no run delivered: in no mailbox, whatever the store holds (the ledger's word, with or without --sink).
  const f = r.failedNotDelivered;
  const failedPairs = `${f.pairs} (mailbox, item) pair${f.pairs === 1 ? '' : 's'}`;
  if (f.pairs > 0) {
    const exports = f.byExport.map((e) => `${e.exportId ?? '(no export id)'} ${e.pairs}`).join(', ');
    lines.push(`NOT DELIVERED: ${failedPairs} the ledger records as failed, and no run delivered since (by export: ${exports}): they are in no mailbox; a re-run delivers those that failed for a passing cause (each reason below says which)`);
    for (const p of f.listed) lines.push(`  NOT DELIVERED ${p.mailbox} item ${p.itemId} (export ${p.exportId ?? '(none)'}; failed in run ${p.runId} at ${p.at}${p.reason ? `, ${p.reason}` : ''})${p.detail ? `: ${cut(p.detail, 300)}` : ''}`);
    if (f.pairs > f.listed.length) lines.push(`  ... and ${f.pairs - f.listed.length} more (status --export ID lists them, report --csv too)`);
  }
  // Exports whose runs never settled every item for another cause (status --export: INCOMPLETE).
  const n = r.notComplete;
  for (const e of n) lines.push(`NOT COMPLETE export ${e.exportId}${e.shard ? ` (shard ${e.shard}'s part)` : ''}: ${e.reasons.join('; ')}`);
  const exportsNotComplete = `the runs of ${n.length === 1 ? `export ${n[0]!.exportId}` : `${n.length} exports (${n.map((e) => e.exportId).join(', ')})`} never settled every item (see NOT COMPLETE export above)`;
  const refused = r.archivesRefused;
  for (const a of refused) lines.push(`NOT COMPLETE archive ${a.archive} (sha256 ${a.sha256}): run ${a.runId} failed on it at ${a.at} before its export was known (${a.code}: ${cut(a.error, 300)}): none of its items is in any mailbox; fix or replace it and run it again (a run that reads an archive of the same bytes or name to its export clears this)`);
  const archivesRefused = `${refused.length} archive${refused.length === 1 ? ' was' : 's were'} refused and never delivered (see NOT COMPLETE archive above)`;
  const partly = s !== undefined && s.notChecked.length > 0;
  const holds = !s
    ? 'the ledger holds (the store was not read: give --sink to check it)'
    : partly
      ? `the ledger holds, and everything it records of runs into ${s.sink} is there, unaltered; what it records of runs into other sinks was NOT checked (see above)`
      : f.pairs > 0 || n.length > 0 || refused.length > 0
        ? 'the ledger holds, and every message it records as delivered or present is there, unaltered'
        : 'the ledger holds, and everything it records is there, unaltered';
  const sameVersion = s && s.intactByVersion.length > 0 ? ` (${s.intactByVersion.length} as the same version in another export's copy: unaltered but for X-Pivot-Export-Id, see SAME VERSION above)` : '';
  const ofShard = r.shard && s ? ` (shard ${r.shard}'s mailboxes only: verify every shard's --state-dir at once for the whole store)` : '';
  const notArchived = [...(f.pairs > 0 ? [`${failedPairs} it records as failed were never delivered (see NOT DELIVERED above)`] : []), ...(n.length > 0 ? [exportsNotComplete] : []), ...(refused.length > 0 ? [archivesRefused] : [])];
  const failedToo = [...(f.pairs > 0 ? [`; and ${failedPairs} recorded failed were never delivered (see NOT DELIVERED above)`] : []), ...(n.length > 0 ? [`; and ${exportsNotComplete}`] : []), ...(refused.length > 0 ? [`; and ${archivesRefused}`] : [])].join('');
  lines.push(
    r.exitCode === ExitCode.OK
      ? `${partly ? 'verified in part' : 'verified'}: ${holds}${sameVersion}${ofShard}`
      : r.exitCode === ExitCode.DELIVERY_FAILED
        ? `NOT COMPLETE: ${holds}${sameVersion}; but ${notArchived.join('; and ')}: verified is not complete, not everything is archived (exit 1)${ofShard}`
        : r.exitCode === ExitCode.LEDGER_BROKEN
          ? `FAILED: the ledger does not hold (exit 7)${failedToo}`
          : `FAILED: the store does not hold what the ledger records (exit 6)${failedToo}`,
  );
  // Ids and locations come from the archive and the store: a control character in one must not forge or hide a line.
  return lines.map(visible).join('\n') + '\n';
}
