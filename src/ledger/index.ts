import { ErrorCode, ExitCode, PivotArchiveError, errorMessage } from '../errors.js';
import { pathExists } from '../fs-util.js';
import { AccountBuilder, withProof, type ExportAccount, type ItemLine, type LedgerCheck, type LedgerRecordLike } from './account.js';
import { parseVerifierKey, type VerifierKey } from './note.js';
import { checkLedger, ledgerRecords, readCheckpointCopies, type CheckpointCopy } from './reader.js';
import type { LedgerLine } from './writer.js';
import { readFile } from 'node:fs/promises';

export type { ExportAccount, ItemLine, LedgerCheck } from './account.js';
export { generateKeys } from './note.js';

/** What the ledger is checked against: a public key, and checkpoint copies kept off the host. */
export interface LedgerTrust {
  key?: VerifierKey;
  copies: CheckpointCopy[];
  /** The state dir's own checkpoint note, named when it is missing. */
  ownNoteMissing?: string;
}

/**
 * The public key (a verifier key's text, or a file holding it) and the checkpoint copies to
 * trust: the state dir's own last note, and the copies the user kept elsewhere.
 */
export async function ledgerTrust(publicKey: string | undefined, checkpointPaths: string[], ownNote: string): Promise<LedgerTrust> {
  const key = publicKey === undefined ? undefined : await readVerifierKey(publicKey);
  const own = await pathExists(ownNote);
  for (const path of checkpointPaths) {
    if (!(await pathExists(path))) throw new PivotArchiveError(ErrorCode.USAGE, `--checkpoint ${path}: no such file`);
  }
  const copies = await readCheckpointCopies([...(own ? [ownNote] : []), ...checkpointPaths]).catch((err: unknown) => {
    throw new PivotArchiveError(ErrorCode.USAGE, `a --checkpoint copy cannot be read: ${errorMessage(err)}`);
  });
  return { key, copies, ...(own ? {} : { ownNoteMissing: ownNote }) };
}

/** The verifier key `--public-key` gives: its text, or a file holding it. */
export async function readVerifierKey(publicKey: string): Promise<VerifierKey> {
  const text =
    publicKey.includes('+') && !(await pathExists(publicKey))
      ? publicKey
      : await readFile(publicKey, 'utf8').catch((err: unknown) => {
          // A missing or unreadable file is the user's to fix (exit 2), as import says it, not a bug (was: exit 70 with a stack).
          throw new PivotArchiveError(ErrorCode.CONFIG, `--public-key ${publicKey} cannot be read: ${(err as NodeJS.ErrnoException).code ?? errorMessage(err)}`);
        });
  return parseVerifierKey(text, `--public-key ${publicKey.includes('+') ? '(given inline)' : publicKey}`);
}

/**
 * Checks the ledger and reconciles one export from it, in two passes: the first (done here)
 * checks the chain and finds each item's final outcome; the second is `lines`, every item's
 * final line in ledger order (for the CSV), after which `account()` is complete.
 */
export async function exportAccount(path: string, exportId: string, trust: LedgerTrust): Promise<{ check: LedgerCheck; runs: number; lines: AsyncGenerator<ItemLine>; account(): ExportAccount }> {
  const builder = new AccountBuilder(exportId);
  const check = await checkLedger(path, trust, (line) => builder.visit(line as unknown as LedgerRecordLike));
  const winners = builder.winners();
  let done = false;
  async function* lines(): AsyncGenerator<ItemLine> {
    for await (const line of ledgerRecords(path)) {
      let found: ItemLine | undefined;
      builder.second(line as unknown as LedgerRecordLike, winners, (l) => (found = l));
      if (found) yield found;
    }
    done = true;
  }
  return {
    check,
    runs: builder.runCount,
    lines: lines(),
    account: () => {
      if (!done) throw new Error('exportAccount: read every line before the account');
      // Counters that add up prove nothing when the ledger fails its check: `proven`, and the verdict NOT PROVEN.
      return withProof(builder.result(), check);
    },
  };
}

/** The account of one export when the item lines are not wanted. */
export async function readExportAccount(path: string, exportId: string, trust: LedgerTrust): Promise<{ account: ExportAccount; check: LedgerCheck }> {
  const reading = await exportAccount(path, exportId, trust);
  for await (const _line of reading.lines);
  return { account: reading.account(), check: reading.check };
}

/** The export ids the ledger names, in the order they first appear. */
export async function exportIds(path: string): Promise<string[]> {
  const ids = new Set<string>();
  for await (const line of ledgerRecords(path)) if (line.record === 'start' && typeof line.exportId === 'string') ids.add(line.exportId);
  return [...ids];
}

export type { LedgerLine };

export { REJECTED_IN_SOME_SHARDS, unionAccount, type ShardedAccount, type ShardPart } from './shards.js';

/** The state dir's ledger path, or a usage error when there is none (a mistyped --state-dir is not a broken ledger). */
export async function requireLedger(state: { dir: string; ledgerPath: string }, more: () => Promise<string> = async () => ''): Promise<string> {
  if (!(await pathExists(state.ledgerPath))) throw new PivotArchiveError(ErrorCode.USAGE, `no ledger in ${state.dir} (${state.ledgerPath} does not exist): is --state-dir the one the runs were given?${await more()}`);
  return state.ledgerPath;
}

/** The error of an export the ledger never saw: refused, not shown as an empty account. `more`: what else the caller knows (runs that ended before recording). */
export function noRunOf(ledgerPath: string, exportId: string, more = ''): PivotArchiveError {
  return new PivotArchiveError(ErrorCode.USAGE, `the ledger ${ledgerPath} records no run of export ${JSON.stringify(exportId)}${more}`);
}

/** 0 when the ledger holds (chain, checkpoints, signatures), else 7: what verify, status --export and report exit with. */
export function ledgerExitCode(check: Pick<LedgerCheck, 'chainIntact' | 'signature'>): number {
  return check.chainIntact && check.signature !== 'failed' ? ExitCode.OK : ExitCode.LEDGER_BROKEN;
}

/**
 * `status --export`'s exit code: 7 when the ledger fails its checks, else 1 when the export is not
 * complete, else 0. One shard's state dir never shows the export complete (`ExportAccount.shardComplete`
 * says whether its part is): 1, so that a script never takes one shard's part for the export.
 */
export function accountExitCode(account: Pick<ExportAccount, 'complete' | 'proven'>, check: Pick<LedgerCheck, 'chainIntact' | 'signature'>): number {
  const ledger = ledgerExitCode(check);
  // 0 only for COMPLETE: counters the ledger does not prove (NOT PROVEN: a problem its check found, records not sealed yet) are not.
  return ledger !== ExitCode.OK || (account.complete && account.proven !== false) ? ledger : ExitCode.DELIVERY_FAILED;
}
