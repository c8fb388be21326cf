// The Maildir sink run as root, served by a real Dovecot that runs as its own unprivileged user
// and keeps dovecot-uidlist and its indexes inside the Maildir (the default mail_location): the
// files must be the mail user's, or Dovecot cannot open the folder.
import test from 'ava';
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Delivery } from '../src/model.js';
import { createSink } from '../src/sinks/index.js';
import { chatDeliveries } from './helpers/chat.js';
import { ImapFlow } from 'imapflow';
import { ADMIN, ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot } from './helpers/dovecot.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);
const MAILBOXES = ['ann@acme.example', 'bob@acme.example'];
const cannotRun = process.getuid?.() !== 0 ? 'the test runs as root (it hands the Maildir to the mail user)' : DOVECOT_BINARY === undefined ? dovecotMissingMessage() : undefined;
// In CI a missing prerequisite is a failure; elsewhere a visible skip that says why.
if (cannotRun && process.env.CI) test('maildir dovecot: prerequisites', (t) => t.fail(cannotRun));
const dovecotTest = cannotRun ? test.skip : test;
if (cannotRun) console.warn(`\n*** maildir dovecot test skipped: ${cannotRun} ***\n`);

/** Event `m_<n>` fanned out to both mailboxes (one copyKey: the copies are hard links). */
function item(n: number, text = `message number ${n}`, exportId = 'dovecot-export'): Delivery[] {
  const sentAt = new Date(Date.parse('2026-11-23T10:00:00Z') + n * 60_000).toISOString();
  return chatDeliveries({ id: `m_${n}`, sentAt, text, exportId, index: n, conversation: { id: 'c_1', name: 'Dovecot' }, sender: { id: 'u_1', displayName: 'Ann', email: MAILBOXES[0]! } }, MAILBOXES);
}

async function deliverAll(spec: string, deliveries: Delivery[]): Promise<string[]> {
  const sink = await createSink(spec, { cwd: '/' });
  await sink.open();
  const outcomes = await Promise.all(deliveries.map(async (d) => (await sink.write(d)).outcome));
  await sink.close();
  return outcomes;
}

dovecotTest('maildir dovecot: run as root into a root owned by the mail user, Dovecot (as that user) serves every message, its own files beside ours; a re-run after a client changed flags adds nothing', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  await chmod(dir, 0o755);
  const out = join(dir, 'mail');
  const uid = Number((await run('id', ['-u', 'dovecot'])).stdout);
  const gid = Number((await run('id', ['-g', 'dovecot'])).stdout);
  await mkdir(out);
  await chown(out, uid, gid);
  const deliveries = [1, 2, 3].flatMap((n) => item(n));
  t.deepEqual(await deliverAll(`maildir:${out}`, deliveries), Array(6).fill('delivered'));
  const dovecot = await startDovecot(MAILBOXES, { mailLocation: () => `maildir:${out}/%u` });
  t.teardown(() => removeDovecot(dovecot));
  for (const mailbox of MAILBOXES) {
    const fetched = await fetchFolder(dovecot.port, mailbox);
    t.is(fetched.length, 3, `${mailbox}: Dovecot can open what the sink made`);
    t.true(fetched.every((m) => m.flags.has('\\Seen')));
    // Dovecot wrote its uidlist into our folder, as the mail user.
    t.true((await readdir(join(out, mailbox, '.INBOX.Pivot'))).includes('dovecot-uidlist'), mailbox);
  }
  // A corrected event, while Dovecot serves the folder: stored beside the original (its variant name).
  t.deepEqual(await deliverAll(`maildir:${out}`, item(1, 'the corrected text', 'correcting-export')), ['delivered', 'delivered']);
  for (const mailbox of MAILBOXES) {
    const fetched = await fetchFolder(dovecot.port, mailbox);
    t.is(fetched.length, 4, mailbox);
    const texts = fetched.map((m) => m.source.toString('utf8')).join('\n');
    t.true(texts.includes('the corrected text') && texts.includes('message number 1'), 'both versions served');
  }
  // A client flags every message and marks one unread over IMAP: Dovecot renames the files.
  const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${MAILBOXES[0]}*${ADMIN}`, pass: ADMIN_PASSWORD } });
  await client.connect();
  await client.mailboxOpen('INBOX/Pivot');
  await client.messageFlagsAdd('1:*', ['\\Flagged']);
  await client.messageFlagsRemove('1', ['\\Seen']);
  await client.logout();
  const cur = join(out, MAILBOXES[0]!, '.INBOX.Pivot', 'cur');
  const names = await readdir(cur);
  t.is(names.filter((n) => n.endsWith(':2,FS')).length, 3, names.join(' '));
  t.is(names.filter((n) => n.endsWith(':2,F')).length, 1, names.join(' '));
  t.deepEqual(await deliverAll(`maildir:${out}`, [...deliveries, ...item(1, 'the corrected text', 'correcting-export')]), Array(8).fill('skipped'));
  t.is((await fetchFolder(dovecot.port, MAILBOXES[0]!)).length, 4);
});
