import { randomInt } from 'node:crypto';
import { ExpectedMessages, type Expected } from './expected-messages.js';
import { resolve } from 'node:path';
import { ErrorCode, ExitCode, PivotArchiveError } from './errors.js';
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
    const ledger = await checkLedger(state.ledgerPath, trust, (line) => {
      failed.visit(line);
      if (line.record === 'checkpoint') scope.unsealed = 0;
      if (line.record === 'start') {
        sinkOf.set(line.runId, line.sink);
        storeOf.set(line.runId, normalSinkDescription(line.sink));
        if (since === undefined || Date.parse(line.at) >= since) scope.runs.add(line.runId);
      }
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
    if (!reader || !expected) return { ledger, failedNotDelivered, ...ofShard, exitCode: verifyExitCode({ ledger: ledgerExitCode(ledger), storeHolds: true, failedNotDelivered: failedNotDelivered.pairs }) };
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
    return { ledger, store: result, failedNotDelivered, ...ofShard, exitCode: verifyExitCode({ ledger: ledgerExitCode(ledger), storeHolds: storeOk, failedNotDelivered: failedNotDelivered.pairs }) };
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
  const partly = s !== undefined && s.notChecked.length > 0;
  const holds = !s
    ? 'the ledger holds (the store was not read: give --sink to check it)'
    : partly
      ? `the ledger holds, and everything it records of runs into ${s.sink} is there, unaltered; what it records of runs into other sinks was NOT checked (see above)`
      : f.pairs > 0
        ? 'the ledger holds, and every message it records as delivered or present is there, unaltered'
        : 'the ledger holds, and everything it records is there, unaltered';
  const sameVersion = s && s.intactByVersion.length > 0 ? ` (${s.intactByVersion.length} as the same version in another export's copy: unaltered but for X-Pivot-Export-Id, see SAME VERSION above)` : '';
  const ofShard = r.shard && s ? ` (shard ${r.shard}'s mailboxes only: verify every shard's --state-dir at once for the whole store)` : '';
  const failedToo = f.pairs > 0 ? `; and ${failedPairs} recorded failed were never delivered (see NOT DELIVERED above)` : '';
  lines.push(
    r.exitCode === ExitCode.OK
      ? `${partly ? 'verified in part' : 'verified'}: ${holds}${sameVersion}${ofShard}`
      : r.exitCode === ExitCode.DELIVERY_FAILED
        ? `NOT COMPLETE: ${holds}${sameVersion}; but ${failedPairs} it records as failed were never delivered (see NOT DELIVERED above): verified is not complete, not everything is archived (exit 1)${ofShard}`
        : r.exitCode === ExitCode.LEDGER_BROKEN
          ? `FAILED: the ledger does not hold (exit 7)${failedToo}`
          : `FAILED: the store does not hold what the ledger records (exit 6)${failedToo}`,
  );
  // Ids and locations come from the archive and the store: a control character in one must not forge or hide a line.
  return lines.map(visible).join('\n') + '\n';
}
