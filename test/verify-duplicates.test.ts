// An item held twice in a mailbox is never "verified": a copy APPENDed beside a delivered message
// by another client (Python's imaplib here, independent of the sink's imapflow) is unexpected to
// `verify` (exit 6) before a re-run and after it, whatever the re-run's skip records; the skip
// names the copy the delivery recorded (the least UID), never the added one.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { canonicalMailbox } from '../src/formats/address/index.js';
import { ExpectedMessages } from '../src/expected-messages.js';
import type { LedgerLine } from '../src/ledger/writer.js';
import { createImapReader } from '../src/sinks/imap/reader.js';
import { cli } from './helpers/cli.js';
import { ADMIN, ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, removeDovecot, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

type Json = Record<string, unknown>;
const FOLDER = 'INBOX/Pivot';

/**
 * Python's imaplib, logged in to a mailbox as the master user with the folder selected: `ops` is
 * a list of ["copy", uid] (the message at that UID appended again, same bytes, flags and
 * INTERNALDATE) and ["remove", uid] (flagged \Deleted and expunged), run in order. Prints the
 * UID of each copy (APPENDUID).
 */
const IMAPLIB = `
import imaplib, json, re, sys
port, user, password, folder, ops = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
c = imaplib.IMAP4('127.0.0.1', port)
c.login(user, password)
typ, _ = c.select(folder)
assert typ == 'OK', typ
out = []
for op, uid in ops:
    uid = str(uid).encode()
    if op == 'copy':
        typ, data = c.uid('FETCH', uid, '(BODY.PEEK[] INTERNALDATE FLAGS)')
        assert typ == 'OK' and data and isinstance(data[0], tuple), data
        meta, body = data[0]
        idate = re.search(rb'INTERNALDATE "([^"]+)"', meta).group(1).decode()
        typ, answer = c.append(folder, '(\\\\Seen)', '"' + idate + '"', body)
        assert typ == 'OK', answer
        out.append(int(re.search(rb'APPENDUID \\d+ (\\d+)', answer[0]).group(1)))
    else:
        typ, _ = c.uid('STORE', uid, '+FLAGS.SILENT', '(\\\\Deleted)')
        assert typ == 'OK'
        typ, _ = c.expunge()
        assert typ == 'OK'
c.logout()
print(json.dumps(out))
`;

/** Runs IMAPLIB's `ops` in a mailbox's folder; the UIDs of the copies it appended. */
function imaplib(port: number, mailbox: string, ops: ['copy' | 'remove', number][]): number[] {
  return JSON.parse(execFileSync('python3', ['-c', IMAPLIB, String(port), `${mailbox}*${ADMIN}`, ADMIN_PASSWORD, FOLDER, JSON.stringify(ops)]).toString()) as number[];
}

/** A location's UID and the location of another UID in the same folder, read here on their own. */
function uidOf(location: string): number {
  return Number(/;UID=(\d+)$/.exec(location)![1]);
}
function withUid(location: string, uid: number): string {
  return location.replace(/;UID=\d+$/, `;UID=${uid}`);
}

async function ledger(state: string): Promise<Json[]> {
  return (await readFile(join(state, 'ledger.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Json);
}

interface Setup {
  dovecot: Dovecot;
  env: Record<string, string>;
  run: () => Promise<number | null>;
  verify: () => Promise<{ code: number | null; store: Json; stdout: string }>;
  state: string;
}

/** A sample export run into a fresh Dovecot with a ledger, verified intact. */
async function deliveredIntact(t: ExecutionContext): Promise<Setup> {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 40, seed: 7, edgeCases: false });
  const users = readJsonEntriesIndependently(archive)['users.json'] as { email?: string | null }[];
  const mailboxes = [...new Set(users.flatMap((u) => (canonicalMailbox(u.email) ? [u.email!.toLowerCase()] : [])))];
  const dovecot = await startDovecot(mailboxes);
  t.teardown(() => removeDovecot(dovecot));
  const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
  const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${FOLDER}`;
  const state = join(dir, 'state');
  const run = async () => {
    const r = await cli(['run', archive, '--sink', sink, '--state-dir', state, '--rejects', join(dir, 'rejects'), '--quiet'], { env });
    if (r.code !== 0) t.log(r.stderr);
    return r.code;
  };
  const verify = async () => {
    const r = await cli(['verify', '--state-dir', state, '--sink', sink, '--json'], { env });
    return { code: r.code, store: ((JSON.parse(r.stdout || '{}') as Json).store ?? {}) as Json, stdout: r.stdout };
  };
  t.is(await run(), 0);
  const clean = await verify();
  t.is(clean.code, 0, clean.stdout);
  t.deepEqual(clean.store.unexpected, []);
  return { dovecot, env, run, verify, state };
}

withServer('Dovecot (verify of an item held twice)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test('a copy APPENDed beside a delivered message is unexpected (exit 6), and still after a re-run, whose skip names the delivered copy', async (t) => {
    const { dovecot, run, verify, state } = await deliveredIntact(t);
    const delivered = (await ledger(state)).filter((l) => l.outcome === 'delivered');
    const target = delivered[Math.floor(delivered.length / 2)]!;
    const location = String(target.location);
    const mailbox = String(target.mailbox);
    const [copyUid] = imaplib(dovecot.port, mailbox, [['copy', uidOf(location)]]);
    t.true(copyUid! > uidOf(location));
    const copy = { mailbox, messageId: target.messageId, location: withUid(location, copyUid!) };

    const before = await verify();
    t.is(before.code, 6, before.stdout);
    t.deepEqual(before.store.unexpected, [copy]);

    // A routine re-run: every pair is there, so each is skipped, and the skip of the pair held
    // twice names the copy its delivery recorded.
    const seen = (await ledger(state)).length;
    t.is(await run(), 0);
    const skips = (await ledger(state)).slice(seen).filter((l) => l.record === 'outcome');
    t.true(skips.some((l) => l.outcome === 'skipped'));
    t.deepEqual(skips.filter((l) => l.outcome === 'delivered'), []);
    const skip = skips.find((l) => l.itemId === target.itemId && l.mailbox === mailbox)!;
    t.is(skip.location, location);

    const after = await verify();
    t.is(after.code, 6, after.stdout);
    t.deepEqual(after.store.unexpected, [copy]);
    t.deepEqual(after.store.missing, []);
    t.deepEqual(after.store.altered, []);
    t.is(after.store.intact, before.store.intact);
  });

  test("another item's bytes in place of a message: after the re-run delivers the missing item, the extra copy is still unexpected (exit 6)", async (t) => {
    const { dovecot, run, verify, state } = await deliveredIntact(t);
    const delivered = (await ledger(state)).filter((l) => l.outcome === 'delivered');
    // Two items of one mailbox: A's message removed, B's bytes appended in its place.
    const [a, b] = ((): [Json, Json] => {
      for (const x of delivered) {
        const y = delivered.find((d) => d.mailbox === x.mailbox && d.itemId !== x.itemId);
        if (y) return [x, y];
      }
      throw new Error('no mailbox with two items');
    })();
    const mailbox = String(a.mailbox);
    const [copyUid] = imaplib(dovecot.port, mailbox, [['remove', uidOf(String(a.location))], ['copy', uidOf(String(b.location))]]);
    const copy = { mailbox, messageId: b.messageId, location: withUid(String(b.location), copyUid!) };

    const before = await verify();
    t.is(before.code, 6, before.stdout);
    t.deepEqual((before.store.missing as Json[]).map((m) => m.messageId), [a.messageId]);
    t.deepEqual(before.store.unexpected, [copy]);

    const seen = (await ledger(state)).length;
    t.is(await run(), 0);
    const outcomes = (await ledger(state)).slice(seen).filter((l) => l.record === 'outcome' && l.mailbox === mailbox);
    t.is(outcomes.find((l) => l.itemId === a.itemId)!.outcome, 'delivered');
    const skipB = outcomes.find((l) => l.itemId === b.itemId)!;
    t.is(skipB.outcome, 'skipped');
    t.is(skipB.location, b.location);

    const after = await verify();
    t.is(after.code, 6, after.stdout);
    t.deepEqual(after.store.missing, []);
    t.deepEqual(after.store.unexpected, [copy]);
  });

  test('whatever the ledger holds: records of one item naming two copies (a delivery, then a skip at an added copy) are one message, the later copy unexpected', async (t) => {
    t.timeout(300_000);
    const mailbox = 'twice@acme.example';
    const dovecot = await startDovecot([mailbox]);
    t.teardown(() => removeDovecot(dovecot));
    const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
    const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${FOLDER}`;
    // One message of ours put there by another client, then a copy of it: UIDs 1 and 2.
    const messageId = '<dup-1@pivot-archive.invalid>';
    const sentAt = '2026-11-23T10:00:00.000Z';
    const raw = `Message-ID: ${messageId}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\nFrom: a@acme.example\r\nTo: ${mailbox}\r\nSubject: twice\r\n\r\nhello\r\n`;
    const { ImapFlow } = await import('imapflow');
    const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD } });
    await client.connect();
    await client.mailboxCreate(FOLDER).catch(() => undefined);
    const first = await client.append(FOLDER, raw, ['\\Seen'], new Date(sentAt));
    await client.logout();
    t.truthy(first && first.uid);
    const location = `${mailbox}/${FOLDER};UIDVALIDITY=${String(first && first.uidValidity)}/;UID=${first && first.uid}`;
    const [copyUid] = imaplib(dovecot.port, mailbox, [['copy', uidOf(location)]]);
    const sha256 = (await import('node:crypto')).createHash('sha256').update(raw).digest('hex');

    // The ledger as a sink that named the newest copy on a re-run wrote it.
    const expected = new ExpectedMessages();
    const line = (seq: number, outcome: 'delivered' | 'skipped', at: string) =>
      ({ seq, prev: '', record: 'outcome', runId: `r${seq}`, at: sentAt, exportId: 'e', itemId: 'item-1', conversationId: 'c', mailbox, sink: 'imap', outcome, messageId, sentAt, sha256, location: at }) as unknown as LedgerLine;
    expected.add(line(1, 'delivered', location), true);
    expected.add(line(2, 'skipped', withUid(location, copyUid!)), true);
    const wanted = [...expected.groups()].flat();
    expected.dispose();
    t.is(wanted.length, 1, 'one stored message');
    t.is(wanted[0]!.location, location, "the delivery's location");

    const reader = createImapReader(spec, { cwd: '/', env });
    await reader.open();
    try {
      // Even given both records apart (as the fold once left them), one copy answers for both.
      const records = [
        { messageId, sentAt, location },
        { messageId, sentAt, location: withUid(location, copyUid!) },
      ];
      const found = await reader.mailbox(mailbox, records, { sample: false });
      t.deepEqual(
        records.map((r) => found.held.get(r)?.location),
        [location, location],
      );
      t.deepEqual(
        found.unexpected.map((u) => u.location),
        [withUid(location, copyUid!)],
      );
      // Folded: the same.
      const one = await reader.mailbox(mailbox, wanted, { sample: false });
      t.is(one.held.get(wanted[0]!)?.location, location);
      t.deepEqual(
        one.unexpected.map((u) => u.location),
        [withUid(location, copyUid!)],
      );
    } finally {
      await reader.close();
    }
  });
});

test('the fold: records of one identity naming two IMAP or Graph copies are one message; a Maildir variant and one item staged by two exports stay apart', (t) => {
  const expected = new ExpectedMessages();
  const base = { prev: '', record: 'outcome', at: '2026-11-23T10:00:00.000Z', conversationId: 'c', sink: 's', messageId: '<m-1@pivot-archive.invalid>', sentAt: '2026-11-23T10:00:00.000Z', mailbox: 'a@acme.example' };
  const add = (seq: number, outcome: string, location: string, sha256: string, exportId = 'e1') =>
    expected.add({ ...base, seq, runId: `r${seq}`, exportId, itemId: 'i-1', outcome, location, sha256 } as unknown as LedgerLine, true);
  const name = `1795428000.P${'0'.repeat(32)}`;
  add(1, 'delivered', `a%40acme.example/.Pivot/cur/${name}.pivot-archive:2,S`, 'aa');
  add(2, 'delivered', `a%40acme.example/.Pivot/cur/${name}.C${'1'.repeat(16)}.pivot-archive:2,S`, 'bb');
  add(3, 'delivered', 'staging/e1/messages.json/0-aaaa.zip#000001.eml', 'cc');
  add(4, 'delivered', 'staging/e2/messages.json/0-bbbb.zip#000003.eml', 'dd', 'e2');
  // IMAP: delivered at UID 5, a re-run's skip at UID 9; Graph: delivered at one id, skipped at another.
  add(5, 'delivered', 'a@acme.example/INBOX/Pivot;UIDVALIDITY=7/;UID=5', 'ee');
  add(6, 'skipped', 'a@acme.example/INBOX/Pivot;UIDVALIDITY=7/;UID=9', 'ee');
  expected.add({ ...base, messageId: '<m-2@pivot-archive.invalid>', seq: 7, runId: 'r7', exportId: 'e1', itemId: 'i-2', outcome: 'delivered', location: 'a@acme.example/AAMk%3D/AAMkAAA%3D', sha256: 'ff' } as unknown as LedgerLine, true);
  expected.add({ ...base, messageId: '<m-2@pivot-archive.invalid>', seq: 8, runId: 'r8', exportId: 'e1', itemId: 'i-2', outcome: 'skipped', location: 'a@acme.example/AAMk%3D/AAMkBBB%3D', sha256: 'ff' } as unknown as LedgerLine, true);
  const wanted = [...expected.groups()].flat();
  expected.dispose();
  t.deepEqual(wanted.map((w) => w.sha256).sort(), ['aa', 'bb', 'cc', 'dd', 'ee', 'ff']);
  t.is(wanted.find((w) => w.sha256 === 'ee')!.location, 'a@acme.example/INBOX/Pivot;UIDVALIDITY=7/;UID=5');
  t.is(wanted.find((w) => w.sha256 === 'ff')!.location, 'a@acme.example/AAMk%3D/AAMkAAA%3D');
});
