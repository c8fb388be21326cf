import { AccountBuilder, type ExportAccount, type LedgerCheck, type LedgerRecordLike } from './account.js';
import { checkLedger, ledgerRecords } from './reader.js';
import type { LedgerTrust } from './index.js';

/** What an item some shards rejected and others delivered is, and what to do (status and report say it alike). */
export const REJECTED_IN_SOME_SHARDS =
  "a plugin dropped (or refused) in some shards and other shards delivered: the mailboxes of the shards that dropped them have no copy (those shards kept them in their rejects folders and ledgers). A plugin must give the same result on every shard's host: make it so, then run the shards that dropped them again";

/** One shard's state dir as `status` reads it for a union. */
export interface ShardPart {
  /** The ledger read. */
  path: string;
  /** `K/N` as the export's runs in this ledger name it (null: unsharded runs; undefined: no run of the export). */
  shard: string | null | undefined;
  account: ExportAccount;
  check: LedgerCheck;
  /** By command, the outcome options of the export's latest run in this ledger. */
  options: Map<string, Record<string, unknown>>;
}

export interface ShardedAccount {
  /** The whole export: every shard's records in one account, the items equation checked across them. */
  account: ExportAccount;
  parts: ShardPart[];
  /** What keeps the union from being the whole export: a shard missing, given twice, N that differs, a ledger broken. */
  problems: string[];
}

/** Records of ledger `i` get seqs no other ledger has (a ledger of 2^40 records is far off). */
const SEQ_STRIDE = 2 ** 40;

/**
 * The account of one export across the ledgers of its N shards (each shard's state dir): each
 * ledger is checked on its own, then every record of every ledger is fed to one account, whose
 * mailboxes do not overlap (each mailbox is one shard's) and whose rejected items shard 1 alone
 * recorded (but plugin failures, which each shard that met one recorded: src/ledger/SPEC.md); so
 * its items equation (in archive = rejected + routed + not read yet) is the whole export's. The union is complete only when every shard 1/N..N/N is there once, with one N, every
 * ledger holds and each shard read the archive to its end.
 */
export async function unionAccount(ledgers: { path: string; trust: LedgerTrust }[], exportId: string): Promise<ShardedAccount> {
  const union = new AccountBuilder(exportId, true);
  const parts: ShardPart[] = [];
  for (const [i, { path, trust }] of ledgers.entries()) {
    if (i > 0) union.nextLedger();
    const own = new AccountBuilder(exportId);
    const check = await checkLedger(path, trust, (line) => {
      const r = line as unknown as LedgerRecordLike;
      own.visit(r);
      union.visit({ ...r, seq: i * SEQ_STRIDE + r.seq });
    });
    const winners = own.winners();
    for await (const line of ledgerRecords(path)) own.second(line as unknown as LedgerRecordLike, winners);
    const shards = [...own.shards];
    parts.push({ path, shard: shards.length === 0 ? undefined : shards.length === 1 ? shards[0] : shards.join(' and '), account: own.result(), check, options: own.latestOptions });
  }
  const winners = union.winners();
  for (const [i, { path }] of ledgers.entries()) {
    for await (const line of ledgerRecords(path)) union.second({ ...(line as unknown as LedgerRecordLike), seq: i * SEQ_STRIDE + line.seq }, winners);
  }
  const problems = shardProblems(parts);
  const account = union.result();
  const split = account.items.rejectedInSomeShards ?? 0;
  if (split > 0) problems.push(`${split} item(s) ${REJECTED_IN_SOME_SHARDS}`);
  if (problems.length > 0) {
    account.complete = false;
    account.balanced = false;
  }
  return { account, parts, problems };
}

/**
 * Why the state dirs given are not the N shards of one export, each once: a state dir of no run of
 * it (`shard` undefined) or of unsharded runs (null), one of several shards, a shard given twice or
 * missing, shards that disagree on N. What `status` and `verify` of several state dirs both check.
 */
export function shardSetProblems(parts: { path: string; shard: string | null | undefined }[]): string[] {
  const problems: string[] = [];
  /** Each K/N given, by its text, and the state dirs holding it. */
  const seen = new Map<string, string>();
  const sharded: { path: string; shard: string }[] = [];
  const counts = new Set<number>();
  for (const p of parts) {
    if (p.shard === undefined) problems.push(`${p.path} records no run of this export`);
    else if (p.shard === null) problems.push(`${p.path} holds unsharded runs of this export: give only the state dirs of the shards (--shard K/N)`);
    else if (!/^\d+\/\d+$/.test(p.shard)) problems.push(`${p.path} holds runs of several shards (${p.shard}): each shard needs its own state dir`);
    else {
      const [k, n] = p.shard.split('/').map(Number) as [number, number];
      counts.add(n);
      // The same K of another N is another shard: the Ns disagreeing is said below, naming each dir's K/N.
      const key = `${k}/${n}`;
      if (seen.has(key)) problems.push(`shard ${key} is given twice: ${seen.get(key)} and ${p.path}`);
      seen.set(key, p.path);
      sharded.push({ path: p.path, shard: key });
    }
  }
  if (counts.size > 1) {
    const given = sharded.map((p) => `${p.path} is ${p.shard}`).join(', ');
    problems.push(`the shards disagree on N: ${[...counts].sort((a, b) => a - b).join(', ')}: shards of different N given: ${given} (every shard of one export must be K/N with the same N)`);
  } else if (counts.size === 1) {
    const [n] = [...counts] as [number];
    const missing = Array.from({ length: n }, (_, i) => i + 1).filter((k) => !seen.has(`${k}/${n}`));
    if (missing.length > 0) problems.push(`shard${missing.length > 1 ? 's' : ''} ${missing.map((k) => `${k}/${n}`).join(', ')} missing: give every shard's --state-dir`);
  }
  return problems;
}

/** Why the parts are not the N shards of one export, each once. */
function shardProblems(parts: ShardPart[]): string[] {
  const problems = shardSetProblems(parts);
  for (const p of parts) {
    if (!p.check.chainIntact || p.check.signature === 'failed') problems.push(`the ledger ${p.path} fails its check: ${p.check.problems.join('; ')}`);
    // (An import's ledger knows no archive to have read to its end: only its failures count here.)
    const unread = p.account.items.inArchive !== undefined && p.account.items.notYetRead !== 0;
    const failedInShard = p.account.items.failedInShards ?? 0;
    if (p.shard && (p.account.pairs.failed > 0 || p.account.items.rejectedNotKept > 0 || failedInShard > 0 || unread)) {
      const plugin = failedInShard > 0 ? ` (of which ${failedInShard} a plugin failed on: run this shard again once the plugin works)` : '';
      problems.push(`shard ${p.shard} (${p.path}) is not complete: ${p.account.pairs.failed} failed, ${p.account.items.rejectedNotKept} rejected but not kept${plugin}${unread ? ', not read to the end yet' : ''}`);
    }
  }
  const sha256s = new Set(parts.flatMap((p) => p.account.sha256s));
  if (sha256s.size > 1) problems.push(`the shards read different archives under one export id (sha256 ${[...sha256s].join(' / ')})`);
  problems.push(...optionsThatDiffer(parts));
  return problems;
}

/**
 * Shards must route and reject alike: shard 1 alone keeps the rejected items and every other
 * shard passes over what it takes shard 1 rejects, so a shard run with another --max-item-size,
 * --domain, --user-map or plugin could leave an item nowhere. The options of each shard's latest
 * run of the export (by command), where they differ, are named.
 */
function optionsThatDiffer(parts: ShardPart[]): string[] {
  const problems: string[] = [];
  for (const command of new Set(parts.flatMap((p) => [...p.options.keys()]))) {
    const having = parts.filter((p) => p.options.has(command));
    // Where rejected items are kept is each host's own.
    const keys = new Set(having.flatMap((p) => Object.keys(p.options.get(command)!)).filter((key) => key !== 'rejects'));
    for (const key of keys) {
      const values = new Map<string, string[]>();
      for (const p of having) {
        const value = JSON.stringify(p.options.get(command)![key] ?? null);
        values.set(value, [...(values.get(value) ?? []), `shard ${p.shard ?? '(none)'}`]);
      }
      if (values.size > 1) {
        problems.push(`the shards' ${command}s differ in ${key} (${[...values].map(([value, shards]) => `${shards.join(', ')}: ${value}`).join('; ')}): every shard must run with the same options, or an item may be left nowhere; run the odd shards again with the others' options`);
      }
    }
  }
  return problems;
}
