// The IMAP sink's presence pass (src/sinks/imap/SPEC.md, "Presence"): what a folder holds is read
// once per (mailbox, UTC day) and kept for the run. Correctness only; the speed is in the bench.
import test from 'ava';
import { ImapFlow } from 'imapflow';
import { createImapSink, type ImapSink } from '../src/sinks/imap/index.js';
import type { Delivery } from '../src/model.js';
import type { Stored } from '../src/sinks/sink.js';
import { ADMIN, ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { chatDeliveries } from './helpers/chat.js';
import { withServer } from './helpers/sink-conformance.js';

const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
const DAY = '2026-11-23';

/** A chat message of event `n` for `mailbox`, sent at `sentAt` (its Date header and INTERNALDATE). */
function at(n: number, mailbox: string, sentAt: string): Delivery {
  return chatDeliveries({ id: `m_${n}`, sentAt, text: `message ${n}`, exportId: 'presence', index: n }, [mailbox])[0]!;
}

/** Event `n` at second `n` past 10:00 on DAY. */
function onDay(n: number, mailbox: string): Delivery {
  return at(n, mailbox, new Date(Date.parse(`${DAY}T10:00:00Z`) + n * 1000).toISOString());
}

/** Message-IDs held, with how many copies of each (with their Date), read back independently. */
async function copies(dovecot: Dovecot, mailbox: string, folder: string): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (const m of await fetchFolder(dovecot.port, mailbox, folder)) {
    const key = `${m.messageId} ${m.internalDate.toISOString()}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** Appends raw messages to a mailbox's folder as another writer would (its own master login), creating the folder. */
async function otherWriter(dovecot: Dovecot, mailbox: string, folder: string, messages: { raw: Buffer; time: number }[]): Promise<number[]> {
  const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${mailbox}*${ADMIN}`, pass: ADMIN_PASSWORD } });
  await client.connect();
  try {
    if (!(await client.list()).some((m) => m.path === folder)) await client.mailboxCreate(folder);
    const uids: number[] = [];
    for (const m of messages) {
      const appended = await client.append(folder, m.raw, ['\\Seen'], new Date(m.time));
      if (!appended || appended.uid === undefined) throw new Error('the server gave no APPENDUID');
      uids.push(appended.uid);
    }
    return uids;
  } finally {
    await client.logout();
  }
}

/** A message with this Message-ID and Date (not one of the sink's). */
function raw(messageId: string, time: number, subject = 'other'): Buffer {
  return Buffer.from(`Message-ID: ${messageId}\r\nDate: ${new Date(time).toUTCString()}\r\nFrom: x@acme.example\r\nSubject: ${subject}\r\n\r\nhello\r\n`);
}

async function writeAll(sink: ImapSink, deliveries: Delivery[]): Promise<Stored[]> {
  await sink.open();
  const stored = await Promise.all(deliveries.map((d) => sink.write(d)));
  await sink.close();
  return stored;
}

withServer('Dovecot (IMAP presence)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  const mailboxes = ['p1@acme.example', 'p2@acme.example', 'p3@acme.example', 'r1@acme.example', 'r2@acme.example', 'r3@acme.example', 'w@acme.example', 'x@acme.example'];
  let dovecot: Dovecot;
  test.before(async () => {
    dovecot = await startDovecot(mailboxes);
  });
  test.after.always(async () => {
    if (dovecot) await removeDovecot(dovecot);
  });
  const spec = (folder: string, extra = '') => `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${folder}&probe=p1@acme.example${extra}`;

  test('a re-run appends nothing: every write skipped, at the location the first run gave, mostly from memory', async (t) => {
    const folder = 'INBOX/Rerun';
    const deliveries = ['p1@acme.example', 'p2@acme.example', 'p3@acme.example'].flatMap((mailbox) => Array.from({ length: 40 }, (_, n) => onDay(n, mailbox)));
    const first = await writeAll(createImapSink(spec(folder), { env }), deliveries);
    t.true(first.every((s) => s.outcome === 'delivered' && s.location !== undefined));
    const sink = createImapSink(spec(folder), { env });
    const again = await writeAll(sink, deliveries);
    t.deepEqual(again.map((s) => s.outcome), deliveries.map(() => 'skipped'));
    t.deepEqual(again.map((s) => s.location), first.map((s) => s.location));
    for (const mailbox of ['p1@acme.example', 'p2@acme.example', 'p3@acme.example']) {
      const held = await copies(dovecot, mailbox, folder);
      t.is(held.size, 40);
      t.true([...held.values()].every((c) => c === 1));
    }
    // One window pass per mailbox (the day), its 40 headers each: nothing searched per batch.
    t.is(sink.stats.passes, 3);
    t.is(sink.stats.headersFetched, 120);
  });

  test('Dovecot restarted in the middle of a run: the retried batches and a re-run leave every message exactly once', async (t) => {
    t.timeout(120_000);
    const own = await startDovecot(['r1@acme.example', 'r2@acme.example', 'r3@acme.example']);
    t.teardown(() => removeDovecot(own));
    const folder = 'INBOX/Restart';
    const ownSpec = `imap://archiver@127.0.0.1:${own.port}/?tls=none&folder=${folder}&probe=r1@acme.example&batch=10&retries=20&retryDelay=200`;
    const deliveries = Array.from({ length: 600 }, (_, n) => onDay(n, `r${(n % 3) + 1}@acme.example`));
    const sink = createImapSink(ownSpec, { env });
    await sink.open();
    let settled = 0;
    const writes = deliveries.map((d) =>
      sink.write(d).then(
        (s) => (settled++, s),
        (e: Error) => (settled++, e),
      ),
    );
    while (settled < 100) await new Promise((resolve) => setTimeout(resolve, 5));
    await own.stop();
    await new Promise((resolve) => setTimeout(resolve, 500));
    await own.start();
    const results = await Promise.all(writes);
    await sink.close();
    const rerun = await writeAll(createImapSink(ownSpec, { env }), deliveries);
    t.true(rerun.every((s) => s.outcome === 'skipped' || s.outcome === 'delivered'));
    let total = 0;
    for (const mailbox of ['r1@acme.example', 'r2@acme.example', 'r3@acme.example']) {
      const held = await copies(own, mailbox, folder);
      t.is(held.size, 200, mailbox);
      t.deepEqual([...held.values()].filter((c) => c !== 1), [], `${mailbox}: no message twice`);
      total += held.size;
    }
    t.is(total, 600);
    // Everything the first run stored is skipped by the re-run, at the location it gave.
    results.forEach((r, i) => {
      if (!(r instanceof Error) && r.location !== undefined) t.is(rerun[i]!.location, r.location);
    });
  });

  test('a folder already holding unrelated messages, the same Message-ID on another day and at another second, and the same item: only the item is skipped', async (t) => {
    const folder = 'INBOX/Prefilled';
    const mailbox = 'w@acme.example';
    const mine = [0, 1, 2, 3].map((n) => onDay(n, mailbox));
    const [same, otherDay, otherSecond, plain] = mine as [Delivery, Delivery, Delivery, Delivery];
    const dayBefore = otherDay.internalDate - 86_400_000;
    const uids = await otherWriter(dovecot, mailbox, folder, [
      { raw: raw('<unrelated-1@elsewhere.example>', same.internalDate), time: same.internalDate },
      { raw: raw('<unrelated-2@elsewhere.example>', plain.internalDate + 5_000), time: plain.internalDate + 5_000 },
      // The same Message-ID a day earlier (another day's export reused the event id) ...
      { raw: raw(otherDay.messageId, dayBefore), time: dayBefore },
      // ... and the same day, another second: neither is the item.
      { raw: raw(otherSecond.messageId, otherSecond.internalDate + 2_000), time: otherSecond.internalDate + 2_000 },
      // The item itself, stored by an earlier run.
      { raw: same.message, time: same.internalDate },
    ]);
    const stored = await writeAll(createImapSink(spec(folder), { env }), mine);
    t.deepEqual(stored.map((s) => s.outcome), ['skipped', 'delivered', 'delivered', 'delivered']);
    t.regex(stored[0]!.location!, new RegExp(`;UID=${uids[4]}$`));
    const held = await copies(dovecot, mailbox, folder);
    t.is(held.size, 8);
    t.true([...held.values()].every((c) => c === 1));
  });

  test('the presence pass reads only the window: messages on other days are not fetched; one appended by another writer since the pass is found, not duplicated', async (t) => {
    const folder = 'INBOX/Window';
    const mailbox = 'x@acme.example';
    const day = Date.parse(`${DAY}T00:00:00Z`);
    // A year of other mail (30 messages, none within a day of DAY) and 3 on DAY.
    const elsewhere = Array.from({ length: 30 }, (_, i) => day - (2 + i * 11) * 86_400_000 + 3_600_000);
    await otherWriter(dovecot, mailbox, folder, [
      ...elsewhere.map((time, i) => ({ raw: raw(`<old-${i}@elsewhere.example>`, time), time })),
      ...[1, 2, 3].map((h) => ({ raw: raw(`<today-${h}@elsewhere.example>`, day + h * 3_600_000), time: day + h * 3_600_000 })),
    ]);
    const sink = createImapSink(spec(folder, '&batch=5'), { env });
    await sink.open();
    const firstBatch = await Promise.all([0, 1, 2, 3, 4].map((n) => sink.write(onDay(n, mailbox))));
    t.deepEqual(firstBatch.map((s) => s.outcome), ['delivered', 'delivered', 'delivered', 'delivered', 'delivered']);
    t.is(sink.stats.passes, 1);
    t.is(sink.stats.headersFetched, 3, 'only the 3 messages of that day were read');
    // Another writer stores event 5 while the sink runs (after its pass): the sink must find it.
    const late = onDay(5, mailbox);
    const [lateUid] = await otherWriter(dovecot, mailbox, folder, [{ raw: late.message, time: late.internalDate }]);
    const next = await Promise.all([late, onDay(6, mailbox)].map((d) => sink.write(d)));
    await sink.close();
    t.is(next[0]!.outcome, 'skipped');
    t.regex(next[0]!.location!, new RegExp(`;UID=${lateUid}$`));
    t.is(next[1]!.outcome, 'delivered');
    t.is(sink.stats.passes, 1);
    t.is(sink.stats.headersFetched, 4, 'the catch-up read the one message appended since, nothing else');
    const held = await copies(dovecot, mailbox, folder);
    t.is(held.size, 33 + 7);
    t.true([...held.values()].every((c) => c === 1));
  });
});
