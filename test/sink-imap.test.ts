import test from 'ava';
import { simpleParser } from 'mailparser';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { parseImapSpec } from '../src/sinks/imap/config.js';
import { redactSecrets } from '../src/redact.js';
import { appendUids, createImapSink, imapDateTime, imapLocation, imapSinkFactory, parseImapLocation } from '../src/sinks/imap/index.js';
import { createImapReader, uidSet } from '../src/sinks/imap/reader.js';
import { Appended, extraCopies } from '../src/sinks/imap/copies.js';
import type { SinkOptions, Stored } from '../src/sinks/sink.js';
import { generateSample } from '../src/sample/generate.js';
import { ADMIN_PASSWORD, asBuilt, clientFlags, copyAt, DOVECOT_BINARY, dovecotMissingMessage, fetchAt, fetchFolder, removeAt, removeDovecot, replaceAt, revokeMailbox, setAdminPassword, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { freePort } from './helpers/net.js';
import { cli } from './helpers/cli.js';
import { alterOneByte, CONFORMANCE_MAILBOXES, delivery, everyCase, readerCases, readerIgnoresClientFlags, sinkConformance, withServer } from './helpers/sink-conformance.js';
import { imapOptions } from '../src/sinks/imap/options.js';
import { tempDir } from './helpers/tmp.js';

test('IMAP sink spec: TLS by default, secrets never in the URL or the description', (t) => {
  const config = parseImapSpec('imap://archiver@mail.acme.example/?folder=INBOX/Pivot');
  t.is(config.port, 993);
  t.is(config.tls, 'implicit');
  t.is(config.auth, 'master');
  t.is(parseImapSpec('imap://a@h/?tls=starttls').port, 143);
  t.throws(() => parseImapSpec('imap://archiver:hunter2@mail.acme.example/'), { message: /must not carry a password/ });
  const err = t.throws(() => parseImapSpec('imap://archiver:hunter2@mail.acme.example/?bogus=1'));
  t.false(err!.message.includes('hunter2'));
  t.throws(() => parseImapSpec('imap://a@mail.acme.example/?tls=none'), { message: /--insecure/ });
  t.is(parseImapSpec('imap://a@mail.acme.example/?tls=none', { insecure: true }).tls, 'none');
  t.is(parseImapSpec('imap://a@127.0.0.1:1430/?tls=none').port, 1430);
  t.throws(() => parseImapSpec('imap://a@h/?pool=0'), { message: /pool must be/ });
  t.throws(() => createImapSink('imap://a@h/', { env: {} }), { message: /PIVOT_IMAP_PASSWORD/ });
  const sink = createImapSink('imap://a@h/?folder=INBOX/Pivot', { env: { PIVOT_IMAP_PASSWORD: 'hunter2' } });
  t.false(sink.description.includes('hunter2'));
  t.is(redactSecrets('imap://u:pw@h/?token=abc&folder=x'), 'imap://u:***@h/?token=***&folder=x');
});

test('IMAP locations: APPENDUID of a MULTIAPPEND gives each message its UID in order; locations round-trip; UID sets are compact', (t) => {
  const code = (...parts: string[]) => parts.map((value) => ({ type: 'ATOM', value }));
  t.deepEqual(appendUids(code('APPENDUID', '38505', '3955:3957'), 3), { uidValidity: 38505n, uids: [3955, 3956, 3957] });
  t.deepEqual(appendUids(code('APPENDUID', '7', '4,9:10'), 3), { uidValidity: 7n, uids: [4, 9, 10] });
  // Not one UID per message, no code, or another code: no UIDs at all rather than wrong ones.
  t.deepEqual(appendUids(code('APPENDUID', '7', '4:5'), 3), { uids: [] });
  t.deepEqual(appendUids(code('APPENDUID', '7', '1:100000'), 3), { uids: [] });
  t.deepEqual(appendUids(undefined, 1), { uids: [] });
  t.deepEqual(appendUids(code('COPYUID', '7', '4'), 1), { uids: [] });
  const location = imapLocation('jane@acme.example', 'INBOX/Pivot', 38505n, 3956);
  t.is(location, 'jane@acme.example/INBOX/Pivot;UIDVALIDITY=38505/;UID=3956');
  t.deepEqual(parseImapLocation(location!), { mailbox: 'jane@acme.example', folder: 'INBOX/Pivot', uidValidity: 38505n, uid: 3956 });
  t.is(imapLocation('jane@acme.example', 'INBOX/Pivot', undefined, 3), undefined);
  t.is(parseImapLocation('jane@acme.example/INBOX/Pivot/cur/x'), undefined);
  t.is(uidSet([9, 1, 2, 3, 5, 10, 11, 3]), '1:3,5,9:11');
});

test('IMAP copies removed at close: of an identity held twice where one copy is ours, all but the least UID; never another writer\'s own duplicates', (t) => {
  const ours = new Appended('INBOX/Pivot', 7n);
  for (const uid of [10, 11, 12, 20]) ours.add(1, uid);
  t.true(ours.has(11) && ours.has(20) && !ours.has(13) && !ours.has(9));
  const listed = new Map<number, string>([
    [5, 'x'], [11, 'x'], // theirs first, ours later: ours goes
    [10, 'y'], [15, 'y'], [16, 'y'], // ours first: the later copies go, whoever made them
    [3, 'z'], [4, 'z'], // two copies, neither ours: not this run's to judge
    [12, 'w'], // once
  ]);
  t.deepEqual(extraCopies(listed, ours).sort((a, b) => a - b), [11, 15, 16]);
});

test('IMAP date-time for INTERNALDATE is RFC 3501 form in UTC', (t) => {
  t.is(imapDateTime(Date.parse('2026-11-03T04:05:06.789Z')), '03-Nov-2026 04:05:06 +0000');
  t.is(imapDateTime(Date.parse('2026-01-23T23:59:59+02:00')), '23-Jan-2026 21:59:59 +0000');
});

withServer('Dovecot (IMAP)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  const mailboxes = ['omar@acme.example', 'twice0@acme.example', 'twice1@acme.example', 'copied@acme.example', 'broken-master@acme.example', 'broken-authzid@acme.example', ...CONFORMANCE_MAILBOXES];
  let dovecot: Dovecot;
  test.before(async () => {
    dovecot = await startDovecot(mailboxes);
  });
  test.after.always(async () => {
    if (dovecot) await removeDovecot(dovecot);
  });
  const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
  let stores = 0;

  for (const auth of ['master', 'authzid']) {
    sinkConformance(
      {
        name: `imap (${auth})`,
        async store() {
          const folder = `INBOX/Conformance${++stores}`;
          const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&auth=${auth}&folder=${folder}&retries=0`;
          return {
            create: async () => createImapSink(spec, { env }),
            read: async (mailbox) => (await fetchFolder(dovecot.port, mailbox, folder)).map((m) => asBuilt(m.source)),
            async breakStore() {
              // A mailbox of this harness's own: the other's tests run at the same time on this server.
              const mailbox = `broken-${auth}@acme.example`;
              return { mailbox, repair: await revokeMailbox(dovecot, mailbox) };
            },
            readAt: async (location) => {
              const stored = await fetchAt(dovecot.port, location);
              return stored && asBuilt(stored);
            },
            reader: async () => imapSinkFactory.reader!(spec, { cwd: '/', env } as SinkOptions),
            tamper: {
              alter: (_mailbox, location) => replaceAt(dovecot.port, location, alterOneByte),
              remove: (_mailbox, location) => removeAt(dovecot.port, location),
              clientChanges: (_mailbox, locations) => clientFlags(dovecot.port, locations),
            },
          };
        },
        unusableReader: async () => createImapReader(`imap://archiver@127.0.0.1:${await freePort()}/?tls=none&auth=${auth}&retryDelay=10`, { cwd: '/', env }),
        readerListsNoMailboxes: true,
        options: imapOptions,
        withOptions: async (query) => createImapSink(`imap://archiver@127.0.0.1:${dovecot.port}/?${query}`, { env }),
        unusable: async () => createImapSink(`imap://archiver@127.0.0.1:${await freePort()}/?tls=none&auth=${auth}&retryDelay=10`, { env }),
        secrets: [
          { secret: 'Pw:in/the@env%1', create: async () => createImapSink(`imap://archiver@127.0.0.1:${dovecot.port}/?auth=${auth}`, { env: { PIVOT_IMAP_PASSWORD: 'Pw:in/the@env%1' } }) },
          { secret: 'other-var-Pw-2', create: async () => createImapSink(`imap://archiver@127.0.0.1:${dovecot.port}/?passwordEnv=ARCHIVER_PW`, { env: { ARCHIVER_PW: 'other-var-Pw-2' } }) },
        ],
      },
      [...everyCase, ...readerCases, readerIgnoresClientFlags],
    );
  }

  test('imap: messages land as seen, with INTERNALDATE = sentAt, in the folder it creates', async (t) => {
    const folder = 'INBOX/Pivot';
    const sink = createImapSink(`imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${folder}`, { env });
    await sink.open();
    const d = delivery(7, 'omar@acme.example');
    t.is((await sink.write(d)).outcome, 'delivered');
    await sink.close();
    const [stored] = await fetchFolder(dovecot.port, 'omar@acme.example', folder);
    t.true(stored!.flags.has('\\Seen'));
    t.is(stored!.internalDate.getTime(), Math.floor(d.internalDate / 1000) * 1000);
    t.is((await simpleParser(stored!.source)).messageId, d.messageId);
  });

  test('imap: two runs at once into one folder (each with its own state) leave each item once when both have closed; what each recorded is found', async (t) => {
    t.timeout(120_000);
    const boxes = ['twice0@acme.example', 'twice1@acme.example'];
    const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Twice&retryDelay=20`;
    const sinks = [createImapSink(spec, { env }), createImapSink(spec, { env })];
    await Promise.all(sinks.map((s) => s.open()));
    // Each run first delivers items of its own into both mailboxes, on both days the shared items
    // fall on: each has listed the folder before either appends a shared item (they overlap more).
    const own = (w: number) => boxes.flatMap((b) => [delivery(-1 - w, b), delivery(40 + w, b)]);
    for (const [w, s] of sinks.entries()) for (const d of own(w)) t.is((await s.write(d)).outcome, 'delivered');
    const items = Array.from({ length: 40 }, (_, n) => delivery(n, boxes[n % 2]!));
    const outcomes = await Promise.all(sinks.map((s) => Promise.all(items.map((d) => s.write(d)))));
    await Promise.all(sinks.map((s) => s.close()));
    t.true(outcomes.flat().every((o) => o.outcome === 'delivered' || o.outcome === 'skipped'));
    const removed = sinks.map((s) => s.stats.copiesRemoved);
    t.log(`copies removed: ${removed.join(', ')}`);
    const appended = outcomes.flat().filter((o) => o.outcome === 'delivered').length;
    // How many items both appended depends on timing (each looks for the other's appends before
    // each batch; under load they may not overlap at all): the removal itself is proven by the next test.
    t.log(`appended ${appended} for ${items.length} items`);
    // Every copy beyond one was removed: by one run, or by both at once (then each counts it).
    t.true(removed[0]! + removed[1]! >= appended - items.length && removed[0]! + removed[1]! <= 2 * (appended - items.length), `removed ${removed.join(' + ')} of ${appended - items.length} copies`);
    for (const b of boxes) {
      const held = await fetchFolder(dovecot.port, b, 'INBOX/Twice');
      const ids = await Promise.all(held.map(async (m) => (await simpleParser(m.source)).messageId));
      t.is(new Set(ids).size, 24, b);
      t.is(held.length, 24, `${b}: each item once (20 shared, 2 of each run's own)`);
    }
    // What each run recorded is still found, by identity where its own copy was removed; a ledger
    // holding both records (a run's delivery, then a re-run's skip at the kept copy) finds both.
    const reader = createImapReader(spec, { cwd: '/', env });
    await reader.open();
    for (const [i, d] of items.entries()) {
      const recorded = [0, 1].map((w) => ({ messageId: d.messageId, sentAt: new Date(d.internalDate).toISOString(), location: outcomes[w]![i]!.location! }));
      for (const wanted of recorded) t.is((await reader.mailbox(d.mailbox, [wanted], { sample: true })).held.size, 1, `${d.messageId} at ${wanted.location}`);
      const both = await reader.mailbox(d.mailbox, recorded, { sample: false });
      t.is(both.held.size, 2, d.messageId);
    }
    await reader.close();
  });

  test('imap: copies of this run\'s items another writer appended during the run are removed when it closes, the least UID kept', async (t) => {
    const mailbox = 'copied@acme.example';
    const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Copied`;
    const sink = createImapSink(spec, { env });
    await sink.open();
    const first = await Promise.all([0, 1, 2, 3, 4].map((n) => sink.write(delivery(n, mailbox))));
    // Another writer appends copies of two of them while the run goes on.
    for (const stored of first.slice(0, 2)) await copyAt(dovecot.port, stored.location!);
    t.is((await fetchFolder(dovecot.port, mailbox, 'INBOX/Copied')).length, 7);
    const second = await Promise.all([5, 6, 7, 8, 9].map((n) => sink.write(delivery(n, mailbox))));
    t.true([...first, ...second].every((o) => o.outcome === 'delivered'));
    await sink.close();
    t.is(sink.stats.copiesRemoved, 2);
    const held = await fetchFolder(dovecot.port, mailbox, 'INBOX/Copied');
    const ids = await Promise.all(held.map(async (m) => (await simpleParser(m.source)).messageId));
    t.is(held.length, 10);
    t.is(new Set(ids).size, 10, 'each item once');
    // The run's own copies stayed (the least UIDs): what it recorded is where it said.
    for (const stored of first) t.truthy(await fetchAt(dovecot.port, stored.location!), stored.location);
  });

  test('imap: a mailbox that does not exist fails its items with a reason naming it; others go on', async (t) => {
    const sink = createImapSink(`imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Missing&retries=1&retryDelay=10`, { env });
    await sink.open();
    const [bad, good] = await Promise.allSettled([sink.write(delivery(1, 'nobody@acme.example')), sink.write(delivery(1, 'b@acme.example'))]);
    await sink.close();
    t.is(bad.status, 'rejected');
    const reason = (bad as PromiseRejectedResult).reason as { code: string; message: string };
    t.is(reason.code, ErrorCode.SINK_WRITE);
    t.regex(reason.message, /mailbox nobody@acme\.example: login refused/);
    t.like(good, { status: 'fulfilled', value: { outcome: 'delivered' } });
    t.regex((good as PromiseFulfilledResult<Stored>).value.location ?? '', /^b@acme\.example\/INBOX\/Missing;UIDVALIDITY=\d+\/;UID=1$/);
  });

  test('imap: a wrong admin password stops the run before any delivery (exit 2, E_SINK_UNAVAILABLE), never logged', async (t) => {
    // Was: every item failed one login at a time ("recorded per item", exit 1), 427 of 1,007 in
    // five minutes. Now open() logs in once and the run stops there; the password still never
    // shows in stdout, stderr or the status log.
    const dir = await tempDir(t);
    const archive = join(dir, 'x.zip');
    await generateSample(archive, { events: 20, seed: 4, edgeCases: false });
    const status = join(dir, 'status.jsonl');
    const started = Date.now();
    const result = await cli(['run', archive, '--sink', `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none`, '--status-log', status], {
      env: { PIVOT_IMAP_PASSWORD: 'wrong-password-XYZ' },
    });
    t.is(result.code, 2, result.stderr);
    // Bounded, not instant: a refusal is confirmed by a second login a second later, and Dovecot delays
    // each failed login more as failures from one address add up (these tests share one Dovecot).
    t.true(Date.now() - started < 90_000, `${Date.now() - started} ms`);
    t.regex(result.log, /E_SINK_UNAVAILABLE: IMAP sink \(admin archiver at 127\.0\.0\.1:\d+\): the server refused the admin's credentials/);
    const text = await readFile(status, 'utf8').catch(() => '');
    t.false(text.includes('"outcome"'), 'no item reached the sink');
    t.false(result.stdout.includes('wrong-password-XYZ'));
    t.false(result.stderr.includes('wrong-password-XYZ'));
    t.false(text.includes('wrong-password-XYZ'));
  });

  for (const auth of ['master', 'authzid']) {
    test(`imap (${auth}): open() proves the admin's credentials: a wrong password is E_SINK_UNAVAILABLE before any write, the right one opens`, async (t) => {
      const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&auth=${auth}&folder=INBOX/Probe`;
      const wrong = createImapSink(spec, { env: { PIVOT_IMAP_PASSWORD: 'wrong-Pw-1' } });
      const started = Date.now();
      const err = await t.throwsAsync(wrong.open(), { code: ErrorCode.SINK_UNAVAILABLE });
      // See above: the refusal confirmed, Dovecot's growing delay for failed logins.
      t.true(Date.now() - started < 90_000, `${Date.now() - started} ms`);
      t.regex(err!.message, /the server refused the admin's credentials \(a login to pivot-archive-credential-check@invalid, a mailbox that does not exist: AUTHENTICATIONFAILED/);
      t.false(err!.message.includes('wrong-Pw-1'));
      await t.throwsAsync(wrong.write(delivery(1, 'jane@acme.example')), { code: ErrorCode.SINK_CLOSED });
      // The right password: Dovecot answers the login to a mailbox it does not know AUTHORIZATIONFAILED.
      const right = createImapSink(spec, { env });
      await right.open();
      await right.close();
      t.deepEqual(await fetchFolder(dovecot.port, 'jane@acme.example', 'INBOX/Probe'), []);
    });
  }

  test('imap: probe=MAILBOX proves the credentials with a login to that mailbox', async (t) => {
    const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&probe=jane@acme.example`;
    await createImapSink(spec, { env }).open();
    const err = await t.throwsAsync(createImapSink(spec, { env: { PIVOT_IMAP_PASSWORD: 'wrong-Pw-2' } }).open(), { code: ErrorCode.SINK_UNAVAILABLE });
    t.regex(err!.message, /refused the admin's credentials \(a login to jane@acme\.example \(probe=\): AUTHENTICATIONFAILED/);
    t.notRegex(err!.message, /probe=MAILBOX/);
  });

  test('imap: a server that cannot be reached is E_SINK_UNAVAILABLE from open(), after a short bounded retry', async (t) => {
    const port = await freePort();
    const sink = createImapSink(`imap://archiver@127.0.0.1:${port}/?tls=none&retryDelay=200`, { env });
    const started = Date.now();
    const err = await t.throwsAsync(sink.open(), { code: ErrorCode.SINK_UNAVAILABLE });
    t.regex(err!.message, /cannot log in to check the admin's credentials: .*ECONNREFUSED.* \(3 attempts\)/);
    t.true(Date.now() - started < 5_000);
  });

  test('imap: a certificate that is not trusted is E_SINK_UNAVAILABLE from open(), at once', async (t) => {
    const sink = createImapSink(`imaps://archiver@127.0.0.1:${dovecot.tlsPort}/`, { env });
    const started = Date.now();
    const err = await t.throwsAsync(sink.open(), { code: ErrorCode.SINK_UNAVAILABLE });
    t.regex(err!.message, /self[- ]signed|certificate/i);
    t.notRegex(err!.message, /attempts/);
    t.true(Date.now() - started < 3_000);
  });

  test('imap: the admin password changed in the middle of a run fails what the sink holds at once, and every later write', async (t) => {
    // Its own server: the password changes for every login to it.
    const own = await startDovecot(['jane@acme.example', 'omar@acme.example', 'a@acme.example']);
    t.teardown(() => removeDovecot(own));
    const sink = createImapSink(`imap://archiver@127.0.0.1:${own.port}/?tls=none&pool=1&retries=3&retryDelay=2000`, { env });
    await sink.open();
    t.is((await sink.write(delivery(1, 'jane@acme.example'))).outcome, 'delivered');
    await setAdminPassword(own, 'rotated-password-Q7');
    const results = await Promise.allSettled([delivery(2, 'omar@acme.example'), delivery(3, 'a@acme.example'), delivery(4, 'omar@acme.example')].map((d) => sink.write(d)));
    for (const r of results) {
      t.is(r.status, 'rejected');
      t.regex(((r as PromiseRejectedResult).reason as Error).message, /^mailbox \S+: the server refused the admin's credentials in the middle of the run/);
    }
    const started = Date.now();
    await t.throwsAsync(sink.write(delivery(5, 'jane@acme.example')), { code: ErrorCode.SINK_WRITE, message: /refused the admin's credentials/ });
    t.true(Date.now() - started < 100);
    await sink.close();
    await setAdminPassword(own, ADMIN_PASSWORD);
    t.deepEqual(await fetchFolder(own.port, 'omar@acme.example'), []);
  });
});
