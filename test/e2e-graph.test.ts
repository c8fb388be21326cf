// The command line end to end into the Graph stand-in (test/helpers/graph-standin.ts; no Microsoft
// 365 tenant can be reached from here): a run, a re-run that creates nothing, and verify reading
// the messages back, in both modes.
import test from 'ava';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { startGraphStandin } from './helpers/graph-standin.js';
import { startIdentityEndpoint } from './helpers/identity-endpoint.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const TENANT = '11111111-2222-3333-4444-555555555555';

for (const mode of ['json', 'importMime'] as const) {
  test(`graph ${mode}: run delivers into every mailbox's Inbox/Pivot, no drafts; a re-run creates nothing; verify reads them back intact`, async (t) => {
    t.timeout(300_000);
    const standin = await startGraphStandin({ tenant: TENANT, everyUser: true, latencyMs: 2 });
    const identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite', 'Mail-Advanced.ReadWrite.All'] });
    t.teardown(() => Promise.all([standin.close(), identity.close()]));
    const dir = await tempDir(t);
    const archive = join(dir, 'export.zip');
    await generateSample(archive, { events: 300, seed: 12 });
    const state = join(dir, 'state');
    const sink = `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}&mode=${mode}`;
    const run = (log: string) => cli(['run', archive, '--sink', sink, '--domain', 'acme.example', '--state-dir', state, '--status-log', join(dir, log), '--rejects', join(dir, 'rejects')], { env: identity.env });

    const first = await run('first.jsonl');
    t.is(first.code, 0, first.stderr);
    // Hundreds of requests and waits listen to the stop signal at once: no Node warning line in the log.
    t.notRegex(first.stderr, /Warning/);
    const summary = (await readStatusLog(join(dir, 'first.jsonl'))).summary;
    t.true(summary.delivered > 100, `delivered ${summary.delivered}`);
    const mailboxes = [...new Set((await readStatusLog(join(dir, 'first.jsonl'))).lines.filter((l) => l.outcome === 'delivered').map((l) => String(l.mailbox)))];
    const stored = mailboxes.flatMap((m) => standin.messagesIn(m, 'Inbox/Pivot'));
    t.is(stored.length, summary.delivered);
    t.is(stored.filter((m) => m.isDraft).length, 0, 'no drafts');
    t.is(new Set(stored.map((m) => `${m.internetMessageId} ${m.sentDateTime} ${m.folderId}`)).size, stored.length, 'nothing twice');
    const creates = [...standin.stats.byKind].filter(([k]) => /messages$|importMime$/.test(k) && k.startsWith('POST')).reduce((n, [, v]) => n + v, 0);

    const again = await run('again.jsonl');
    t.is(again.code, 0, again.stderr);
    const second = (await readStatusLog(join(dir, 'again.jsonl'))).summary;
    t.is(second.delivered, 0);
    t.is(second.skipped, summary.delivered);
    t.is([...standin.stats.byKind].filter(([k]) => /messages$|importMime$/.test(k) && k.startsWith('POST')).reduce((n, [, v]) => n + v, 0), creates, 'no create on the re-run');
    t.is(standin.stats.overConcurrency, 0);

    const verified = await cli(['verify', '--state-dir', state, '--sink', sink, '--json'], { env: identity.env });
    t.is(verified.code, 0, verified.stdout + verified.stderr);
    const result = JSON.parse(verified.stdout) as { store: { intact: number; missing: unknown[]; altered: unknown[] } };
    t.is(result.store.intact, summary.delivered);
    // One message changed behind the tool's back is seen.
    const victim = stored[0]!;
    if (mode === 'json') victim.subject += ' (edited)';
    else victim.mime = Buffer.concat([victim.mime!, Buffer.from('x')]);
    const after = await cli(['verify', '--state-dir', state, '--sink', sink, '--json'], { env: identity.env });
    t.is(after.code, 6, after.stdout + after.stderr);
    t.is((JSON.parse(after.stdout) as { store: { altered: unknown[] } }).store.altered.length, 1);
  });
}

test('graph: when no token can be had any more in the middle of a run, the sink stops delivering at once: the rest fails with one reason, exit 1, and a re-run completes it', async (t) => {
  t.timeout(300_000);
  // 200 ms a request: the run lasts about 10 s, whatever else the machine runs.
  const standin = await startGraphStandin({ tenant: TENANT, everyUser: true, latencyMs: 200 });
  // Tokens that live 4 s (renewed at half their life): the endpoint's end is seen within seconds, long before the run ends.
  const identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'], lifetime: 4 });
  t.teardown(() => Promise.all([standin.close(), identity.close().catch(() => undefined)]));
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 1500, seed: 13 });
  const sink = `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}&retries=1&retryDelay=50`;
  const args = (log: string) => ['run', archive, '--sink', sink, '--domain', 'acme.example', '--status-log', join(dir, log), '--rejects', join(dir, 'rejects')];
  const running = cli(args('first.jsonl'), { env: identity.env });
  const stored = () => [...standin.stats.byKind].filter(([k]) => k === 'POST /mailFolders/{id}/messages').reduce((n, [, v]) => n + v, 0);
  while (stored() < 100) await new Promise((r) => setTimeout(r, 50));
  await identity.close();
  const first = await running;
  t.is(first.code, 1, first.stderr);
  const log = await readStatusLog(join(dir, 'first.jsonl'));
  t.true(log.summary.delivered >= 100, `delivered ${log.summary.delivered}`);
  t.true(log.summary.failed > 0, `failed ${log.summary.failed}`);
  const reasons = new Set(log.lines.filter((l) => l.outcome === 'failed').map((l) => String(l.detail ?? l.error ?? l.reason)));
  t.log([...reasons].slice(0, 3));
  t.true([...reasons].some((r) => /could no longer be had/.test(r)), [...reasons].join('\n'));
  // With tokens again, a re-run delivers what failed and nothing twice.
  const again = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  t.teardown(() => again.close());
  const second = await cli(args('second.jsonl'), { env: again.env });
  t.is(second.code, 0, second.stderr);
  const summary = (await readStatusLog(join(dir, 'second.jsonl'))).summary;
  t.is(summary.delivered, log.summary.failed);
  t.is(summary.skipped, log.summary.delivered);
});

test('graph: a folder deleted in the middle of a run fails its items as storage lost and drops the checkpoint: the re-run reads the export from the start and the new folder holds every item', async (t) => {
  t.timeout(300_000);
  // 100 ms a request while the folder is deleted (the run is still going), 2 ms after it (the stand-in reads it per request).
  const options = { tenant: TENANT, everyUser: true, latencyMs: 100 };
  const standin = await startGraphStandin(options);
  const identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  t.teardown(() => Promise.all([standin.close(), identity.close()]));
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 1500, seed: 13 });
  const state = join(dir, 'state');
  const sink = `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}&folder=Inbox/R5&retryDelay=50`;
  const args = (log: string) => ['run', archive, '--sink', sink, '--domain', 'acme.example', '--state-dir', state, '--status-log', join(dir, log), '--rejects', join(dir, 'rejects')];
  const running = cli(args('first.jsonl'), { env: identity.env });
  const creates = () => [...standin.stats.byKind].filter(([k]) => k.startsWith('POST') && /messages$|\$batch$/.test(k)).reduce((n, [, v]) => n + v, 0);
  let ended = false;
  void running.then(() => (ended = true));
  while (creates() < 40 && !ended) await new Promise((r) => setTimeout(r, 50));
  // (The message is read only when it ended: awaiting the run here would delete the folder after it.)
  if (ended) t.fail(`the run ended before the folder was deleted: ${(await running).stderr.slice(-600)}`);
  // Someone deletes the folder R5 in every mailbox that has it, with what it holds.
  const touched = new Set<string>();
  for (const address of standin.users()) {
    const { folders, messages } = standin.mailbox(address);
    for (const [id, folder] of folders) {
      if (folder.displayName !== 'R5') continue;
      folders.delete(id);
      for (const [messageId, m] of messages) if (m.folderId === id) messages.delete(messageId);
      touched.add(address);
    }
  }
  t.true(touched.size > 0);
  const first = await running;
  options.latencyMs = 2;
  t.is(first.code, 1, first.stderr);
  const log = await readStatusLog(join(dir, 'first.jsonl'));
  t.true(log.lines.some((l) => l.outcome === 'failed' && /was deleted during the run/.test(String(l.detail))), 'the reason names the deleted folder');

  const second = await cli(args('second.jsonl'), { env: identity.env });
  t.is(second.code, 0, second.stderr);
  const again = await readStatusLog(join(dir, 'second.jsonl'));
  const pairs = new Set([...log.lines, ...again.lines].filter((l) => l.outcome === 'delivered' || l.outcome === 'skipped' || l.outcome === 'failed').map((l) => `${l.mailbox} ${l.messageId}`));
  const held = [...new Set([...pairs].map((p) => p.split(' ')[0]!))].flatMap((m) => standin.messagesIn(m, 'Inbox/R5').map((x) => `${m} ${x.internetMessageId}`));
  t.is(held.length, new Set(held).size, 'nothing twice');
  t.deepEqual([...held].sort(), [...pairs].sort(), 'the folder made anew holds every item');
  const verified = await cli(['verify', '--state-dir', state, '--sink', sink, '--json'], { env: identity.env });
  t.is(verified.code, 0, verified.stdout + verified.stderr);
  const status = await cli(['status', '--state-dir', state, '--export', String(again.summary.exportId)]);
  t.regex(status.stdout.split('\n')[0]!, /: COMPLETE$/, status.stdout.slice(0, 600));
});
