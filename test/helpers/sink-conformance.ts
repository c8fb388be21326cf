// The one conformance suite every sink passes (see src/sinks/SPEC.md). A sink's test file
// calls `sinkConformance` with a harness that makes the sink and reads its store back by
// independent means (files, another IMAP client, the storage SDK), parsed with mailparser.
import test from 'ava';
import { simpleParser } from 'mailparser';
import type { Delivery } from '../../src/model.js';
import type { Sink } from '../../src/sinks/sink.js';
import { buildMessage, messageIdFor } from '../../src/transforms/mime/index.js';

export interface SinkHarness {
  name: string;
  /** A fresh store for one test; `create` may be called again on the same store (a re-run). */
  store(): Promise<{ create(): Promise<Sink>; read(mailbox: string): Promise<Buffer[]> }>;
}

/**
 * Event `m_<n>` for `mailbox`. `nextDay`: the next day's export reusing the id, for an event sent
 * a few seconds after the first day's window closed (the hardest case to tell apart).
 */
export function delivery(n: number, mailbox = 'jane@acme.example', nextDay = false): Delivery {
  const user = { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' };
  const sentAt = nextDay ? `2026-11-24T00:00:${String(10 + n).padStart(2, '0')}.000Z` : new Date(Date.parse('2026-11-23T23:59:00Z') + n * 10_000).toISOString();
  const exportId = nextDay ? 'conformance-2026-11-24' : 'conformance';
  const message = buildMessage(
    {
      id: `m_${n}`,
      type: 'message',
      sentAt,
      conversation: { id: 'c_1', type: 'room', name: 'Conformance', members: ['u_1'] },
      sender: user,
      text: `message number ${n}`,
      attachments: [],
      participants: [user],
      headers: {},
      raw: {},
      position: { file: 0, index: n },
    },
    { tenant: 'acme', exportId },
    [],
  );
  return { mailbox, exportId, position: { file: 0, index: n }, itemId: `m_${n}`, conversationId: 'c_1', messageId: messageIdFor('acme', `m_${n}`), internalDate: Date.parse(sentAt), message };
}

async function messageIds(raws: Buffer[]): Promise<string[]> {
  return (await Promise.all(raws.map(async (raw) => (await simpleParser(raw)).messageId ?? ''))).sort();
}

export function sinkConformance(harness: SinkHarness): void {
  const name = harness.name;

  test(`${name} conformance: a delivered message is in the store, byte for byte, as soon as write resolves`, async (t) => {
    const store = await harness.store();
    const sink = await store.create();
    await sink.open();
    const d = delivery(1);
    t.is(await sink.write(d), 'delivered');
    const stored = await store.read(d.mailbox);
    t.is(stored.length, 1);
    t.true(stored[0]!.equals(d.message));
    await sink.close();
  });

  test(`${name} conformance: the same (mailbox, Message-ID) again is skipped, in the same run and in a re-run`, async (t) => {
    const store = await harness.store();
    const first = await store.create();
    await first.open();
    t.is(await first.write(delivery(1)), 'delivered');
    t.is(await first.write(delivery(1)), 'skipped');
    await first.close();
    const again = await store.create();
    await again.open();
    t.deepEqual(await Promise.all([1, 2].map((n) => again.write(delivery(n)))), ['skipped', 'delivered']);
    await again.close();
    t.deepEqual(await messageIds(await store.read('jane@acme.example')), [messageIdFor('acme', 'm_1'), messageIdFor('acme', 'm_2')].sort());
  });

  test(`${name} conformance: an event id that another day's export reuses is another item, kept beside the first`, async (t) => {
    const store = await harness.store();
    const first = await store.create();
    await first.open();
    t.is(await first.write(delivery(1)), 'delivered');
    t.is(await first.write(delivery(1, undefined, true)), 'delivered');
    await first.close();
    const again = await store.create();
    await again.open();
    t.deepEqual(await Promise.all([false, true].map((nextDay) => again.write(delivery(1, undefined, nextDay)))), ['skipped', 'skipped']);
    await again.close();
    const stored = await Promise.all((await store.read('jane@acme.example')).map((raw) => simpleParser(raw)));
    t.deepEqual(stored.map((m) => m.messageId), [messageIdFor('acme', 'm_1'), messageIdFor('acme', 'm_1')]);
    t.deepEqual(stored.map((m) => m.date?.toISOString()).sort(), ['2026-11-23T23:59:10.000Z', '2026-11-24T00:00:11.000Z']);
  });

  test(`${name} conformance: close waits for every write in flight`, async (t) => {
    const store = await harness.store();
    const sink = await store.create();
    await sink.open();
    const writes = Array.from({ length: 40 }, (_, n) => sink.write(delivery(n, `user${n % 4}@acme.example`)));
    await sink.close();
    t.deepEqual(await Promise.all(writes), Array(40).fill('delivered'));
    for (let m = 0; m < 4; m++) t.is((await store.read(`user${m}@acme.example`)).length, 10);
  });

  test(`${name} conformance: mailboxes are kept apart`, async (t) => {
    const store = await harness.store();
    const sink = await store.create();
    await sink.open();
    await sink.write(delivery(1, 'a@acme.example'));
    await sink.write(delivery(1, 'b@acme.example'));
    await sink.write(delivery(2, 'b@acme.example'));
    await sink.close();
    t.deepEqual(await messageIds(await store.read('a@acme.example')), [messageIdFor('acme', 'm_1')]);
    t.is((await store.read('b@acme.example')).length, 2);
  });

  test(`${name} conformance: write before open or after close is refused, not lost silently`, async (t) => {
    const store = await harness.store();
    const sink = await store.create();
    await t.throwsAsync(sink.write(delivery(1)), { code: 'E_SINK_CLOSED' } as never);
    await sink.open();
    await sink.close();
    await t.throwsAsync(sink.write(delivery(2)), { code: 'E_SINK_CLOSED' } as never);
    t.is((await store.read('jane@acme.example')).length, 0);
  });
}
