// Two runs at once into one IMAP folder, as a hostile review ran them: the real command line
// twice, state dirs of their own, the same Dovecot folder, started together. "Nothing twice" must
// hold when both have ended, read back by an independent reader, and each run's ledger verifies.
import test from 'ava';
import { simpleParser } from 'mailparser';
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { canonicalMailbox as validEmail } from '../src/formats/address/index.js';
import { BIN, cli, readStatusLog, REPO_ROOT } from './helpers/cli.js';
import { waitFor } from './helpers/net.js';
import { ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot } from './helpers/dovecot.js';
import { pairs } from './helpers/maildir.js';
import { withServer } from './helpers/sink-conformance.js';
import { expectedPairs, type ReferenceConversations } from './helpers/reference.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };

/** The command line started with its stdin left open (for the test to give the archive when it chooses). */
function startWithStdin(args: string[]): { child: ChildProcess; done: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, env: { ...process.env, ...env }, stdio: ['pipe', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  return { child, done: new Promise((resolve, reject) => child.on('error', reject).on('close', (code) => resolve({ code, stderr }))) };
}

/** Runs `writers` runs at once into `folder`, each with a state dir of its own; their exit codes and summaries. */
async function runAtOnce(dir: string, archive: string, sink: string, writers: number): Promise<{ code: number | null; stderr: string; state: string; delivered: number; skipped: number }[]> {
  const runs = Array.from({ length: writers }, (_, w) => ({ state: join(dir, `state${w}`), status: join(dir, `status${w}.jsonl`) }));
  // Each run reads the archive from stdin, given to all at once when every one holds its state
  // dir's lock (and so waits on stdin): a process's start-up time does not decide who goes first.
  const started = runs.map((r, w) => startWithStdin(['run', '-', '--sink', sink, '--domain', 'acme.example', '--state-dir', r.state, '--status-log', r.status, '--rejects', join(dir, `rejects${w}`)]));
  await waitFor(async () => (await Promise.all(runs.map((r) => stat(join(r.state, 'lock')).then(() => true, () => false)))).every(Boolean), 'every run holds its lock', 60_000);
  await new Promise((r) => setTimeout(r, 500));
  const bytes = await readFile(archive);
  for (const s of started) s.child.stdin!.end(bytes);
  const results = await Promise.all(started.map((s) => s.done));
  return Promise.all(
    runs.map(async (r, w) => {
      const { summary } = await readStatusLog(r.status).catch(() => ({ summary: { delivered: NaN, skipped: NaN } }));
      return { ...results[w]!, state: r.state, delivered: summary.delivered, skipped: summary.skipped };
    }),
  );
}

withServer('Dovecot (two IMAP writers)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  for (const writers of [2, 3]) {
    test.serial(`${writers} CLI runs at once into one folder (state dirs of their own) leave each item once; each run's verify passes`, async (t) => {
      t.timeout(300_000);
      const dir = await tempDir(t);
      const archive = join(dir, 'export.zip');
      await generateSample(archive, { events: 300, seed: 9 });
      const entries = readJsonEntriesIndependently(archive);
      const users = entries['users.json'] as { id: string; email?: string | null }[];
      const files = Object.keys(entries).filter((n) => n.startsWith('messages/')).sort().map((n) => entries[n] as unknown[]);
      const mailboxes = [...new Set(users.flatMap((u) => (validEmail(u.email) ? [u.email!.toLowerCase()] : [])))].filter((m) => m.endsWith('@acme.example'));
      const expected = expectedPairs(users, entries['conversations.json'] as ReferenceConversations, files, { domains: ['acme.example'], excluded: new Set(['edge_oversize']) });
      const dovecot = await startDovecot(mailboxes);
      t.teardown(() => removeDovecot(dovecot));

      // A run that starts a little behind finds the other's messages and skips them: no race, and
      // nothing proved. Tried again in a new folder until two runs appended one item each (at most 4 times).
      for (let attempt = 1; ; attempt++) {
        const folder = `INBOX/Twice${attempt}`;
        const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${folder}`;
        const runs = await runAtOnce(join(dir, `attempt${attempt}`), archive, sink, writers);
        for (const [w, r] of runs.entries()) t.is(r.code, 0, `run ${w}: ${r.stderr}`);
        for (const r of runs) t.is(r.delivered + r.skipped, expected.length, `${r.state}: every item delivered or found`);
        const appended = runs.reduce((n, r) => n + r.delivered, 0);
        t.log(`attempt ${attempt}: delivered ${runs.map((r) => r.delivered).join(' + ')} = ${appended} for ${expected.length} items`);
        if (appended === expected.length && attempt < 4) continue;
        t.true(appended > expected.length, 'the runs raced: some item was appended by two of them');

        // Read back with our own IMAP client and mailparser: every (mailbox, item) pair once.
        const held: { mailbox: string; itemId: string }[] = [];
        for (const mailbox of mailboxes) {
          for (const m of await fetchFolder(dovecot.port, mailbox, folder)) held.push({ mailbox, itemId: String((await simpleParser(m.source)).headers.get('x-pivot-item-id')) });
        }
        const found = pairs(held);
        const twice = found.filter((p, i) => found[i - 1] === p);
        t.deepEqual(twice, [], `${twice.length} extra copies`);
        t.deepEqual([...new Set(found)], expected);

        for (const [w, r] of runs.entries()) {
          const verified = await cli(['verify', '--state-dir', r.state, '--sink', sink, '--json'], { env });
          t.is(verified.code, 0, `verify of run ${w}: ${verified.stdout.slice(0, 2000)} ${verified.stderr}`);
          const store = (JSON.parse(verified.stdout) as { store: { intact: number; unexpected: unknown[] } }).store;
          t.is(store.intact, expected.length, `verify of run ${w}: intact`);
          t.is(store.unexpected.length, 0, `verify of run ${w}: unexpected`);
        }
        return;
      }
    });
  }
});
