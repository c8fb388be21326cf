import { randomInt } from 'node:crypto';
import { resolve } from 'node:path';
import { ErrorCode, ExitCode, PivotArchiveError } from './errors.js';
import { ledgerExitCode, ledgerTrust, requireLedger, type LedgerCheck } from './ledger/index.js';
import { checkLedger } from './ledger/reader.js';
import type { LedgerLine } from './ledger/writer.js';
import type { Logger } from './logger.js';
import { createStoreReader, type WantedMessage } from './sinks/index.js';
import { StateDir, isAlive } from './state/index.js';
import { hostname } from 'node:os';
import { parseShard, shardFilter } from './transforms/shard/index.js';

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

/** A (mailbox, message) the ledger says the store holds, with the sha256 it was delivered with (absent: found there, never delivered by this ledger). */
interface Expected extends WantedMessage {
  mailbox: string;
  itemId: string;
  sha256?: string;
  /** The bytes this tool would deliver, when it found the message already there (skipped). */
  builtSha256?: string;
  /** A record in the scope asked (--export, --since) names it. */
  inScope: boolean;
}

export interface VerifyResult {
  ledger: LedgerCheck;
  /** Absent when only the ledger was checked. */
  store?: {
    sink: string;
    checked: number;
    of: number;
    sampled: boolean;
    intact: number;
    /** Found, never delivered by a run in this ledger, and not as this tool builds it: not ours to hash. */
    notHashed: number;
    missing: { mailbox: string; itemId: string; messageId: string; location?: string }[];
    altered: { mailbox: string; itemId: string; messageId: string; location: string; expected: string; found: string }[];
    /** null when not looked for (a filtered or sampled check). */
    unexpected: { mailbox: string; messageId: string; location: string }[] | null;
  };
  exitCode: number;
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
  // Every outcome is read (an earlier delivery decides what a later skip must find), then the
  // scope (--export, --since, the sink) chooses what is checked.
  const expected = new Map<string, Expected>();
  const scope = { runs: new Set<string>(), exportSeen: false, otherSinks: new Map<string, number>(), unsealed: 0 };
  const sinkOf = new Map<string, string>();
  const ledger = await checkLedger(state.ledgerPath, trust, (line) => {
    if (line.record === 'checkpoint') scope.unsealed = 0;
    if (line.record === 'start') {
      sinkOf.set(line.runId, line.sink);
      if (since === undefined || Date.parse(line.at) >= since) scope.runs.add(line.runId);
    }
    if (line.record !== 'outcome') return;
    const inScope = (since === undefined || scope.runs.has(line.runId)) && (config.exportId === undefined || line.exportId === config.exportId);
    if (inScope) {
      scope.exportSeen = true;
      scope.unsealed++;
    }
    const sink = sinkOf.get(line.runId);
    if (reader && sink !== undefined && sink !== reader.description) {
      if (inScope) scope.otherSinks.set(sink, (scope.otherSinks.get(sink) ?? 0) + 1);
      return;
    }
    if (reader) expect(expected, line, inScope);
  });
  if (config.exportId !== undefined && !scope.exportSeen) throw new PivotArchiveError(ErrorCode.USAGE, `the ledger ${state.ledgerPath} records nothing of export ${JSON.stringify(config.exportId)}${since !== undefined ? ` since ${config.since}` : ''}`);
  if (since !== undefined && scope.runs.size === 0) throw new PivotArchiveError(ErrorCode.USAGE, `the ledger ${state.ledgerPath} records no run started since ${config.since}`);
  // With a public key, what is checked must be covered by a signed checkpoint.
  if (trust.key && scope.unsealed > 0 && (config.exportId !== undefined || since !== undefined)) {
    ledger.chainIntact = false;
    ledger.problems.push(`${scope.unsealed} records in scope are after the last checkpoint: no signature covers them yet (let the next run seal them, then verify)`);
  }
  for (const [sink, n] of scope.otherSinks) ledger.problems.push(`${n} outcomes are of runs into another sink (${sink}): not checked here`);
  if (!ledger.chainIntact || ledger.signature === 'failed') logger.error(`ledger ${ledger.path} fails its check: ${ledger.problems.join('; ')}`);
  if (!reader) return { ledger, exitCode: ledgerExitCode(ledger) };

  const all = [...expected.values()].filter((e) => e.inScope);
  const sampled = config.sample !== undefined && config.sample < all.length;
  const chosen = sampled ? sample(all, config.sample!) : all;
  const filtered = sampled || config.exportId !== undefined || since !== undefined;
  const result: NonNullable<VerifyResult['store']> = { sink: reader.description, checked: chosen.length, of: all.length, sampled, intact: 0, notHashed: 0, missing: [], altered: [], unexpected: filtered ? null : [] };
  const byMailbox = new Map<string, Expected[]>();
  for (const e of chosen) {
    const list = byMailbox.get(e.mailbox);
    if (list) list.push(e);
    else byMailbox.set(e.mailbox, [e]);
  }
  // A shard's ledger (its state dir is bound to it: STATE/shard) answers for that shard's mailboxes of a shared store only.
  const shardOwner = await state.shard();
  const shard = shardOwner === undefined ? undefined : parseShard(shardOwner);
  const ours = typeof shard === 'object' ? shardFilter(shard) : () => true;
  await reader.open();
  try {
    const mailboxes = new Set([...byMailbox.keys(), ...(filtered ? [] : (await reader.mailboxes()).filter(ours))]);
    for (const mailbox of [...mailboxes].sort()) {
      const wanted = byMailbox.get(mailbox) ?? [];
      const found = await reader.mailbox(mailbox, wanted, { sample: filtered });
      for (const e of wanted) {
        const held = found.held.get(e);
        if (!held) result.missing.push({ mailbox, itemId: e.itemId, messageId: e.messageId, ...(e.location ? { location: e.location } : {}) });
        else if (e.sha256 === undefined && held.sha256 !== e.builtSha256) result.notHashed++;
        else if (held.sha256 !== (e.sha256 ?? e.builtSha256)) result.altered.push({ mailbox, itemId: e.itemId, messageId: e.messageId, location: held.location, expected: (e.sha256 ?? e.builtSha256)!, found: held.sha256 });
        else result.intact++;
      }
      if (result.unexpected) for (const u of found.unexpected) result.unexpected.push({ mailbox, messageId: u.messageId, location: u.location });
    }
  } finally {
    await reader.close();
  }
  const storeOk = result.missing.length === 0 && result.altered.length === 0 && (result.unexpected?.length ?? 0) === 0;
  const ledgerCode = ledgerExitCode(ledger);
  return { ledger, store: result, exitCode: ledgerCode !== ExitCode.OK ? ledgerCode : storeOk ? ExitCode.OK : ExitCode.STORE_MISMATCH };
}

/**
 * What one outcome record says the store holds, by where it is (a skip names the place of the
 * delivery it found, so the two meet): the sha256 of the latest delivery there, or, for a message
 * only ever found there, the bytes this tool would have delivered.
 */
function expect(expected: Map<string, Expected>, line: LedgerLine, inScope: boolean): void {
  if (line.record !== 'outcome' || (line.outcome !== 'delivered' && line.outcome !== 'skipped') || !line.mailbox || !line.messageId || !line.sentAt) return;
  // A location names its mailbox's store (a Maildir path, an IMAP folder's UID, a batch entry).
  const key = line.location ?? `${line.mailbox}\u0000${line.messageId}\u0000${line.sentAt}\u0000${line.sha256 ?? ''}`;
  const e: Expected = expected.get(key) ?? { mailbox: line.mailbox, itemId: line.itemId, messageId: line.messageId, sentAt: line.sentAt, inScope: false };
  if (line.location) e.location = line.location;
  if (line.outcome === 'delivered') e.sha256 = line.sha256;
  else e.builtSha256 = line.sha256;
  e.inScope ||= inScope;
  expected.set(key, e);
}

/** verify reads a store a run may be writing: refused while a live run holds the state dir (exit 3). */
async function refuseWhileRunning(state: StateDir): Promise<void> {
  const holder = await state.holder();
  if (holder && holder.host === hostname() && isAlive(holder.pid)) {
    throw new PivotArchiveError(ErrorCode.LOCKED, `a run holds ${state.lockPath} (pid ${holder.pid}, since ${holder.startedAt}): verify once it has ended, or its messages not yet recorded show as unexpected`);
  }
}

/** `n` of `all`, chosen at random (Fisher-Yates on a copy). */
function sample<T>(all: T[], n: number): T[] {
  const copy = [...all];
  for (let i = 0; i < n; i++) {
    const j = i + randomInt(copy.length - i);
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, n);
}

/** What verify prints for people. */
export function formatVerify(r: VerifyResult): string {
  const l = r.ledger;
  const lines = [
    `ledger ${l.path}: ${l.records} records, ${l.checkpoints} checkpoint${l.checkpoints === 1 ? '' : 's'}, head ${l.head}`,
    `  chain ${l.chainIntact ? 'intact' : 'BROKEN'}; signature ${l.signature}${l.unsealed ? `; ${l.unsealed} records after the last checkpoint (a run killed or running)` : ''}`,
    ...l.problems.map((p) => `  problem: ${p}`),
  ];
  const s = r.store;
  if (s) {
    lines.push(`store ${s.sink}: checked ${s.checked}${s.sampled ? ` (a random sample of ${s.of})` : ''} messages the ledger records as delivered or present`);
    lines.push(`  intact ${s.intact}, missing ${s.missing.length}, altered ${s.altered.length}, unexpected ${s.unexpected === null ? '(not looked for: filtered or sampled)' : s.unexpected.length}${s.notHashed ? `, present but never delivered by this ledger's runs ${s.notHashed}` : ''}`);
    for (const m of s.missing.slice(0, 20)) lines.push(`  MISSING ${m.mailbox} ${m.messageId} (item ${m.itemId}${m.location ? `, was ${m.location}` : ''})`);
    for (const a of s.altered.slice(0, 20)) lines.push(`  ALTERED ${a.mailbox} ${a.messageId} at ${a.location}: sha256 ${a.found}, delivered ${a.expected}`);
    for (const u of (s.unexpected ?? []).slice(0, 20)) lines.push(`  UNEXPECTED ${u.mailbox} ${u.messageId} at ${u.location} (ours, not in the ledger)`);
    const more = s.missing.length + s.altered.length + (s.unexpected?.length ?? 0) - Math.min(20, s.missing.length) - Math.min(20, s.altered.length) - Math.min(20, s.unexpected?.length ?? 0);
    if (more > 0) lines.push(`  ... and ${more} more (see --json)`);
  }
  const ok = s ? 'verified: the ledger holds, and everything it records is there, unaltered' : 'verified: the ledger holds (the store was not read: give --sink to check it)';
  lines.push(r.exitCode === 0 ? ok : r.exitCode === ExitCode.LEDGER_BROKEN ? 'FAILED: the ledger does not hold (exit 7)' : 'FAILED: the store does not hold what the ledger records (exit 6)');
  return lines.join('\n') + '\n';
}
