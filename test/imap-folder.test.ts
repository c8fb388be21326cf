// The IMAP sink's folder (src/sinks/imap/SPEC.md, "Folder"): a path the server will never take is
// refused when the spec is parsed (an empty part), by open() on the probe= mailbox (EXAMINE
// answered NO [CANNOT]), or at the first CREATE or SELECT, and never retried. Was: `INBOX/Pivot/`,
// `INBOX//Pivot` or `/Pivot` had every item retried 6 times against Dovecot's
// `NO [CANNOT] Invalid mailbox name`; 652 items failed after 70-88 s.
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { parseImapSpec } from '../src/sinks/imap/config.js';
import { createImapSink, ImapSink } from '../src/sinks/imap/index.js';
import { storageLost } from '../src/sinks/sink.js';
import { ImapFlow } from 'imapflow';
import { generateSample } from '../src/sample/generate.js';
import { canonicalMailbox } from '../src/formats/address/index.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { ADMIN, ADMIN_PASSWORD, appendGate, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { delivery, withServer } from './helpers/sink-conformance.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';
import { tempDir } from './helpers/tmp.js';

const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
/** Forms with an empty part, each with what the error suggests instead. */
const EMPTY_PARTS: [string, string][] = [
  ['INBOX/Pivot/', 'INBOX/Pivot'],
  ['INBOX//Pivot', 'INBOX/Pivot'],
  ['/Pivot', 'Pivot'],
  ['INBOX..Pivot', 'INBOX/Pivot'],
  ['.Pivot', 'Pivot'],
  ['INBOX/Pivot.', 'INBOX/Pivot'],
  ['INBOX/./Pivot', 'INBOX/Pivot'],
];
/** Dovecot answers CREATE of this `NO [CANNOT] Mailbox name too long`, and EXAMINE of it "doesn't exist". */
const TOO_LONG = `INBOX/${'X'.repeat(300)}`;

test('IMAP folder: a path with an empty part (leading, trailing or doubled / or .) is E_SINK_CONFIG when the spec is parsed, naming the option and the value', (t) => {
  for (const [folder, fixed] of EMPTY_PARTS) {
    for (const written of [folder, encodeURIComponent(folder)]) {
      const err = t.throws(() => parseImapSpec(`imap://archiver@127.0.0.1:1430/?tls=none&folder=${written}`), { code: ErrorCode.SINK_CONFIG }, written);
      t.is(err!.message, `IMAP sink imap://archiver@127.0.0.1:1430: folder ${JSON.stringify(folder)} has an empty part (a leading, trailing or doubled "/" or ".", each of which becomes the server's hierarchy delimiter): write ${fixed}`);
    }
  }
  t.throws(() => parseImapSpec('imap://a@h/?folder=/'), { code: ErrorCode.SINK_CONFIG, message: /folder "\/" has an empty part[^:]*$/ });
  // As before: wildcards and control characters.
  t.throws(() => parseImapSpec('imap://a@h/?folder=INBOX/Piv*t'), { code: ErrorCode.SINK_CONFIG, message: /folder must be a plain folder path/ });
  t.throws(() => parseImapSpec('imap://a@h/?folder=INBOX/%25'), { code: ErrorCode.SINK_CONFIG, message: /folder must be a plain folder path/ });
  for (const good of ['INBOX/Pivot', 'INBOX/Archive/Pivot', 'Pivot', 'INBOX.Archive.Pivot', '~Pivot', TOO_LONG]) t.is(parseImapSpec(`imap://a@h/?folder=${good}`).folder, good);
});

withServer('Dovecot (IMAP folder)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  let dovecot: Dovecot;
  let archive: string;
  let mailboxes: string[];
  let dir: string;
  test.before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pivot-imap-folder-'));
    archive = join(dir, 'export.zip');
    await generateSample(archive, { events: 40, seed: 5, edgeCases: false });
    const users = readJsonEntriesIndependently(archive)['users.json'] as { email?: string | null }[];
    mailboxes = [...new Set(users.flatMap((u) => (canonicalMailbox(u.email) ? [u.email!.toLowerCase()] : [])))];
    dovecot = await startDovecot([...mailboxes, 'jane@acme.example', 'omar@acme.example', 'probe@acme.example']);
  });
  test.after.always(async () => {
    if (dovecot) await removeDovecot(dovecot);
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  const spec = (folder: string, extra = '') => `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${encodeURIComponent(folder)}${extra}`;

  test('imap folder: INBOX is named in any case (RFC 3501): a run with folder=Inbox/X makes INBOX/X; runs with INBOX/X and inbox/X skip every item there, exit 0; one folder', async (t) => {
    const dir = await tempDir(t);
    const mailbox = mailboxes[0]!;
    const folders = async () => {
      const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, auth: { user: `${mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD }, doSTARTTLS: false, logger: false });
      await client.connect();
      try {
        return (await client.list()).map((m) => m.path).sort();
      } finally {
        await client.logout();
      }
    };
    const first = await cli(['run', archive, '--sink', spec('Inbox/CaseTest'), '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--json'], { env });
    t.is(first.code, 0, first.stderr.slice(0, 2000));
    const again = await cli(['run', archive, '--sink', spec('INBOX/CaseTest'), '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--json'], { env });
    t.is(again.code, 0, again.stderr.slice(0, 2000));
    const summary = JSON.parse(again.stdout) as { delivered: number; skipped: number; failed: number };
    t.is(summary.delivered, 0);
    t.true(summary.skipped > 0);
    const third = await cli(['run', archive, '--sink', spec('inbox/CaseTest'), '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--json'], { env });
    t.is(third.code, 0, third.stderr.slice(0, 2000));
    t.is((JSON.parse(third.stdout) as { delivered: number }).delivered, 0);
    t.deepEqual((await folders()).filter((p) => /casetest/i.test(p)), ['INBOX/CaseTest']);
  });

  test('imap folder: run with a folder with an empty part exits 2 (E_SINK_CONFIG) at once, nothing sent', async (t) => {
    const dir = await tempDir(t);
    for (const [folder] of EMPTY_PARTS.slice(0, 3)) {
      const status = join(dir, `${EMPTY_PARTS.findIndex(([f]) => f === folder)}.jsonl`);
      const started = Date.now();
      const result = await cli(['run', archive, '--sink', spec(folder, '&retries=5&retryDelay=60000'), '--status-log', status], { env });
      t.is(result.code, 2, `${folder}: ${result.stderr}`);
      t.true(Date.now() - started < 20_000);
      t.regex(result.log, new RegExp(`E_SINK_CONFIG: IMAP sink imap://archiver@127\\.0\\.0\\.1:\\d+: folder ${JSON.stringify(folder).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} has an empty part`));
    }
  });

  test('imap folder: a folder the server refuses (NO [CANNOT]) at open() on the probe= mailbox: E_SINK_CONFIG before any delivery, exit 2', async (t) => {
    const sink = createImapSink(spec('~Pivot', '&probe=probe@acme.example&retries=5&retryDelay=60000'), { env });
    const started = Date.now();
    const err = await t.throwsAsync(sink.open(), { code: ErrorCode.SINK_CONFIG });
    t.true(Date.now() - started < 30_000, `${Date.now() - started} ms`);
    t.regex(err!.message, /^IMAP sink \(admin archiver at 127\.0\.0\.1:\d+\): the server refuses the folder "~Pivot" \(EXAMINE "~Pivot" after a login to probe@acme\.example \(probe=\): CANNOT Invalid mailbox name/);
    t.regex(err!.message, /fix folder= in the sink spec$/);
    t.is(sink.stats.batches, 0);
    // The same through the command line: exit 2, no item reached the sink.
    const dir = await tempDir(t);
    const status = join(dir, 'status.jsonl');
    const result = await cli(['run', archive, '--sink', spec('~Pivot', '&probe=probe@acme.example&retries=5&retryDelay=60000'), '--status-log', status], { env });
    t.is(result.code, 2, result.stderr);
    t.regex(result.log, /E_SINK_CONFIG: IMAP sink \(admin archiver at [^)]*\): the server refuses the folder "~Pivot" \(EXAMINE/);
    const { lines } = await readStatusLog(status);
    t.false(lines.some((l) => l.record === 'outcome'));
  });

  test('imap folder: a first CREATE answered NO [CANNOT] is not retried: the sink fails as a whole at once, every item with the folder and the server\'s text (E_SINK_CONFIG: the spec is refused)', async (t) => {
    for (const [folder, extra, text] of [
      ['~Pivot', '', /CREATE "~Pivot": CANNOT Invalid mailbox name: Begins with '~'/],
      // EXAMINE on the probe mailbox passes (the name is valid, the folder not there): CREATE tells.
      [TOO_LONG, '&probe=probe@acme.example', /CREATE "INBOX\/X+": CANNOT Mailbox name too long/],
    ] as const) {
      const sink = createImapSink(spec(folder, `&retries=5&retryDelay=60000${extra}`), { env });
      await sink.open();
      const started = Date.now();
      const results = await Promise.allSettled(['jane@acme.example', 'omar@acme.example', 'jane@acme.example', 'omar@acme.example'].map((m, n) => sink.write(delivery(n, m))));
      const late = await Promise.allSettled([sink.write(delivery(9, 'jane@acme.example'))]);
      await sink.close();
      const elapsed = Date.now() - started;
      t.true(elapsed < 30_000, `${elapsed} ms: not one retry delay`);
      for (const r of [...results, ...late]) {
        t.is(r.status, 'rejected');
        const reason = (r as PromiseRejectedResult).reason as { code: string; message: string };
        t.is(reason.code, ErrorCode.SINK_CONFIG);
        t.regex(reason.message, /^mailbox \S+@acme\.example: the server refuses the folder "[^"]+" \(CREATE/);
        t.regex(reason.message, text);
        t.regex(reason.message, /will never take it: fix folder= in the sink spec; no item was delivered/);
      }
      // One attempt per mailbox at most (the two mailboxes may be tried at once), no retry.
      t.true(sink.stats.batches <= 2, `${sink.stats.batches} batches`);
      t.true(sink.stats.logins <= 2, `${sink.stats.logins} logins`);
    }
  });

  test('imap folder: a folder with an empty part in the server\'s own delimiter fails at once, never sent to the server', async (t) => {
    // Past the spec's check (a config built by hand): the server's delimiter is checked again.
    const config = { ...parseImapSpec(spec('INBOX/Pivot', '&retries=5&retryDelay=60000')), folder: 'INBOX//Pivot' };
    const sink = new ImapSink(config, ADMIN_PASSWORD);
    await sink.open();
    const started = Date.now();
    const [r] = await Promise.allSettled([sink.write(delivery(1, 'jane@acme.example'))]);
    await sink.close();
    t.true(Date.now() - started < 30_000);
    t.regex(((r as PromiseRejectedResult).reason as Error).message, /^mailbox jane@acme\.example: the folder "INBOX\/\/Pivot" is "INBOX\/\/Pivot" with the server's hierarchy delimiter "\/": it has an empty part/);
    t.is(sink.stats.batches, 1);
    const probed = new ImapSink({ ...config, probe: 'probe@acme.example' }, ADMIN_PASSWORD);
    await t.throwsAsync(probed.open(), { code: ErrorCode.SINK_CONFIG, message: /^IMAP sink \(admin archiver at [^)]*\): the folder "INBOX\/\/Pivot" .* has an empty part/ });
  });

  test('imap folder: a run with a folder the server refuses and no probe= stops at its first failed item with E_SINK_CONFIG, exit 2 (nothing delivered), not after retries; the rest is left for the next run', async (t) => {
    const dir = await tempDir(t);
    const status = join(dir, 'status.jsonl');
    const started = Date.now();
    const result = await cli(['run', archive, '--sink', spec('~Pivot', '&retries=5&retryDelay=60000'), '--status-log', status, '--json'], { env });
    const elapsed = Date.now() - started;
    t.is(result.code, 2, result.stderr);
    t.true(elapsed < 30_000, `${elapsed} ms`);
    const { summary, lines } = await readStatusLog(status);
    t.like(summary, { delivered: 0, skipped: 0, error: { code: 'E_SINK_CONFIG' } });
    t.regex(String(summary.error?.message), /the server refuses the folder "~Pivot" \(CREATE "~Pivot": CANNOT/);
    t.true(summary.failed > 0);
    const failed = lines.filter((l) => l.record === 'outcome' && l.outcome === 'failed');
    t.is(failed.length, summary.failed);
    for (const l of failed) t.regex(String(l.detail), /the server refuses the folder "~Pivot" \(CREATE "~Pivot": CANNOT/);
  });

  /** Another client (a master login, as an administrator's tool) deletes the folder in the mailbox, with what it holds; `again`: then creates it anew. */
  const deleteFolder = async (mailbox: string, folder: string, again: boolean) => {
    const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD } });
    await client.connect();
    try {
      await client.mailboxDelete(folder);
      if (again) await client.mailboxCreate(folder);
    } finally {
      await client.logout();
    }
  };

  // Dovecot ends the session that has a folder selected when another deletes it (a BYE at the
  // sink's NOOP, which imapflow does not report), or answers its APPEND `NO [SERVERBUG]`; a new
  // session's SELECT is refused (the folder is not listed), or, made again, has another UIDVALIDITY.
  for (const [n, [retries, again]] of ([[0, false], [0, true], [3, false], [3, true]] as const).entries()) {
    test(`imap folder: the folder deleted${again ? ' and made again' : ''} by another client during the run (retries=${retries}): the next write into it fails as storage lost, naming it; the one after is stored in the folder made anew; another mailbox goes on`, async (t) => {
      const folder = `INBOX/Lost${n}`;
      const sink = createImapSink(spec(folder, `&retries=${retries}&retryDelay=50&probe=probe@acme.example`), { env });
      await sink.open();
      t.is((await sink.write(delivery(1))).outcome, 'delivered');
      t.is((await sink.write(delivery(2, 'omar@acme.example'))).outcome, 'delivered');
      await deleteFolder('jane@acme.example', folder, again);
      const lost = await t.throwsAsync(sink.write(delivery(3)));
      t.true(storageLost(lost), `storage lost: ${lost?.message}`);
      t.regex(lost!.message, again ? new RegExp(`^mailbox jane@acme\\.example: not stored: the folder ${folder} was deleted during the run and made again \\(UIDVALIDITY \\d+, now \\d+\\)`) : new RegExp(`^mailbox jane@acme\\.example: not stored: the folder ${folder} was deleted during the run \\((SELECT|LIST)`));
      t.regex(lost!.message, /the next run reads the export from the start \(no checkpoint\)/);
      t.is((await sink.write(delivery(4, 'omar@acme.example'))).outcome, 'delivered');
      const after = await sink.write(delivery(5));
      t.is(after.outcome, 'delivered');
      t.regex(after.location!, new RegExp(`^jane@acme\\.example/${folder};UIDVALIDITY=\\d+/;UID=1$`), 'the first message of the folder made anew');
      await sink.close();
      t.deepEqual((await fetchFolder(dovecot.port, 'jane@acme.example', folder)).map((m) => m.messageId), [delivery(5).messageId]);
      t.is((await fetchFolder(dovecot.port, 'omar@acme.example', folder)).length, 2);
    });
  }

  for (const [n, again] of [false, true].entries()) {
    test.serial(`imap folder: the folder deleted${again ? ' and made again' : ''} between a batch's SELECT and its APPEND: the APPEND refused (Dovecot: NO [SERVERBUG], or TRYCREATE) is the folder's, not the message's: storage lost, not "APPEND refused"`, async (t) => {
      const folder = `INBOX/Held${n}`;
      const gate = appendGate(t);
      const sink = createImapSink(spec(folder, '&retries=3&retryDelay=50&probe=probe@acme.example'), { env });
      await sink.open();
      t.is((await sink.write(delivery(1))).outcome, 'delivered');
      const release = gate.hold();
      const writing = sink.write(delivery(2));
      await gate.taken();
      await deleteFolder('jane@acme.example', folder, again);
      release();
      const lost = await t.throwsAsync(writing);
      t.true(storageLost(lost), `storage lost: ${lost?.message}`);
      t.regex(lost!.message, new RegExp(`^mailbox jane@acme\\.example: not stored: the folder ${folder} was deleted during the run`));
      t.is((await sink.write(delivery(3))).outcome, 'delivered');
      await sink.close();
      t.deepEqual((await fetchFolder(dovecot.port, 'jane@acme.example', folder)).map((m) => m.messageId), [delivery(3).messageId]);
    });
  }

  test('imap folder: a good nested folder is created and delivered to, with or without probe=, with / or . as the separator', async (t) => {
    for (const [folder, extra] of [
      ['INBOX/Archive/Pivot', '&probe=probe@acme.example'],
      ['INBOX.Archive2.Pivot', ''],
    ] as const) {
      const sink = createImapSink(spec(folder, extra), { env });
      await sink.open();
      const stored = await Promise.all(['jane@acme.example', 'omar@acme.example'].map((m, n) => sink.write(delivery(n, m))));
      await sink.close();
      t.true(stored.every((s) => s.outcome === 'delivered'));
      const path = folder.replace(/\./g, '/');
      for (const m of ['jane@acme.example', 'omar@acme.example']) t.is((await fetchFolder(dovecot.port, m, path)).length, 1, `${m} ${path}`);
      t.regex(stored[0]!.location!, new RegExp(`^jane@acme\\.example/${path.replace(/\//g, '\\/')};UIDVALIDITY=\\d+/;UID=1$`));
    }
    // A whole run into a nested folder: every item delivered.
    const dir = await tempDir(t);
    const status = join(dir, 'status.jsonl');
    const result = await cli(['run', archive, '--sink', spec('INBOX/Run/Pivot', '&probe=probe@acme.example'), '--status-log', status], { env });
    t.is(result.code, 0, result.stderr);
    const { summary } = await readStatusLog(status);
    t.true(summary.delivered > 0);
    t.is(summary.failed, 0);
  });
});
