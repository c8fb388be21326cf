// Review of 1e43f17 (mailboxesLost): an end-of-run look that a stop signal cut short (LOOK_STOPPED)
// names no mailbox, and the run drops its checkpoint (with it the folders it would look at). The
// next run of that export reads from the start with no folder to look at: it makes the deleted
// folder anew and exits 0. Nothing ever names the mailbox, so the day before's export, whose
// messages went with the folder, stays COMPLETE in status and verify exits 0, while
// verify --sink finds its messages missing (exit 6). Green while lost. Fixed: the stopped run keeps
// a checkpoint that resumes nothing but holds the folders (Checkpoint.finish, keepFoldersOnly).
import test from 'ava';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { type AddressInfo, connect, createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ImapFlow } from 'imapflow';
import { generateSample } from '../src/sample/generate.js';
import { canonicalMailbox } from '../src/formats/address/index.js';
import { cli, readStatusLog, startCli } from './helpers/cli.js';
import { ADMIN, ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, removeDovecot, startDovecot } from './helpers/dovecot.js';
import { gatePlugin, lastItemOf, untilReady } from './helpers/gate.js';
import { withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
const FOLDER = 'INBOX/Pivot';
const COMPLETE = /^(?!.*(INCOMPLETE|NOT COMPLETE|NOT PROVEN)).*\bCOMPLETE\b/;

async function deleteFolder(port: number, mailbox: string): Promise<boolean> {
  const client = new ImapFlow({ host: '127.0.0.1', port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD } });
  await client.connect();
  try {
    if (!(await client.list()).some((m) => m.path === FOLDER)) return false;
    await client.mailboxDelete(FOLDER);
    return true;
  } finally {
    await client.logout();
  }
}

/** A relay to Dovecot holding each session's first SELECT after an APPEND (the look in the session that wrote), the first `limit` of them. */
async function selectHoldingRelay(port: number, limit: number) {
  let left = limit;
  let held!: () => void;
  const holding = new Promise<void>((resolve) => (held = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    upstream.pipe(client);
    let appended = false;
    let sent = Promise.resolve();
    client.on('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      const hold = appended && / SELECT /.test(text) && left > 0;
      if (hold) {
        appended = false;
        left--;
        held();
        sent = sent.then(() => released);
      }
      if (/ APPEND /.test(text)) appended = true;
      sent = sent.then(() => void upstream.write(chunk));
    });
    for (const [a, b] of [[client, upstream], [upstream, client]] as const) {
      a.on('error', () => undefined);
      a.on('close', () => b.destroy());
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, holding, release, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

function mailboxesOf(archive: string): string[] {
  const users = readJsonEntriesIndependently(archive)['users.json'] as { email?: string | null }[];
  return users.flatMap((u) => (canonicalMailbox(u.email) ? [u.email!.toLowerCase()] : []));
}

withServer('Dovecot (review: a look cut short by a stop, another export)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  // test.failing: the fault this proves is on the current code (passes once fixed: drop .failing).
  test.serial('review: a folder deleted after its last write whose look a stop cut short: the checkpoint keeps the folders (the next run reads from the start), so the re-run finds them gone (exit 1) and the day before\'s export with messages there is not COMPLETE; the run after delivers (was: re-run exit 0, the day before COMPLETE, verify 0)', async (t) => {
    t.timeout(180_000);
    const dir = await tempDir(t);
    const archive = join(dir, 'export.zip');
    await generateSample(archive, { events: 60, seed: 46, users: 6, edgeCases: false });
    const dayBefore = join(dir, 'day-before.zip');
    const { exportId: dayBeforeId } = await generateSample(dayBefore, { events: 60, seed: 46, users: 6, edgeCases: false, day: '2026-11-20' });
    const mailboxes = [...new Set([...mailboxesOf(archive), ...mailboxesOf(dayBefore)])];
    const common = ['--all-domains', '--rejects', join(dir, 'rejects'), '--max-rejected', '100%'];
    const { calls, lastMailboxes, before } = await lastItemOf(dir, archive, common);
    const deliveries = before + lastMailboxes.size;
    const gate = join(dir, 'gate');
    const plugin = join(dir, 'gate.mjs');
    await writeFile(plugin, gatePlugin(calls, gate));
    const dovecot = await startDovecot(mailboxes);
    t.teardown(() => removeDovecot(dovecot));
    const relay = await selectHoldingRelay(dovecot.port, 1);
    t.teardown(() => relay.close());
    const state = join(dir, 'state');
    const checkpoints = () => readdir(join(state, 'checkpoints')).catch(() => []);
    const sink = (port: number) => `imap://archiver@127.0.0.1:${port}/?tls=none&folder=${FOLDER}&probe=${mailboxes[0]}`;

    // The day before's export, delivered whole: COMPLETE.
    const first = await cli(['run', dayBefore, '--sink', sink(dovecot.port), '--state-dir', state, '--status-log', join(dir, 'day-before.jsonl'), ...common], { env });
    t.is(first.code, 0, first.stderr.slice(0, 2000));
    t.regex((await cli(['status', '--state-dir', state, '--export', dayBeforeId])).stdout.split('\n')[0]!, COMPLETE);
    const dayBeforeDelivered = (await readStatusLog(join(dir, 'day-before.jsonl'))).lines.filter((l) => l.outcome === 'delivered');

    // Today's run: every delivery settles, its look is held; the folders are deleted then; a stop cuts the look short.
    const { child, exited } = startCli(['run', archive, '--sink', sink(relay.port), '--state-dir', state, '--status-log', join(dir, 'first.jsonl'), '--plugin', plugin, ...common], { env });
    let ended = false;
    void exited.then(() => (ended = true));
    const settled = async () => (await readFile(join(dir, 'first.jsonl'), 'utf8').catch(() => '')).match(/"outcome":"(delivered|skipped)"/g)?.length ?? 0;
    await untilReady(async () => (await settled()) >= before, () => ended, `${before} deliveries`);
    await delay(1_100);
    await writeFile(gate, '');
    await untilReady(async () => (await settled()) >= deliveries && (await checkpoints()).length > 0, () => ended, `${deliveries} deliveries and a checkpoint`);
    await Promise.race([relay.holding, exited.then(() => Promise.reject(new Error('the run ended without a look in a session that wrote')))]);
    const deleted: string[] = [];
    for (const m of mailboxes) if (await deleteFolder(dovecot.port, m)) deleted.push(m);
    child.kill('SIGTERM');
    t.is(await exited, 4);
    relay.release();
    const { summary } = await readStatusLog(join(dir, 'first.jsonl'));
    t.log(`stopped run: lookStopped ${String(summary.lookStopped)}, storageLost ${String(summary.storageLost)}, mailboxesLost ${JSON.stringify(summary.mailboxesLost)}; checkpoints left ${(await checkpoints()).length}; folders deleted in ${deleted.length} mailboxes`);
    const lostDayBefore = dayBeforeDelivered.filter((l) => deleted.includes(String(l.mailbox).toLowerCase())).length;
    t.true(lostDayBefore > 0, 'the day before\'s export had messages in the folders deleted');

    // Today's export again, into the same sink (the relay's address, released): reads from the start and looks at the folders the stopped run kept.
    const again = await cli(['run', archive, '--sink', sink(relay.port), '--state-dir', state, '--status-log', join(dir, 'again.jsonl'), ...common], { env });
    const { summary: second } = await readStatusLog(join(dir, 'again.jsonl'));
    t.log(`re-run: exit ${again.code}, delivered ${String(second.delivered)}, skipped ${String(second.skipped)}, storageLost ${String(second.storageLost)}, mailboxesLost ${JSON.stringify(second.mailboxesLost)}`);

    const status = await cli(['status', '--state-dir', state, '--export', dayBeforeId]);
    const verified = await cli(['verify', '--state-dir', state, '--export', dayBeforeId]);
    const verifiedSink = await cli(['verify', '--state-dir', state, '--export', dayBeforeId, '--sink', sink(dovecot.port)], { env });
    t.log(`day before's export (${lostDayBefore} of its messages were in the folders deleted): status exit ${status.code}: ${status.stdout.split('\n')[0]}; verify exit ${verified.code}; verify --sink exit ${verifiedSink.code}`);
    t.is(verifiedSink.code, 6, 'its messages are gone from the store');
    // What the ledger alone says must not be green while they are gone.
    t.not(status.code, 0, 'status --export of the day before\'s export: COMPLETE while its messages are gone');
    t.not(verified.code, 0, 'verify of the day before\'s export: exit 0 while its messages are gone');
    // The re-run found the folders gone (exit 1, no checkpoint): the next run makes them anew and delivers today's export whole.
    t.is(again.code, 1, again.stderr.slice(0, 2000));
    const third = await cli(['run', archive, '--sink', sink(relay.port), '--state-dir', state, ...common], { env });
    t.is(third.code, 0, third.stderr.slice(0, 2000));
  });
});
