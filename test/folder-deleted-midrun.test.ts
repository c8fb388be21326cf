// The destination folder deleted in the middle of a run (by an administrator, a mail client, a
// retention job), with what the run stored in it: the run must not end as if it held them, and
// the re-run must not resume from a checkpoint past them (src/sinks/SPEC.md: a write whose failure
// shows that what the sink stored earlier may be gone rejects as storage lost). The Graph sink's
// test of the same is at the end of test/e2e-graph.test.ts.
import test, { type ExecutionContext } from 'ava';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { generateSample } from '../src/sample/generate.js';
import { canonicalMailbox as validEmail } from '../src/formats/address/index.js';
import { mailboxFolderName } from '../src/sinks/maildir/index.js';
import { checkpointsResuming, cli, readStatusLog, type CliResult } from './helpers/cli.js';
import { ADMIN, ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot } from './helpers/dovecot.js';
import { gatePlugin, lastItemOf, untilReady } from './helpers/gate.js';
import { readMaildir } from './helpers/maildir.js';
import { withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

/** The run holds at this item until the test has deleted the folders; it deletes them once this many deliveries are recorded. */
const GATE_AT = 200;
const DELIVERED_BEFORE = 80;

/** `status`'s headline for an export all of whose items are archived (not INCOMPLETE, NOT COMPLETE or NOT PROVEN). */
const COMPLETE = /^(?!.*(INCOMPLETE|NOT COMPLETE|NOT PROVEN)).*\bCOMPLETE\b/;

type Line = Record<string, unknown>;

/** `mailbox messageId` of every pair the runs recorded (delivered, skipped or failed): what the store must hold in the end, once each. */
function recordedPairs(...logs: Line[][]): string[] {
  return [...new Set(logs.flat().filter((l) => l.outcome === 'delivered' || l.outcome === 'skipped' || l.outcome === 'failed').map((l) => `${String(l.mailbox)} ${String(l.messageId)}`))].sort();
}

function delivered(text: string): number {
  return (text.match(/"outcome":"delivered"/g) ?? []).length;
}

interface AcrossDeletion {
  first: CliResult;
  firstLog: Line[];
  /** `status`'s headline after the first run. */
  firstStatus: string;
  /** The checkpoints the first run left that resume past an item (none: the re-run reads the export from the start). */
  checkpoints: string[];
  second: CliResult;
  secondLog: Line[];
  /** After the re-run: the store's holdings as `mailbox messageId` (Maildir: the mailbox's folder name), `verify`'s result, `status`'s headline. */
  held: string[];
  verified: CliResult;
  status: string;
}

/**
 * A first run that finds its folders deleted after DELIVERED_BEFORE deliveries (`deleteFolders`,
 * while the run waits at its GATE_AT-th item), then a re-run with the same state dir (and the same
 * options, the gate open: a checkpoint the first run left is used), then `verify` and `status`.
 */
async function runAcrossDeletion(
  t: ExecutionContext,
  dir: string,
  commands: { run(extra: string[], log: string): Promise<CliResult>; verify(): Promise<CliResult>; held(): Promise<string[]> },
  deleteFolders: () => Promise<number>,
): Promise<AcrossDeletion> {
  const state = join(dir, 'state');
  const gate = join(dir, 'gate');
  const plugin = join(dir, 'gate.mjs');
  await writeFile(plugin, gatePlugin(GATE_AT, gate));
  let ended = false;
  const running = commands.run(['--plugin', plugin], 'first.jsonl').finally(() => (ended = true));
  await untilReady(async () => delivered(await readFile(join(dir, 'first.jsonl'), 'utf8').catch(() => '')) >= DELIVERED_BEFORE, () => ended, `${DELIVERED_BEFORE} deliveries`);
  t.true((await deleteFolders()) > 0, 'some folder was deleted');
  await writeFile(gate, '');
  const first = await running;
  const { lines: firstLog, summary } = await readStatusLog(join(dir, 'first.jsonl'));
  const headline = async () => (await cli(['status', '--state-dir', state, '--export', String(summary.exportId)])).stdout.split('\n')[0]!;
  const firstStatus = await headline();
  const checkpoints = await checkpointsResuming(state);
  const second = await commands.run(['--plugin', plugin], 'second.jsonl');
  const secondLog = (await readStatusLog(join(dir, 'second.jsonl'))).lines;
  const result = { first, firstLog, firstStatus, checkpoints, second, secondLog, held: await commands.held(), verified: await commands.verify(), status: await headline() };
  const failed = firstLog.filter((l) => l.outcome === 'failed');
  const counts = (log: Line[]) => ['delivered', 'skipped', 'failed'].map((o) => `${log.filter((l) => l.outcome === o).length} ${o}`).join(', ');
  t.log(`first run: exit ${first.code}, ${counts(firstLog)} (${[...new Set(failed.map((l) => String(l.detail).slice(0, 200)))].slice(0, 2).join(' | ')}); status: ${firstStatus}; checkpoints left: ${checkpoints.length}`);
  t.log(`second run: exit ${second.code}, ${counts(secondLog)}; held ${result.held.length} (${new Set(result.held).size} apart), recorded ${recordedPairs(firstLog, secondLog).length}; verify exit ${result.verified.code}; status: ${result.status}`);
  return result;
}

/** What every sink must show across the deletion: the first run not complete, no checkpoint left, the re-run complete with every item once, verify and status agreeing. */
function assertSound(t: ExecutionContext, r: AcrossDeletion, recorded: string[], lostReason: RegExp): void {
  t.is(r.first.code, 1, r.first.stderr);
  t.true(r.firstLog.some((l) => l.outcome === 'failed' && lostReason.test(String(l.detail))), 'a failure names the deleted folder');
  t.notRegex(r.firstStatus, COMPLETE, 'the first run is not complete');
  t.deepEqual(r.checkpoints, [], 'no checkpoint resumes past an item: the re-run reads the export from the start');
  t.is(r.second.code, 0, r.second.stderr);
  t.is(r.held.length, new Set(r.held).size, 'nothing twice');
  t.deepEqual([...r.held].sort(), recorded, 'the folders hold every item');
  t.is(r.verified.code, 0, r.verified.stdout.slice(0, 2000) + r.verified.stderr);
  t.regex(r.status, COMPLETE);
}

withServer('Dovecot (a folder deleted mid-run)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  // retries=0: the batch that loses its connection when Dovecot drops the session of a deleted folder has no second attempt to find it gone.
  for (const retries of [2, 0]) {
    test.serial(`imap (retries=${retries}): the folder deleted, or deleted and made again, by another client in the middle of a run fails the items that find it so as storage lost; no checkpoint is left, the re-run delivers every item again, verify finds every one and status says COMPLETE`, async (t) => {
      t.timeout(120_000);
      const dir = await tempDir(t);
      const archive = join(dir, 'export.zip');
      await generateSample(archive, { events: 400, seed: 41 });
      const users = readJsonEntriesIndependently(archive)['users.json'] as { email?: string | null }[];
      const mailboxes = [...new Set(users.flatMap((u) => (validEmail(u.email) ? [u.email!.toLowerCase()] : [])))];
      const dovecot = await startDovecot(mailboxes);
      t.teardown(() => removeDovecot(dovecot));
      const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
      const state = join(dir, 'state');
      // Few deliveries held: the run is still going when the folders go. (probe=: open() costs no failed login, 2 s.)
      const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Pivot&window=100&retries=${retries}&retryDelay=50&probe=${mailboxes[0]}`;
      const commands = {
        run: (extra: string[], log: string) => cli(['run', archive, '--all-domains', '--sink', sink, '--state-dir', state, '--status-log', join(dir, log), '--rejects', join(dir, 'rejects'), ...extra], { env }),
        verify: () => cli(['verify', '--state-dir', state, '--sink', sink, '--json'], { env }),
        held: async () => {
          const held: string[] = [];
          for (const mailbox of mailboxes) for (const m of await fetchFolder(dovecot.port, mailbox)) held.push(`${mailbox} ${m.messageId}`);
          return held;
        },
      };
      // Another client (a master login, as an administrator's tool would) deletes INBOX/Pivot, with
      // what it holds, in every mailbox that has it; in every other such mailbox it then creates it again.
      const ways: string[] = [];
      const deleteFolders = async () => {
        for (const mailbox of mailboxes) {
          const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD } });
          await client.connect();
          try {
            if (!(await client.list()).some((m) => m.path === 'INBOX/Pivot')) continue;
            // Dovecot refuses a DELETE that mail came into meanwhile (the run's deliveries before the gate): asked again, as an administrator would.
            for (let tries = 1; ; tries++) {
              try {
                await client.mailboxDelete('INBOX/Pivot');
                break;
              } catch (err) {
                if (tries === 50 || !/added to mailbox during deletion/.test(String((err as { responseText?: string }).responseText))) throw err;
                await new Promise((r) => setTimeout(r, 100));
              }
            }
            if (ways.length % 2 === 1) await client.mailboxCreate('INBOX/Pivot');
            ways.push(`${mailbox}: ${ways.length % 2 === 1 ? 'deleted and made again' : 'deleted'}`);
          } finally {
            await client.logout();
          }
        }
        return ways.length;
      };
      const r = await runAcrossDeletion(t, dir, commands, deleteFolders);
      t.log(ways.join('; '));
      assertSound(t, r, recordedPairs(r.firstLog, r.secondLog), /the folder INBOX\/Pivot was deleted during the run/);
      // A folder made again is seen too, by its UIDVALIDITY.
      t.true(r.firstLog.some((l) => l.outcome === 'failed' && /deleted during the run and made again \(UIDVALIDITY/.test(String(l.detail))), 'a failure names the folder made again');
    });
  }
});

test.serial('maildir: folders removed in the middle of a run (the folder, the whole mailbox, or the folder removed and made again by someone else) fail the items that find them so as storage lost; no checkpoint is left, the re-run delivers every item again, verify finds every one and status says COMPLETE', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 43 });
  const root = join(dir, 'mail');
  const state = join(dir, 'state');
  const sink = `maildir:${root}`;
  const commands = {
    // Few deliveries held at once: the run is still going when the folders go.
    run: (extra: string[], log: string) => cli(['run', archive, '--all-domains', '--sink', `${sink}?concurrency=50`, '--state-dir', state, '--status-log', join(dir, log), '--rejects', join(dir, 'rejects'), ...extra]),
    verify: () => cli(['verify', '--state-dir', state, '--sink', sink, '--json']),
    held: async () => (await readMaildir(root)).map((m) => `${m.mailbox} ${String(m.parsed.messageId)}`),
  };
  const ways: string[] = [];
  const deleteFolders = async () => {
    const homes = (await readdir(root)).filter((name) => !name.startsWith('.')).sort();
    for (const [i, home] of homes.entries()) {
      const folder = join(root, home, '.INBOX.Pivot');
      const way = i % 3;
      ways.push(`${home}: ${['folder removed', 'mailbox removed', 'folder removed and made again'][way]}`);
      // rm -rf of the Pivot folder; of the whole mailbox; or of the folder, then an empty one made in its place (as Dovecot makes one a client creates).
      // Moved aside first (one atomic step, as rm -rf appears to the sink), then removed: the run still writes into it, so a plain rm -rf can meet a file made under it (ENOTEMPTY).
      const aside = join(dir, `removed-${i}`);
      await rename(way === 1 ? join(root, home) : folder, aside);
      await rm(aside, { recursive: true, force: true, maxRetries: 5 });
      if (way === 2) {
        for (const sub of ['cur', 'new', 'tmp']) await mkdir(join(folder, sub), { recursive: true });
        await writeFile(join(folder, 'maildirfolder'), '');
      }
    }
    return homes.length;
  };
  const r = await runAcrossDeletion(t, dir, commands, deleteFolders);
  t.log(ways.join('; '));
  const recorded = recordedPairs(r.firstLog, r.secondLog).map((p) => {
    const [mailbox, messageId] = p.split(' ');
    return `${mailboxFolderName(mailbox!)} ${messageId}`;
  });
  assertSound(t, r, recorded.sort(), /was removed during the run/);
  // A folder made again by someone else is seen too (by its inode and birth time): its items were stored in the one removed.
  const replaced = ways.filter((w) => w.endsWith('made again')).map((w) => w.split(':')[0]);
  t.true(r.firstLog.some((l) => l.outcome === 'failed' && /was removed during the run/.test(String(l.detail)) && replaced.includes(mailboxFolderName(String(l.mailbox)))), 'a failure names a folder made again');
});

test.serial('maildir: only the tmp/ of folders removed in the middle of a run (a cleaner took the empty directories; cur/ and every message stay) is no folder removed: tmp/ is made again, the run delivers everything, exit 0', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 44 });
  const root = join(dir, 'mail');
  const gate = join(dir, 'gate');
  const plugin = join(dir, 'gate.mjs');
  await writeFile(plugin, gatePlugin(GATE_AT, gate));
  let ended = false;
  const running = cli(['run', archive, '--all-domains', '--sink', `maildir:${root}?concurrency=50`, '--status-log', join(dir, 'run.jsonl'), '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--plugin', plugin, '--json']).finally(() => (ended = true));
  await untilReady(async () => delivered(await readFile(join(dir, 'run.jsonl'), 'utf8').catch(() => '')) >= DELIVERED_BEFORE, () => ended, `${DELIVERED_BEFORE} deliveries`);
  let removed = 0;
  for (const home of (await readdir(root)).filter((name) => !name.startsWith('.'))) {
    // Empty between groups (the run waits at the gate): removed as a directory, as `rmdir` would.
    await rm(join(root, home, '.INBOX.Pivot', 'tmp'), { recursive: true, force: true });
    removed++;
  }
  t.true(removed > 0);
  await writeFile(gate, '');
  const run = await running;
  t.is(run.code, 0, run.stderr.slice(0, 3000));
  const summary = JSON.parse(run.stdout) as { delivered: number; failed: number; itemsAvailableForImport: number };
  t.is(summary.failed, 0);
  t.is(summary.delivered, summary.itemsAvailableForImport);
  t.notRegex(run.stderr, /removed during the run/);
});

test.serial('maildir: folders removed after their mailbox\'s last write, while the run still goes on, fail the run at its end as storage lost (exit 1, no checkpoint, status not complete, verify exit 6), and the day before\'s export with messages there is no longer complete either; the re-runs deliver them again, verify finds every one', async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  // Many mailboxes, few events each: many get nothing near the end.
  await generateSample(archive, { events: 300, seed: 45, users: 60 });
  const common = ['--all-domains', '--rejects', join(dir, 'rejects'), '--max-rejected', '100%'];
  // Held at the last item, the run records every other delivery (`before` of them).
  const last = await lastItemOf(dir, archive, common);
  const { before } = last;
  const lastMailboxes = new Set([...last.lastMailboxes].map(mailboxFolderName));
  const gate = join(dir, 'gate');
  const plugin = join(dir, 'gate.mjs');
  await writeFile(plugin, gatePlugin(last.calls, gate));
  const root = join(dir, 'mail');
  const state = join(dir, 'state');
  const run = (log: string) => cli(['run', archive, '--sink', `maildir:${root}`, '--state-dir', state, '--status-log', join(dir, log), '--plugin', plugin, ...common]);
  // The day before's export, delivered whole into the same mailboxes: the folders removed take its messages too.
  const dayBefore = join(dir, 'day-before.zip');
  const { exportId: dayBeforeId } = await generateSample(dayBefore, { events: 300, seed: 46, users: 60, day: '2026-11-20' });
  const runDayBefore = (log: string) => cli(['run', dayBefore, '--sink', `maildir:${root}`, '--state-dir', state, '--status-log', join(dir, log), ...common]);
  const dayBeforeFirst = await runDayBefore('day-before.jsonl');
  t.is(dayBeforeFirst.code, 0, dayBeforeFirst.stderr.slice(0, 2000));
  t.regex((await cli(['status', '--state-dir', state, '--export', dayBeforeId])).stdout.split('\n')[0]!, COMPLETE);
  let ended = false;
  const running = run('first.jsonl').finally(() => (ended = true));
  await untilReady(async () => delivered(await readFile(join(dir, 'first.jsonl'), 'utf8').catch(() => '')) >= before, () => ended, `${before} deliveries`);
  const removed = (await readdir(root)).filter((home) => !home.startsWith('.') && !lastMailboxes.has(home));
  t.true(removed.length > 0);
  for (const home of removed) await rm(join(root, home, '.INBOX.Pivot'), { recursive: true, force: true });
  await writeFile(gate, '');
  const first = await running;
  t.is(first.code, 1, first.stderr.slice(0, 2000));
  t.regex(first.stderr, /removed during the run, after their last write/);
  const { lines: firstLog, summary: firstSummary } = await readStatusLog(join(dir, 'first.jsonl'));
  t.false(firstLog.some((l) => l.outcome === 'failed'), 'no write found the removal: the end of the run did');
  // The counters still add up (every item settled): the error says what is wrong, not "counters add up NO" (helper-117).
  t.like(firstSummary, { storageLost: true, balanced: true, failed: 0 });
  t.deepEqual([...(firstSummary.mailboxesLost as string[])].map(mailboxFolderName).sort(), [...removed].sort(), 'the summary names the mailboxes whose folder is gone');
  // The day before's export had messages in those folders: no longer complete, for status and verify (was: COMPLETE, verify exit 0; only the export whose run looked counted the loss).
  const dayBeforeIn = (await readStatusLog(join(dir, 'day-before.jsonl'))).lines.filter((l) => l.outcome === 'delivered' && removed.includes(mailboxFolderName(String(l.mailbox))));
  t.true(dayBeforeIn.length > 0);
  const dayBeforeStatus = await cli(['status', '--state-dir', state, '--export', dayBeforeId, '--json']);
  t.is(dayBeforeStatus.code, 1, dayBeforeStatus.stdout.slice(0, 2000));
  t.like((JSON.parse(dayBeforeStatus.stdout) as { account: { pairs: unknown } }).account.pairs, { failed: dayBeforeIn.length, lostFromStore: dayBeforeIn.length });
  const dayBeforeVerify = await cli(['verify', '--state-dir', state, '--export', dayBeforeId]);
  t.is(dayBeforeVerify.code, 1, dayBeforeVerify.stdout.slice(0, 2000) + dayBeforeVerify.stderr);
  t.deepEqual(await checkpointsResuming(state), [], 'no checkpoint resumes past an item: the re-run reads the export from the start');
  const exportId = String(firstLog.find((l) => l.exportId)!.exportId);
  t.notRegex((await cli(['status', '--state-dir', state, '--export', exportId])).stdout.split('\n')[0]!, COMPLETE);
  t.is((await cli(['verify', '--state-dir', state, '--sink', `maildir:${root}`])).code, 6, 'verify finds the messages gone');
  const second = await run('second.jsonl');
  t.is(second.code, 0, second.stderr.slice(0, 2000));
  const secondLog = (await readStatusLog(join(dir, 'second.jsonl'))).lines;
  t.true(secondLog.filter((l) => l.outcome === 'delivered').length >= removed.length, 'the removed folders\' items delivered again');
  // The day before's export is run again too: its messages the folders lost are delivered again, the rest found there.
  const dayBeforeAgain = await runDayBefore('day-before-again.jsonl');
  t.is(dayBeforeAgain.code, 0, dayBeforeAgain.stderr.slice(0, 2000));
  t.is((await readStatusLog(join(dir, 'day-before-again.jsonl'))).lines.filter((l) => l.outcome === 'delivered').length, dayBeforeIn.length);
  t.regex((await cli(['status', '--state-dir', state, '--export', dayBeforeId])).stdout.split('\n')[0]!, COMPLETE);
  const verified = await cli(['verify', '--state-dir', state, '--sink', `maildir:${root}`]);
  t.is(verified.code, 0, verified.stdout.slice(0, 2000) + verified.stderr);
  t.regex((await cli(['status', '--state-dir', state, '--export', exportId])).stdout.split('\n')[0]!, COMPLETE);
});
