import { fileURLToPath } from 'node:url';
import { ErrorCode, ExitCode, FailReason, PivotArchiveError } from '../errors.js';
import { REJECTED_IN_SOME_SHARDS, type ExportAccount, type LedgerCheck, type ShardedAccount } from '../ledger/index.js';
import { accountVerdict, ledgerProves, withProof } from '../ledger/account.js';
import { formatSummary } from '../summary.js';
import { visible } from '../formats/one-line.js';
import { StateDir, type RecordedRun } from './index.js';
import { NODE_FLAGS, launchAssignments } from '../launch.js';

/** The failed items a status shows of one run; the log has them all. */
const FAILED_SHOWN = 10;

/** What `status` shows of one run, for people and for --json alike. */
function runStatus(r: RecordedRun) {
  return {
    log: r.log,
    summary: r.summary ?? null,
    failure: r.failure ?? null,
    /** Neither a summary nor a failure: killed before it finished. */
    stopped: !r.summary && !r.failure,
    failedTotal: r.failed.length,
    failed: r.failed.slice(0, FAILED_SHOWN),
  };
}

/** Lines for a terminal, each ending in a line feed and `visible`: ids, details and errors may come from the archive. */
function visibleLines(lines: string[]): string {
  return lines.map((l) => `${visible(l)}\n`).join('');
}

function formatRun(r: ReturnType<typeof runStatus>): string {
  if (r.failure) {
    const f = r.failure;
    return visibleLines([r.log, `  FAILED before delivering (exit ${f.exitCode}): ${f.code}: ${f.error}`, `  archive ${f.archive || '(none)'}${f.sha256 ? `, sha256 ${f.sha256}, ${f.size} bytes` : ''}`, `  started ${f.startedAt}, ended ${f.finishedAt}`]);
  }
  if (!r.summary) return visibleLines([r.log, '  no summary: the run was killed, or could not write its records (a full disk?), before it finished; run it again']);
  const failed = r.failed.map((f) => (f.record === 'batch' ? `  failed: batch ${f.batch}: ${f.detail}` : `  failed: item ${f.itemId} -> ${f.mailbox ?? '(no mailbox: rejected, not kept)'}: ${f.detail}`));
  const more = r.failedTotal > r.failed.length ? [`  ... and ${r.failedTotal - r.failed.length} more failed (see the log)`] : [];
  return `${visibleLines([r.log])}${formatSummary(r.summary)}\n${visibleLines([...failed, ...more])}`;
}

/** What `status` prints: the last runs, their counters and the items that failed; with `json`, one JSON object per run. */
export async function formatStatus(state: StateDir, last: number, json: boolean): Promise<string> {
  const runs = (await state.runs(last)).map(runStatus);
  if (json) return runs.map((r) => `${JSON.stringify(r)}\n`).join('');
  if (runs.length === 0) return `no runs recorded in ${state.dir}\n`;
  return runs.map(formatRun).join('\n');
}

/**
 * Said after "records no run of export X" when the state dir holds runs that ended before the
 * ledger recorded anything (a full disk, a kill, a refused archive): the export may be one of
 * them, so an operator is sent to them rather than left with a plain "no run".
 */
export async function unrecordedRunsHint(state: StateDir, last = 5): Promise<string> {
  // Only a hint: a run log that cannot be read leaves the error as it was.
  const runs = await state.runs(last).catch(() => []);
  const cut = runs.filter((r) => !r.summary);
  if (cut.length === 0) return '';
  const latest = cut[0]!;
  const how = latest.failure ? `failed (exit ${latest.failure.exitCode}) with ${latest.failure.code}: ${latest.failure.error}` : 'has no summary: still running, killed, or it could not write its records (a full disk?)';
  return `; but ${cut.length} of the last ${runs.length} run(s) in ${state.dir} did not record an end (the latest, ${latest.log}, ${how}): see status --state-dir ${state.dir}, and run the export again`;
}

/** What `status --export` prints: one export's account across all its runs, reconciled from the ledger. */
export function formatExportStatus(a: ExportAccount, ledger: LedgerCheck, mailboxesShown = 50): string {
  const i = a.items;
  const p = a.pairs;
  const rejects = Object.entries(a.rejectsByReason).sort(([x], [y]) => (x < y ? -1 : 1)).map(([r, n]) => `${r} ${n}`).join(', ');
  const lines = [
    `export ${a.exportId}${a.tenant ? ` (tenant ${a.tenant})` : ''}: ${accountVerdict({ ...a, proven: a.proven ?? ledgerProves(ledger, a) })}${a.shard ? `; the export as a whole is not known from one shard's ledger: combine every shard's state dir: status --state-dir DIR1 --state-dir DIR2 ... --export ${a.exportId} (this status exits 1 either way)` : ''}`,
    `  archive ${a.archive ?? '(unknown)'}${a.sha256s.length ? `, sha256 ${a.sha256s.join(' / ')}` : ''}${a.sha256s.length > 1 ? '  (DIFFERENT ARCHIVES under one export id)' : ''}`,
    `  runs ${a.runs.length}:`,
    ...a.runs.map((r) => `    ${r.runId} ${r.command} on ${r.host} ${r.startedAt} -> ${r.finishedAt ?? '(no end recorded: still running, killed, or its records could not be written)'}: ${r.ended === 'killed' ? 'no end' : r.ended}${r.exitCode !== undefined ? ` exit ${r.exitCode}` : ''}; delivered ${r.delivered}, skipped ${r.skipped}, rejected ${r.rejected}, failed ${r.failed}${r.problem ? `; ${r.problem}` : ''}`),
    a.shard
      ? `  items (shard ${a.shard}'s part): rejected and kept ${i.rejectedKept} + rejected not kept ${i.rejectedNotKept} + routed here ${i.routed}, of ${i.inArchive ?? '?'} in the archive; ${i.notYetRead === 0 ? 'read to the end' : 'NOT read to the end yet'} (the items add up across all shards: status --state-dir of each --export)`
      : `  items: in archive ${i.inArchive ?? '?'}${i.addedByPlugins ? ` + added by plugins ${i.addedByPlugins}` : ''} = rejected and kept ${i.rejectedKept} + rejected not kept ${i.rejectedNotKept} + routed ${i.routed} + not read yet ${i.notYetRead ?? '?'}${i.entriesNotRead ? `; and ${i.entriesNotRead} archive ${i.entriesNotRead === 1 ? 'entry' : 'entries'} named like a messages file NOT read: their events are counted nowhere (see the run's notes)` : ''}`,
    ...(i.rejectedInSomeShards ? [`  ${i.rejectedInSomeShards} item(s) ${REJECTED_IN_SOME_SHARDS}`] : []),
    ...(i.failedInShards ? [`  ${i.failedInShards} item(s) a plugin failed on in a shard: that shard's copies are in no mailbox and no rejects folder; run that shard again once the plugin works (it reads them again)`] : []),
    `  (mailbox, item) pairs: ${p.total} = delivered ${p.delivered} + already there ${p.skipped} + failed ${p.failed}${p.lostFromStore ? ` (of which ${p.lostFromStore} delivered or found there before a later run found the store lost: a folder deleted, a failing disk; run the export again)` : ''}`,
    `  counters add up ${a.balanced ? 'yes' : 'NO'}${rejects ? `; rejected by reason: ${rejects}` : ''}`,
    `  mailboxes ${a.mailboxes.length}:`,
    ...a.mailboxes.slice(0, mailboxesShown).map((m) => `    ${m.mailbox}: delivered ${m.delivered}, already there ${m.skipped}, failed ${m.failed} (runs ${m.runs.length})`),
    ...(a.mailboxes.length > mailboxesShown ? [`    ... and ${a.mailboxes.length - mailboxesShown} more (--json lists them all)`] : []),
    ...a.problems.filter((x) => x.outcome === 'failed').slice(0, FAILED_SHOWN).map((x) => `  failed: item ${x.itemId} -> ${x.mailbox ?? (x.reason === FailReason.PLUGIN_ERROR_IN_SHARD ? "(the shard's mailboxes it is for)" : '(rejects folder)')}: ${x.detail}`),
    `  ledger ${ledger.records} records, head ${ledger.head}; chain ${ledger.chainIntact ? 'intact' : 'BROKEN'}; signature ${ledger.signature}`,
    ...(a.unsealed > 0 ? [`  ${a.unsealed} of this export's records are after the last checkpoint: no signature covers them yet (the next run seals them)`] : []),
    ...ledger.problems.map((x) => `  ledger problem: ${x}`),
  ];
  return visibleLines(lines);
}

/**
 * The account's verdict (COMPLETE, INCOMPLETE or NOT PROVEN, or for one shard's ledger that shard's
 * part only), the one `report`'s banner gives: see `accountVerdict` in src/ledger/account.ts.
 */
export { accountVerdict };

/** `status` of several state dirs (one per shard): each one's runs in turn, or with `exportId` one account of the whole export. */
export async function statusOfShards(dirs: string[], o: { last: number; exportId?: string; publicKey?: string; json: boolean }): Promise<{ text: string; exitCode: number }> {
  const states = dirs.map((d) => new StateDir(d));
  if (o.exportId === undefined) return { text: (await Promise.all(states.map(async (s) => `${o.json ? '' : visibleLines([`== ${s.dir} (shard ${(await s.shard()) ?? 'none'})`])}${await formatStatus(s, o.last, o.json)}`))).join(o.json ? '' : '\n'), exitCode: ExitCode.OK };
  const { ledgerExitCode, ledgerTrust, unionAccount } = await import('../ledger/index.js');
  const ledgers = await Promise.all(states.map(async (s) => ({ path: s.ledgerPath, trust: await ledgerTrust(o.publicKey, [], s.checkpointNotePath) })));
  const sharded = await unionAccount(ledgers, o.exportId);
  // The union is proven when every shard's ledger proves its part (`ledgerProves`).
  for (const p of sharded.parts) withProof(p.account, p.check);
  sharded.account.proven = sharded.parts.every((p) => p.account.proven);
  if (sharded.parts.every((p) => p.account.runs.length === 0)) throw new PivotArchiveError(ErrorCode.USAGE, `no ledger of ${dirs.join(', ')} records a run of export ${JSON.stringify(o.exportId)}`);
  const text = o.json ? `${JSON.stringify({ account: sharded.account, problems: sharded.problems, shards: sharded.parts.map((p) => ({ path: p.path, shard: p.shard, account: p.account, ledger: p.check })) })}\n` : formatShardedStatus(sharded);
  // 7 when a shard's ledger fails its checks; else 1 when the union is not complete (a shard that is not is one of its problems).
  const broken = sharded.parts.map((p) => ledgerExitCode(p.check)).find((code) => code !== ExitCode.OK);
  return { text, exitCode: broken ?? (sharded.account.complete && sharded.account.proven ? ExitCode.OK : ExitCode.DELIVERY_FAILED) };
}

/**
 * What `status --export` prints for several state dirs (one per shard): each shard's ledger and
 * part in a line, then the whole export's account from their union, and what keeps it from being whole.
 */
export function formatShardedStatus(s: ShardedAccount): string {
  const shards = s.parts.map(
    (p) => `  shard ${p.shard ?? '(none)'}: ${p.path}: ${(p.account.shardComplete ?? p.account.complete) ? 'complete' : 'INCOMPLETE'}; routed ${p.account.items.routed}, pairs ${p.account.pairs.total} (delivered ${p.account.pairs.delivered}, already there ${p.account.pairs.skipped}, failed ${p.account.pairs.failed}); ledger ${p.check.chainIntact ? 'intact' : 'BROKEN'}, signature ${p.check.signature}`,
  );
  const head = [`${s.parts.length} shard state dir(s) of export ${s.account.exportId}, combined:`, ...shards, ...s.problems.map((x) => `  PROBLEM: ${x}`)];
  // The union's own ledger line would name one ledger; each shard's is listed above.
  const body = formatExportStatus(s.account, { ...s.parts[0]!.check, path: '(one per shard, above)' }).split('\n').filter((l) => !l.startsWith('  ledger '));
  return `${visibleLines(head)}${body.join('\n')}`;
}

const BIN = fileURLToPath(new URL('../../../bin/pivot-archive.js', import.meta.url));

function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** `MM HH * * * cd DIR && NODE BIN ARGS`: absolute paths, since cron's PATH and cwd are bare. */
export function crontabLine(at: string, args: string[], cwd: string): string {
  const match = /^([01]?\d|2[0-3]):([0-5]\d)$/.exec(at);
  if (!match) throw new PivotArchiveError(ErrorCode.USAGE, `--at ${JSON.stringify(at)} is not a time of day such as 02:30`);
  if (args.length === 0) throw new PivotArchiveError(ErrorCode.USAGE, 'give the command to schedule after --, e.g. -- run --inbox DIR --sink maildir:DIR');
  const command = [...launchAssignments(), process.execPath, ...NODE_FLAGS, BIN, ...args].map(shellQuote).join(' ');
  return `${Number(match[2])} ${Number(match[1])} * * * cd ${shellQuote(cwd)} && ${command}`;
}
