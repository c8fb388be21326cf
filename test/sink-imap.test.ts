import test from 'ava';
import { simpleParser } from 'mailparser';
import { join } from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { parseImapSpec } from '../src/sinks/imap/config.js';
import { redactSecrets } from '../src/redact.js';
import { createImapSink, imapDateTime } from '../src/sinks/imap/index.js';
import { generateSample } from '../src/sample/generate.js';
import { ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { delivery, sinkConformance } from './helpers/sink-conformance.js';
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

test('IMAP date-time for INTERNALDATE is RFC 3501 form in UTC', (t) => {
  t.is(imapDateTime(Date.parse('2026-11-03T04:05:06.789Z')), '03-Nov-2026 04:05:06 +0000');
  t.is(imapDateTime(Date.parse('2026-01-23T23:59:59+02:00')), '23-Jan-2026 21:59:59 +0000');
});

if (!DOVECOT_BINARY) {
  if (process.env.CI) {
    test('Dovecot is installed for the IMAP tests', (t) => t.fail(dovecotMissingMessage()));
  } else {
    console.warn(`\n*** ${dovecotMissingMessage()} ***\n`);
    test('IMAP tests did not run: Dovecot is missing (see the warning above)', (t) => {
      t.log(dovecotMissingMessage());
      t.pass();
    });
  }
} else {
  const mailboxes = ['jane@acme.example', 'omar@acme.example', 'a@acme.example', 'b@acme.example', ...[0, 1, 2, 3].map((n) => `user${n}@acme.example`)];
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
    sinkConformance({
      name: `imap (${auth})`,
      async store() {
        const folder = `INBOX/Conformance${++stores}`;
        const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&auth=${auth}&folder=${folder}&retries=0`;
        return {
          create: async () => createImapSink(spec, { env }),
          read: async (mailbox) => (await fetchFolder(dovecot.port, mailbox, folder)).map((m) => m.source),
        };
      },
    });
  }

  test('imap: messages land as seen, with INTERNALDATE = sentAt, in the folder it creates', async (t) => {
    const folder = 'INBOX/Pivot';
    const sink = createImapSink(`imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${folder}`, { env });
    await sink.open();
    const d = delivery(7, 'omar@acme.example');
    t.is(await sink.write(d), 'delivered');
    await sink.close();
    const [stored] = await fetchFolder(dovecot.port, 'omar@acme.example', folder);
    t.true(stored!.flags.has('\\Seen'));
    t.is(stored!.internalDate.getTime(), Math.floor(d.internalDate / 1000) * 1000);
    t.is((await simpleParser(stored!.source)).messageId, d.messageId);
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
    t.deepEqual(good, { status: 'fulfilled', value: 'delivered' });
  });

  test('imap: a wrong admin password is recorded per item, never logged', async (t) => {
    const dir = await tempDir(t);
    const archive = join(dir, 'x.zip');
    await generateSample(archive, { events: 20, seed: 4, edgeCases: false });
    const status = join(dir, 'status.jsonl');
    const result = await cli(['run', archive, '--sink', `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&retries=0`, '--status-log', status], {
      env: { PIVOT_IMAP_PASSWORD: 'wrong-password-XYZ' },
    });
    t.is(result.code, 1);
    const { summary, lines } = await readStatusLog(status);
    t.is(summary.delivered, 0);
    t.true(summary.failed > 0);
    t.true(lines.filter((l) => l.outcome === 'failed').every((l) => /login refused/.test(String(l.detail))));
    t.false(result.stderr.includes('wrong-password-XYZ'));
    t.false(JSON.stringify(lines).includes('wrong-password-XYZ'));
  });
}


