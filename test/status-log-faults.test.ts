// A status log that cannot be written (a full disk) stops the run, and costs the record nothing
// that still works: the state dir's run log and ledger get every outcome and the summary.
// /dev/full fails every write with ENOSPC, for any user: no tmpfs (root) needed.
import { existsSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { mkdir, readFile, readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { StatusLog } from '../src/status-log.js';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { needing } from './helpers/needing.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const exec = promisify(execFile);
const FULL = '/dev/full';
/** /dev/full (Linux: every write fails ENOSPC, for any user) is what these tests need. */
const noFull = existsSync(FULL) ? undefined : `no ${FULL} on this machine`;
const outcome = (n: number) => ({ record: 'outcome' as const, exportId: 'acme-1', itemId: `m_${n}`, conversationId: 'c_1', mailbox: 'a@acme.example', sink: 'maildir', outcome: 'delivered' as const });

function lines(text: string): Record<string, unknown>[] {
  return text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

needing(noFull, 'a status log file that fails (ENOSPC) fails every write from then on, but every record still reaches the other files', async (t) => {
  const dir = await tempDir(t);
  const runLog = join(dir, 'run.jsonl');
  const log = await StatusLog.open([FULL, runLog], 'run-1');
  const errors: unknown[] = [];
  for (let n = 0; n < 200; n++) {
    await log.write(outcome(n)).catch((err: unknown) => errors.push(err));
    // Let the stream report its error, as a run's deliveries do between records.
    if (n % 20 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  await log.close().catch(() => undefined);
  t.true(errors.length > 0, 'the failing file fails the writes');
  t.like(errors[0], { code: 'E_STATUS_LOG' });
  t.regex(String((errors[0] as Error).message), /\/dev\/full/);
  t.deepEqual(
    lines(await readFile(runLog, 'utf8')).map((l) => l.itemId),
    Array.from({ length: 200 }, (_, n) => `m_${n}`),
    'the other file holds every record, the ones written after the failure too',
  );
});

// A status log that fills part-way (a small tmpfs: the start record fits, later outcomes do not);
// one that cannot take even the start record stops the run before any delivery (records-first.test.ts).
needing(process.getuid?.() === 0 ? undefined : 'root, to mount a small tmpfs', '--status-log filling up mid-run with a roomy --state-dir: the run stops at once (exit 1, E_STATUS_LOG), and the run log and ledger hold every outcome, the summary and a checkpoint that covers them', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 21, edgeCases: false });
  const state = join(dir, 'state');
  const mail = join(dir, 'mail');
  const small = join(dir, 'small');
  await mkdir(small);
  await exec('mount', ['-t', 'tmpfs', '-o', 'size=8k', 'tmpfs', small]);
  t.teardown(() => exec('umount', [small]).then(() => undefined, () => undefined));
  const result = await cli(['run', archive, '--all-domains', '--sink', `maildir:${mail}?concurrency=8`, '--state-dir', state, '--status-log', join(small, 'status.jsonl'), '--rejects', join(dir, 'rejects'), '--json']);
  t.is(result.code, 1, result.stderr);
  const summary = JSON.parse(result.stdout) as { delivered: number; itemsFromSource: number; error?: { code: string } };
  t.is(summary.error?.code, 'E_STATUS_LOG');
  t.true(summary.delivered > 0);
  // Stopped at once: the deliveries in flight (8) settled, no further one began.
  t.true(summary.delivered <= 64, `${summary.delivered} delivered after the status log failed`);
  t.log(`delivered ${summary.delivered}, read ${summary.itemsFromSource} of 400 events`);
  t.true(summary.itemsFromSource < 400, 'reading stopped');
  const stored = (await readMaildir(mail)).length;
  t.is(stored, summary.delivered, 'every message stored is counted');
  // The run log under the state dir: every outcome and the summary (status does not call the run killed).
  const [runName] = await readdir(join(state, 'runs'));
  const run = lines(await readFile(join(state, 'runs', runName!), 'utf8'));
  t.is(run.filter((l) => l.record === 'outcome' && l.outcome === 'delivered').length, summary.delivered);
  t.like(run.find((l) => l.record === 'summary'), { delivered: summary.delivered, error: { code: 'E_STATUS_LOG' } });
  // The ledger: the same, sealed by a checkpoint that covers every record before it.
  const ledger = lines(await readFile(join(state, 'ledger.jsonl'), 'utf8'));
  t.is(ledger.filter((l) => l.record === 'outcome' && l.outcome === 'delivered').length, summary.delivered);
  t.truthy(ledger.find((l) => l.record === 'summary'));
  const last = ledger[ledger.length - 1]!;
  t.is(last.record, 'checkpoint');
  t.is(last.size, ledger.length - 1);
  const status = await cli(['status', '--state-dir', state]);
  t.notRegex(status.stdout, /no summary/);
  t.regex(status.stdout, /E_STATUS_LOG/);
});
