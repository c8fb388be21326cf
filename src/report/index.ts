import { createWriteStream } from 'node:fs';
import { rename, unlink, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ErrorCode, PivotArchiveError, errorMessage } from '../errors.js';
import { exportAccount, ledgerTrust, noRunOf, requireLedger, type ExportAccount, type LedgerCheck } from '../ledger/index.js';
import { StateDir } from '../state/index.js';
import { TOOL } from '../version.js';
import { writeItemsCsv } from './csv.js';
import { renderReport } from './html.js';

export interface ReportConfig {
  stateDir: string;
  exportId: string;
  /** The HTML file to write. */
  out: string;
  /** Also the item list, as CSV. */
  csv?: string;
  publicKey?: string;
  checkpoints: string[];
}

/**
 * `report`: one export's account from the ledger, as a self-contained HTML file (and the item
 * list as CSV). Each file is written whole under a temporary name and renamed, so a reader never
 * sees half a report.
 */
export async function report(config: ReportConfig, cwd = process.cwd()): Promise<{ account: ExportAccount; check: LedgerCheck; rows: number }> {
  const state = new StateDir(resolve(cwd, config.stateDir));
  await requireLedger(state);
  for (const path of [config.out, config.csv]) {
    if (path !== undefined && [state.ledgerPath, state.checkpointNotePath, state.lockPath].includes(resolve(cwd, path))) {
      throw new PivotArchiveError(ErrorCode.USAGE, `${path} is the state dir's own file: the report never writes over the ledger`);
    }
  }
  const trust = await ledgerTrust(config.publicKey, config.checkpoints.map((p) => resolve(cwd, p)), state.checkpointNotePath);
  const reading = await exportAccount(state.ledgerPath, config.exportId, trust);
  if (reading.runs === 0) throw noRunOf(state.ledgerPath, config.exportId);
  let rows = 0;
  const csv = config.csv === undefined ? undefined : resolve(cwd, config.csv);
  if (csv) {
    rows = await writeWhole(csv, async (temporary) => {
      const out = createWriteStream(temporary, { flags: 'wx' });
      return writeItemsCsv(reading.lines, out, { end: true });
    });
  } else {
    for await (const _line of reading.lines) rows++;
  }
  const account = reading.account();
  // Records no signature covers yet cannot be called proven (the report says so, and why).
  const check = account.unsealed > 0 ? { ...reading.check, problems: [...reading.check.problems, `${account.unsealed} of this export's records are after the last checkpoint: no signature covers them yet (the next run seals them)`] } : reading.check;
  const html = renderReport(account, check, { generatedAt: new Date().toISOString(), tool: `${TOOL.name} ${TOOL.version}`, ...(config.csv ? { csv: config.csv } : {}) });
  await writeWhole(resolve(cwd, config.out), (temporary) => writeFile(temporary, html, { flag: 'wx' }));
  return { account, check, rows };
}

async function writeWhole<T>(path: string, write: (temporary: string) => Promise<T>): Promise<T> {
  const temporary = `${path}.tmp-${process.pid}`;
  try {
    const result = await write(temporary);
    await rename(temporary, path);
    return result;
  } catch (err) {
    await unlink(temporary).catch(() => undefined);
    if (err instanceof PivotArchiveError) throw err;
    throw new PivotArchiveError(ErrorCode.CONFIG, `cannot write ${path}: ${errorMessage(err)}`, { cause: err });
  }
}
