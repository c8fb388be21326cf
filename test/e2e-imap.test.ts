import test, { type ExecutionContext } from 'ava';
import { simpleParser } from 'mailparser';
import { spawn } from 'node:child_process';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { canonicalMailbox as validEmail } from '../src/formats/address/index.js';
import { BIN, cli, readStatusLog, REPO_ROOT } from './helpers/cli.js';
import { ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { startAzurite } from './helpers/azurite.js';
import { withServer } from './helpers/sink-conformance.js';
import { expectedPairs, type ReferenceConversations } from './helpers/reference.js';
import { gatePlugin } from './helpers/gate.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };

interface Export {
  archive: string;
  mailboxes: string[];
  expected: string[];
}

async function makeExport(dir: string, events: number, seed: number): Promise<Export> {
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events, seed, messageFiles: 2 });
  const entries = readJsonEntriesIndependently(archive);
  const users = entries['users.json'] as { id: string; email?: string | null }[];
  const files = Object.keys(entries).filter((n) => n.startsWith('messages/')).sort().map((n) => entries[n] as unknown[]);
  const mailboxes = [...new Set(users.flatMap((u) => (validEmail(u.email) ? [u.email!.toLowerCase()] : [])))];
  const expected = expectedPairs(users, entries['conversations.json'] as ReferenceConversations, files, { excluded: new Set(['edge_oversize']) });
  return { archive, mailboxes, expected };
}

/** Every (mailbox, item) pair the server holds, read back over IMAP and parsed by mailparser. */
async function readBack(dovecot: Dovecot, mailboxes: string[]): Promise<{ pairs: string[]; messages: { mailbox: string; internalDate: Date; seen: boolean; date: Date }[] }> {
  const found: { mailbox: string; itemId: string; internalDate: Date; seen: boolean; date: Date }[] = [];
  for (const mailbox of mailboxes) {
    for (const m of await fetchFolder(dovecot.port, mailbox)) {
      const parsed = await simpleParser(m.source);
      found.push({ mailbox, itemId: String(parsed.headers.get('x-pivot-item-id')), internalDate: m.internalDate, seen: m.flags.has('\\Seen'), date: parsed.date! });
    }
  }
  return { pairs: pairs(found), messages: found };
}

/** A generated export and a Dovecot that knows its mailboxes, removed when the test ends. */
async function exportAndServer(t: ExecutionContext, events: number, seed: number): Promise<{ dir: string; ex: Export; dovecot: Dovecot }> {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const ex = await makeExport(dir, events, seed);
  const dovecot = await startDovecot(ex.mailboxes);
  t.teardown(() => removeDovecot(dovecot));
  return { dir, ex, dovecot };
}

withServer('Dovecot (IMAP end to end)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test('archive -> IMAP: every mailbox holds exactly its items, once, as seen, INTERNALDATE = sentAt; a re-run appends nothing', async (t) => {
    const { dir, ex, dovecot } = await exportAndServer(t, 600, 21);
    const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Pivot`;
    const status = join(dir, 'status.jsonl');
    const first = await cli(['run', ex.archive, '--sink', sink, '--status-log', status, '--rejects', join(dir, 'rejects')], { env });
    t.is(first.code, 0, first.stderr);
    const back = await readBack(dovecot, ex.mailboxes);
    t.deepEqual(back.pairs, ex.expected);
    t.is(new Set(back.pairs).size, back.pairs.length);
    t.true(back.messages.every((m) => m.seen));
    t.true(back.messages.every((m) => m.internalDate.getTime() === m.date.getTime()));
    t.is((await readStatusLog(status)).summary.delivered, ex.expected.length);

    const again = await cli(['run', ex.archive, '--sink', sink, '--status-log', status, '--rejects', join(dir, 'rejects')], { env });
    t.is(again.code, 0, again.stderr);
    const summary = (await readStatusLog(status)).summary;
    t.deepEqual([summary.delivered, summary.skipped], [0, ex.expected.length]);
    t.is((await readBack(dovecot, ex.mailboxes)).pairs.length, ex.expected.length);
  });

  test('TLS: imaps:// (implicit, the default) and tls=starttls deliver with the certificate verified; an untrusted certificate stops the run before any delivery, loudly', async (t) => {
    const { dir, ex, dovecot } = await exportAndServer(t, 200, 23);
    // The test server's certificate is self-signed: trusted through Node's NODE_EXTRA_CA_CERTS.
    const trusted = { ...env, NODE_EXTRA_CA_CERTS: dovecot.certFile };
    const args = (sink: string, log: string) => ['run', ex.archive, '--sink', sink, '--status-log', join(dir, log), '--rejects', join(dir, 'rejects')];
    // Was exit 1 with every item failed; the sink's open() now finds it: E_SINK_UNAVAILABLE, exit 2.
    const untrusted = await cli(args(`imaps://archiver@127.0.0.1:${dovecot.tlsPort}/?folder=INBOX/Pivot`, 'untrusted.jsonl'), { env });
    t.is(untrusted.code, 2, untrusted.stderr);
    t.regex(untrusted.log, /E_SINK_UNAVAILABLE: .*(self[- ]signed|certificate)/i);
    t.false((await readFile(join(dir, 'untrusted.jsonl'), 'utf8').catch(() => '')).includes('"outcome"'));
    t.is((await readBack(dovecot, ex.mailboxes)).pairs.length, 0);

    const implicit = await cli(args(`imaps://archiver@127.0.0.1:${dovecot.tlsPort}/?folder=INBOX/Pivot`, 'implicit.jsonl'), { env: trusted });
    t.is(implicit.code, 0, implicit.stderr);
    t.deepEqual((await readBack(dovecot, ex.mailboxes)).pairs, ex.expected);
    const starttls = await cli(args(`imap://archiver@127.0.0.1:${dovecot.port}/?tls=starttls&folder=INBOX/Pivot`, 'starttls.jsonl'), { env: trusted });
    t.is(starttls.code, 0, starttls.stderr);
    t.like((await readStatusLog(join(dir, 'starttls.jsonl'))).summary, { delivered: 0, skipped: ex.expected.length });
  });

  test('archive -> Azure Blob staging -> import into IMAP: every mailbox holds exactly its items, once; a second import appends nothing', async (t) => {
    const { dir, ex, dovecot } = await exportAndServer(t, 300, 24);
    const azurite = await startAzurite();
    t.teardown(() => azurite.dispose());
    const staged = await cli(['run', ex.archive, '--sink', 'azblob://staging/acme', '--rejects', join(dir, 'rejects')], { env: azurite.env as Record<string, string> });
    t.is(staged.code, 0, staged.stderr);
    const importArgs = ['import', '--from', 'azblob://staging/acme', '--sink', `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Pivot`, '--json'];
    const imported = await cli(importArgs, { env: { ...env, ...(azurite.env as Record<string, string>) } });
    t.is(imported.code, 0, imported.stderr);
    t.like(JSON.parse(imported.stdout), { delivered: ex.expected.length, failed: 0, balanced: true });
    const back = await readBack(dovecot, ex.mailboxes);
    t.deepEqual(back.pairs, ex.expected);
    t.true(back.messages.every((m) => m.seen && m.internalDate.getTime() === m.date.getTime()));
    const again = await cli([...importArgs, '--again'], { env: { ...env, ...(azurite.env as Record<string, string>) } });
    t.like(JSON.parse(again.stdout), { delivered: 0, skipped: ex.expected.length });
    t.is((await readBack(dovecot, ex.mailboxes)).pairs.length, ex.expected.length);
  });

  test('Dovecot stopped mid-run: failures are recorded, exit 1, and a re-run completes the set with no duplicates', async (t) => {
    const { dir, ex, dovecot } = await exportAndServer(t, 1500, 22);
    // window=400, what the sink held before 2026-11-28: with a default of 10,000 or more the whole export
    // is in the sink at once, and most of it stored before the status log (written in order)
    // shows a fifth of it, so the server would go down with little left to fail.
    // One session and 100 held (pool=1, window=100): the run lasts seconds, so a test process slowed
    // by a loaded machine still stops the server while much is left (with pool=4 and window=400
    // the run once ended before the kill, exit 0).
    const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&retries=1&retryDelay=100&window=100&pool=1`;
    const status = join(dir, 'status.jsonl');
    let finished = false;
    const running = cli(['run', ex.archive, '--sink', sink, '--status-log', status, '--rejects', join(dir, 'rejects')], { env }).finally(() => {
      finished = true;
    });
    // Stop the server once a part of the set is in, then bring it back.
    for (;;) {
      if (finished) return t.fail(`the run ended before the server could be stopped: ${(await running).stderr}`);
      const text = await readFile(status, 'utf8').catch(() => '');
      if ((text.match(/"outcome":"delivered"/g) ?? []).length >= ex.expected.length / 5) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    // Killed, not stopped: a graceful stop lets the sink's logged-in sessions (kept per mailbox)
    // work on for the seconds it waits for them, and this sink finishes the set in that time.
    await dovecot.kill();
    await new Promise((r) => setTimeout(r, 1500));
    await dovecot.start();
    const first = await running;
    t.is(first.code, 1, first.stderr);
    const broken = (await readStatusLog(status)).summary;
    t.true(broken.failed > 0);
    t.true(broken.delivered < ex.expected.length);
    t.is(broken.delivered + broken.failed, ex.expected.length);

    const second = await cli(['run', ex.archive, '--sink', sink, '--status-log', status, '--rejects', join(dir, 'rejects')], { env });
    t.is(second.code, 0, second.stderr);
    const back = await readBack(dovecot, ex.mailboxes);
    t.deepEqual(back.pairs, ex.expected);
    t.is(new Set(back.pairs).size, back.pairs.length, 'no duplicates');
  });

  test('SIGTERM while the IMAP server is down ends the run within seconds; what was held is recorded failed and a re-run completes the set', async (t) => {
    // Was 5 min 14 s: the sink kept sleeping between retries and reconnecting after the signal.
    const { dir, ex, dovecot } = await exportAndServer(t, 1500, 25);
    // window=400: see the test above.
    const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&retries=5&retryDelay=20000&window=400`;
    const status = join(dir, 'status.jsonl');
    // The run waits at its 300th item until the server is down, so it goes down with work left
    // (without the gate, a fast run under a loaded machine's slow polling had finished first).
    const gate = join(dir, 'server-down');
    const plugin = join(dir, 'gate.mjs');
    await writeFile(plugin, gatePlugin(300, gate));
    const args = ['run', '--max-rejected', '100%', ex.archive, '--sink', sink, '--status-log', status, '--rejects', join(dir, 'rejects'), '--plugin', plugin];
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stdout.resume();
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    t.teardown(() => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    });
    for (;;) {
      if (child.exitCode !== null) return t.fail(`the run ended before the server could be stopped: ${stderr}`);
      const text = await readFile(status, 'utf8').catch(() => '');
      if ((text.match(/"outcome":"delivered"/g) ?? []).length >= 100) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    // Killed (see the test above): the server is gone at once; then the run goes on past the gate.
    await dovecot.kill();
    await writeFile(gate, '');
    // The batches in flight fail to reconnect and wait 20 s to retry.
    await new Promise((r) => setTimeout(r, 1500));
    const signalled = Date.now();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, new Promise<'late'>((r) => setTimeout(() => r('late'), 30_000))]);
    const took = Date.now() - signalled;
    if (code === 'late') return t.fail('still running 30 s after SIGTERM');
    t.log(`exit ${code}, ${took} ms after SIGTERM`);
    t.true(took < 5_000, `exited ${took} ms after SIGTERM`);
    t.true(code === 1 || code === 4, `exit ${code}: ${stderr}`);
    const { lines } = await readStatusLog(status);
    const failed = lines.filter((l) => l.outcome === 'failed');
    t.true(failed.length > 0);
    t.true(failed.some((l) => /stopped by a signal before it was stored/.test(String(l.detail))));
    t.false(stderr.includes(ADMIN_PASSWORD));

    await dovecot.start();
    const again = await cli(args, { env });
    t.is(again.code, 0, again.stderr);
    const back = await readBack(dovecot, ex.mailboxes);
    t.deepEqual(back.pairs, ex.expected);
    t.is(new Set(back.pairs).size, back.pairs.length, 'no duplicates');
  });

  test('the Maildir sink output, served by Dovecot, shows every message in INBOX/Pivot, seen, with INTERNALDATE = sentAt', async (t) => {
    t.timeout(300_000);
    const dir = await tempDir(t);
    await chmod(dir, 0o755);
    const ex = await makeExport(dir, 300, 23);
    const out = join(dir, 'mail');
    const result = await cli(['run', '--all-domains', ex.archive, '--sink', `maildir:${out}`, '--rejects', join(dir, 'rejects')]);
    t.is(result.code, 0, result.stderr);
    const onDisk = await readMaildir(out);
    const dovecot = await startDovecot(ex.mailboxes, { mailLocation: (index) => `maildir:${out}/%u:INDEX=${index}/%u:CONTROL=${index}/%u` });
    t.teardown(() => removeDovecot(dovecot));
    const back = await readBack(dovecot, ex.mailboxes);
    t.deepEqual(back.pairs, ex.expected);
    t.deepEqual(back.pairs, pairs(onDisk));
    t.true(back.messages.every((m) => m.seen));
    t.true(back.messages.every((m) => m.internalDate.getTime() === m.date.getTime()));
  });
});
