// A plugin splits one event into parts: each part is its own item in the ledger and in the export's
// account, whatever its outcome (delivered, or rejected and kept), across a re-run and a killed run
// and the run after it. Through the command line, on a real Maildir: the run, `status --export` and
// `report` (HTML and CSV).
import test, { type ExecutionContext } from 'ava';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeArchive } from './helpers/archive.js';
import { cli, type CliResult } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

type Json = Record<string, unknown>;

const EXPORT_ID = 'acme-2026-11-23';
const PARTS = ['m_2_part0', 'm_2_part1', 'm_2_part2'];

/**
 * An export of `events` messages (m_1, m_2, m_3, ...) among three users of acme.example, and a plugin that
 * splits m_2 into PARTS; the parts numbered in `unmapped` lose their participants (so are rejected
 * `unmapped`). With KILL_AFTER_OUTCOMES (the ledger's path) set, the plugin kills its run at m_3
 * once the ledger holds the outcomes of m_1's and m_2's items (3 of m_1's pairs, a pair or a
 * rejection for each part), or after 20 s: never a run left waiting. With STOP_AT (an item id)
 * set, it stops its run at that item as `kill -TERM` does.
 */
async function splitExport(t: ExecutionContext, unmapped: number[], events = 3) {
  const dir = await tempDir(t);
  const users = [0, 1, 2].map((i) => ({ id: `u_${i}`, displayName: `User ${i}`, email: `user${i}@acme.example` }));
  const conversations = [{ id: 'c_1', type: 'room', name: 'Room', members: users.map((u) => u.id) }];
  const messages = Array.from({ length: events }, (_, n) => n + 1).map((i) => ({ id: `m_${i}`, conversationId: 'c_1', type: 'message', sentAt: new Date(Date.UTC(2026, 10, 23, 10, 0, i)).toISOString(), senderId: 'u_0', text: `hello ${i}` }));
  const archive = await writeArchive(join(dir, 'export.zip'), { users, conversations, messages: { 'a.json': messages } });
  const plugin = join(dir, 'split.mjs');
  await writeFile(
    plugin,
    `import { readFileSync } from 'node:fs';
const parts = ${JSON.stringify(PARTS)};
const unmapped = new Set(${JSON.stringify(unmapped)});
export default { name: 'split', hostApi: '^1.0.0', async transform(item) {
  const ledger = process.env.KILL_AFTER_OUTCOMES;
  if (item.id === 'm_3' && ledger) {
    const outcomes = 3 + unmapped.size + 3 * (parts.length - unmapped.size);
    const deadline = Date.now() + 20000;
    while (readFileSync(ledger, 'utf8').split('"record":"outcome"').length - 1 < outcomes && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    process.kill(process.pid, 'SIGKILL');
  }
  if (item.id === process.env.STOP_AT) {
    process.kill(process.pid, 'SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
  }
  return item.id === 'm_2' ? parts.map((id, i) => ({ ...item, id, participants: unmapped.has(i) ? [] : item.participants })) : item;
} };
`,
  );
  const state = join(dir, 'state');
  const args = ['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--plugin', plugin, '--json'];
  return { dir, state, args };
}

async function ledgerOutcomes(state: string): Promise<Json[]> {
  const lines = (await readFile(join(state, 'ledger.jsonl'), 'utf8')).trim().split('\n');
  return lines.map((l) => JSON.parse(l) as Json).filter((r) => r.record === 'outcome');
}

/** `status --export` (text and JSON) and `report` (HTML verdict, CSV rows) of the export. */
async function accountOf(dir: string, state: string) {
  const status = await cli(['status', '--state-dir', state, '--export', EXPORT_ID]);
  const { account } = JSON.parse((await cli(['status', '--state-dir', state, '--export', EXPORT_ID, '--json'])).stdout) as { account: Json };
  const html = join(dir, 'report.html');
  const csv = join(dir, 'items.csv');
  const report = await cli(['report', '--state-dir', state, '--export', EXPORT_ID, '--out', html, '--csv', csv]);
  const verdict = /data-k="verdict">([A-Z ]+)</.exec(await readFile(html, 'utf8'))?.[1];
  // Plain ids, reasons and paths here: no field is quoted.
  const rows = (await readFile(csv, 'utf8')).trim().split('\r\n').slice(1).map((l) => l.split(','));
  return { status, account, report, verdict, rows };
}

function assertComplete(t: ExecutionContext, status: CliResult, verdict: string | undefined): void {
  t.is(status.code, 0, status.stdout);
  t.regex(status.stdout, new RegExp(`export ${EXPORT_ID} \\(tenant acme\\): COMPLETE`));
  t.regex(status.stdout, /counters add up yes/);
  t.is(verdict, 'COMPLETE');
}

test('a split whose parts are all rejected: each part is recorded under its own id, kept apart, counted once; the export is COMPLETE', async (t) => {
  const { dir, state, args } = await splitExport(t, [0, 1, 2]);
  const run = await cli(args);
  t.is(run.code, 0, run.stderr);
  t.like(JSON.parse(run.stdout) as Json, { itemsAddedByPlugins: 2, rejected: { unmapped: 3 }, itemsRouted: 2, balanced: true });
  const rejections = (await ledgerOutcomes(state)).filter((r) => r.outcome === 'rejected');
  t.deepEqual(rejections.map((r) => r.itemId).sort(), PARTS);
  t.true(rejections.every((r) => r.position === '0.1'), 'the parts stand where their event stands');
  t.is(new Set(rejections.map((r) => r.kept)).size, 3, 'each part kept in its own folder');
  const { status, account, report, verdict, rows } = await accountOf(dir, state);
  assertComplete(t, status, verdict);
  t.like(account, { items: { inArchive: 3, addedByPlugins: 2, rejectedKept: 3, rejectedNotKept: 0, routed: 2, notYetRead: 0 }, rejectsByReason: { unmapped: 3 }, balanced: true, complete: true });
  t.is(report.code, 0, report.stderr);
  t.deepEqual(rows.filter((r) => r[3] === 'rejected').map((r) => r[0]).sort(), PARTS);
});

test('a split with parts delivered and parts rejected, then run again: each part counted once, by its final outcome; COMPLETE both times', async (t) => {
  const { dir, state, args } = await splitExport(t, [0, 2]);
  for (const pass of ['first run', 're-run']) {
    const run = await cli(args);
    t.is(run.code, 0, `${pass}: ${run.stderr}`);
    const { status, account, verdict, rows } = await accountOf(dir, state);
    assertComplete(t, status, verdict);
    t.like(account, { items: { inArchive: 3, addedByPlugins: 2, rejectedKept: 2, rejectedNotKept: 0, routed: 3, notYetRead: 0 }, pairs: { total: 9, delivered: 9, skipped: 0, failed: 0 }, rejectsByReason: { unmapped: 2 } }, pass);
    t.deepEqual(rows.filter((r) => r[3] === 'rejected').map((r) => r[0]).sort(), ['m_2_part0', 'm_2_part2'], pass);
    t.deepEqual([...new Set(rows.filter((r) => r[3] === 'delivered').map((r) => r[0]))].sort(), ['m_1', 'm_2_part1', 'm_3'], pass);
  }
  t.is((await ledgerOutcomes(state)).filter((r) => r.outcome === 'rejected').length, 4, 'both runs recorded both rejected parts');
});

test('a run killed after a split\'s parts were recorded, and the run after it: the parts rejected twice count once; COMPLETE', async (t) => {
  const { dir, state, args } = await splitExport(t, [0, 2]);
  const killed = await cli(args, { env: { KILL_AFTER_OUTCOMES: join(state, 'ledger.jsonl') } });
  t.is(killed.code, null, 'killed by its plugin');
  const half = await cli(['status', '--state-dir', state, '--export', EXPORT_ID]);
  t.is(half.code, 1);
  t.regex(half.stdout, /INCOMPLETE/);
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  t.deepEqual((await ledgerOutcomes(state)).filter((r) => r.outcome === 'rejected').map((r) => r.itemId).sort(), ['m_2_part0', 'm_2_part0', 'm_2_part2', 'm_2_part2']);
  const { status, account, verdict } = await accountOf(dir, state);
  assertComplete(t, status, verdict);
  t.like(account, { items: { inArchive: 3, addedByPlugins: 2, rejectedKept: 2, rejectedNotKept: 0, routed: 3, notYetRead: 0 }, pairs: { total: 9, failed: 0 } });
  t.deepEqual((account.runs as Json[]).map((r) => r.ended), ['killed', 'summary']);
});

test('a run stopped past a split, and the run that resumes from its checkpoint: the parts count as done earlier, so its counters and the export add up; COMPLETE', async (t) => {
  const { dir, state, args } = await splitExport(t, [], 500);
  const stopped = await cli(args, { env: { STOP_AT: 'm_100' } });
  t.is(stopped.code, 4, stopped.stderr);
  const [name] = (await readdir(join(state, 'checkpoints'))).filter((n) => n.endsWith('.json'));
  const checkpoint = JSON.parse(await readFile(join(state, 'checkpoints', name!), 'utf8')) as { resumeAt: { index: number }; addedByPlugins: number };
  t.true(checkpoint.resumeAt.index > 1, 'the checkpoint is past m_2');
  t.is(checkpoint.addedByPlugins, 2);
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  t.regex(resumed.log, /resuming acme-2026-11-23 from an earlier run's checkpoint/);
  // m_2's split, settled by the stopped run: the events before the checkpoint and the 2 items added to them.
  t.like(JSON.parse(resumed.stdout) as Json, { itemsFromSource: 500, itemsAddedByPlugins: 2, itemsDoneEarlier: checkpoint.resumeAt.index + 2, itemsRouted: 500 - checkpoint.resumeAt.index, balanced: true });
  const { status, account, verdict } = await accountOf(dir, state);
  assertComplete(t, status, verdict);
  t.like(account, { items: { inArchive: 500, addedByPlugins: 2, rejectedKept: 0, rejectedNotKept: 0, routed: 502, notYetRead: 0 }, pairs: { total: 1506, failed: 0 } });
});

test('a checkpoint saved before it kept the items plugins added is still resumed, as one that counts none', async (t) => {
  const { state, args } = await splitExport(t, [], 500);
  t.is((await cli(args, { env: { STOP_AT: 'm_100' } })).code, 4);
  const [name] = (await readdir(join(state, 'checkpoints'))).filter((n) => n.endsWith('.json'));
  const path = join(state, 'checkpoints', name!);
  const { addedByPlugins: _, ...older } = JSON.parse(await readFile(path, 'utf8')) as Json & { resumeAt: { index: number } };
  await writeFile(path, JSON.stringify(older) + '\n');
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  t.regex(resumed.log, /resuming acme-2026-11-23 from an earlier run's checkpoint/);
  t.like(JSON.parse(resumed.stdout) as Json, { itemsAddedByPlugins: 0, itemsDoneEarlier: older.resumeAt.index, balanced: true });
});
