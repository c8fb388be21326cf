// The Graph sink's folder deleted after its mailbox's last write while the run goes on: no later
// write is there to find it, so the sink looks once at the end (Sink.lostSinceWritten; the
// Graph SPEC, "A folder deleted after its mailbox's last write"). The stand-in deletes the folder
// at the mailbox's last create, before that create is answered (`afterCreates`): nothing races.
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { startGraphStandin, type GraphStandin } from './helpers/graph-standin.js';
import { startIdentityEndpoint } from './helpers/identity-endpoint.js';
import { checkpointsResuming, cli, readStatusLog, type CliResult } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const TENANT = '11111111-2222-3333-4444-555555555555';
const FOLDER = 'Inbox/Pivot';
/** The checks' request: a folder read by id (resolving `Inbox/Pivot` reads Inbox's child folders, not this). */
const FOLDER_READ = 'GET /mailFolders/{id}';

interface Scouted {
  archive: string;
  /** Mailbox -> the messages created in it by a run of the archive into an empty tenant. */
  creates: Map<string, number>;
}

/** The archive, and how many messages a run creates in each mailbox (a first run into a stand-in of its own). */
let scouted: Scouted;
let scoutDir: string;

test.before(async () => {
  scoutDir = await mkdtemp(join(tmpdir(), 'pivot-archive-test-'));
  const archive = join(scoutDir, 'export.zip');
  await generateSample(archive, { events: 200, seed: 47, users: 8 });
  const standin = await startGraphStandin({ tenant: TENANT, everyUser: true, latencyMs: 2 });
  const identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  try {
    const scout = await cli(['run', archive, '--sink', sinkOf(standin), '--all-domains', '--status-log', join(scoutDir, 'scout.jsonl'), '--rejects', join(scoutDir, 'rejects')], { env: identity.env });
    if (scout.code !== 0) throw new Error(`the scouting run failed: ${scout.stderr.slice(0, 2000)}`);
    const creates = new Map<string, number>();
    for (const line of (await readStatusLog(join(scoutDir, 'scout.jsonl'))).lines) {
      const mailbox = String(line.mailbox).toLowerCase();
      if (line.outcome === 'delivered') creates.set(mailbox, (creates.get(mailbox) ?? 0) + 1);
    }
    scouted = { archive, creates };
  } finally {
    await Promise.all([standin.close(), identity.close()]);
  }
});

test.after.always(() => rm(scoutDir, { recursive: true, force: true }));

function sinkOf(standin: GraphStandin, options: { folder?: string; extra?: string } = {}): string {
  return `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}&folder=${options.folder ?? FOLDER}${options.extra ?? ''}`;
}

interface Run {
  standin: GraphStandin;
  first: CliResult;
  /** The same run again with the same state dir. */
  again(): Promise<CliResult>;
  log: Awaited<ReturnType<typeof readStatusLog>>;
  /** `status --export`'s headline after the first run. */
  status: string;
  checkpoints: string[];
}

/** A run into a fresh stand-in, `atLastCreate` done to each mailbox of `touched` at its last create. */
async function runWith(t: ExecutionContext, touched: string[], atLastCreate: (standin: GraphStandin, mailbox: string) => void, options: { folder?: string; extra?: string } = {}): Promise<Run> {
  const { archive, creates } = scouted;
  const standin = await startGraphStandin({ tenant: TENANT, everyUser: true, latencyMs: 2 });
  const identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  t.teardown(() => Promise.all([standin.close(), identity.close()]));
  for (const mailbox of touched) standin.afterCreates(mailbox, creates.get(mailbox)!, () => atLastCreate(standin, mailbox));
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  const run = (log: string) => cli(['run', archive, '--sink', sinkOf(standin, options), '--all-domains', '--state-dir', state, '--status-log', join(dir, log), '--rejects', join(dir, 'rejects')], { env: identity.env });
  const first = await run('first.jsonl');
  const log = await readStatusLog(join(dir, 'first.jsonl'));
  const status = (await cli(['status', '--state-dir', state, '--export', String(log.summary.exportId)])).stdout.split('\n')[0]!;
  return { standin, first, again: () => run('again.jsonl'), log, status, checkpoints: await checkpointsResuming(state) };
}

/** Two mailboxes the run writes to: their folders go at their last create. */
function twoMailboxes(): string[] {
  const { creates } = scouted;
  const mailboxes = [...creates.keys()].sort();
  if (mailboxes.length < 3) throw new Error(`the sample reaches ${mailboxes.length} mailboxes: too few to leave some untouched`);
  return mailboxes.slice(0, 2);
}

/** The run found at its end what no write found: exit 1, storage lost (no checkpoint), INCOMPLETE; every write itself succeeded. */
function assertFailedAtTheEnd(t: ExecutionContext, r: Run, reason: RegExp, touched: string[]): void {
  t.log(`${r.first.log.split('\n').find((l) => l.includes('run stopped')) ?? '(no error line)'}; status: ${r.status}`);
  t.is(r.first.code, 1, r.first.stderr.slice(0, 3000));
  t.regex(r.first.stderr, reason);
  for (const mailbox of touched) t.true(r.first.stderr.includes(mailbox), `the reason names ${mailbox}`);
  t.is(r.log.summary.failed, 0, 'no write found it: the end of the run did');
  t.true(r.log.summary.storageLost, 'the summary says storage was lost');
  t.deepEqual(r.checkpoints, [], 'no checkpoint resumes past an item: the re-run reads the export from the start');
  t.regex(r.status, /INCOMPLETE/);
}

test.serial('graph: a folder deleted (moved into Deleted Items, its id kept) after its mailbox\'s last write fails the run at its end: exit 1, no checkpoint, status INCOMPLETE; the re-run delivers its items again into the folder made anew', async (t) => {
  t.timeout(180_000);
  const touched = twoMailboxes();
  const r = await runWith(t, touched, (standin, mailbox) => standin.deleteFolder(mailbox, FOLDER));
  assertFailedAtTheEnd(t, r, /2 folder\(s\) this run wrote to or found items in are no longer where it put them/, touched);
  t.regex(r.first.stderr, /Inbox\/Pivot was moved out of Inbox \(a deleted folder is moved into Deleted Items\)/);
  for (const mailbox of touched) t.is(r.standin.messagesIn(mailbox, 'deleteditems/Pivot').length, scouted.creates.get(mailbox)!, 'the folder went into Deleted Items with its items');

  const again = await r.again();
  t.is(again.code, 0, again.stderr.slice(0, 3000));
  for (const mailbox of touched) t.is(r.standin.messagesIn(mailbox, FOLDER).length, scouted.creates.get(mailbox)!, `${mailbox}: the folder made anew holds every item`);
});

test.serial('graph: a folder permanently deleted (404 after) after its mailbox\'s last write fails the run at its end: exit 1, no checkpoint, status INCOMPLETE', async (t) => {
  t.timeout(180_000);
  const touched = twoMailboxes();
  const r = await runWith(t, touched, (standin, mailbox) => standin.deleteFolder(mailbox, FOLDER, { permanently: true }));
  assertFailedAtTheEnd(t, r, /2 folder\(s\) this run wrote to or found items in are no longer where it put them/, touched);
  t.regex(r.first.stderr, /Inbox\/Pivot was deleted for good \(HTTP 404 ErrorItemNotFound/);
});

test.serial('graph: a folder above the one written to, deleted after the mailbox\'s last write (the folder written to keeps its parent), is found by walking up the path: exit 1, no checkpoint, status INCOMPLETE', async (t) => {
  t.timeout(180_000);
  const touched = twoMailboxes();
  const r = await runWith(t, touched, (standin, mailbox) => standin.deleteFolder(mailbox, 'Inbox/Outer'), { folder: 'Inbox/Outer/Pivot' });
  assertFailedAtTheEnd(t, r, /2 folder\(s\) this run wrote to or found items in are no longer where it put them/, touched);
  t.regex(r.first.stderr, /Inbox\/Outer was moved out of Inbox/);
});

test.serial('graph: a folder whose place cannot be confirmed at the end (Graph answers 503 past the retries) fails the run as well: exit 1, no checkpoint, status INCOMPLETE', async (t) => {
  t.timeout(180_000);
  const [mailbox] = twoMailboxes();
  // retries=1: the check's read and its one retry are answered 503.
  const r = await runWith(t, [mailbox!], (standin) => standin.inject(mailbox!, { status: 503, code: 'ServiceUnavailable' }, 2), { extra: '&retries=1&retryDelay=50' });
  assertFailedAtTheEnd(t, r, /whether 1 folder\(s\) this run wrote to or found items in are still in place could not be confirmed/, [mailbox!]);
  t.regex(r.first.stderr, /HTTP 503 ServiceUnavailable/);
});

test.serial('graph: folders left in place: exit 0, status COMPLETE, and the check read each folder once', async (t) => {
  t.timeout(180_000);
  const r = await runWith(t, [], () => undefined);
  t.is(r.first.code, 0, r.first.stderr.slice(0, 3000));
  t.regex(r.status, /: COMPLETE$/);
  t.is(r.standin.stats.byKind.get(FOLDER_READ), scouted.creates.size, 'one read of a folder per mailbox written to');
});
