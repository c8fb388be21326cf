// The conformance suite of src/sinks/SPEC.md, as composable cases: a sink's test file runs the
// cases that apply to it (`sinkConformance(harness, cases)`) with a harness that makes the sink,
// reads its store back by independent means (files, another IMAP client, the storage SDK; parsed
// with mailparser) and can break the store the way it really fails.
import test from 'ava';
import { simpleParser } from 'mailparser';
import type { Delivery } from '../../src/model.js';
import { closedError } from '../../src/sinks/lifecycle.js';
import type { OptionTable } from '../../src/sinks/options.js';
import { sha256Hex } from '../../src/hash.js';
import type { HeldMessage, Sink, Stored, StoreReader, WantedMessage, WriteOutcome } from '../../src/sinks/sink.js';
import { messageIdFor } from '../../src/transforms/mime/index.js';
import { chatDeliveries } from './chat.js';

/** The mailboxes the conformance cases write to, for harnesses that must create them. */
export const CONFORMANCE_MAILBOXES = ['jane@acme.example', 'a@acme.example', 'b@acme.example', ...[0, 1, 2, 3].map((n) => `user${n}@acme.example`)];

export interface SinkStore {
  /** A sink over this store; may be called again on the same store (a re-run). */
  create(): Promise<Sink>;
  read(mailbox: string): Promise<Buffer[]>;
  /**
   * Makes the store refuse writes to `mailbox` from now on, as it really fails (a file where a
   * folder must be, a mailbox the server cannot write, a container deleted), with the sink open;
   * `repair` makes it work again, to read back what it holds.
   */
  breakStore(): Promise<{ mailbox: string; repair(): Promise<void> }>;
  /** The bytes at a location a write resolved (`Stored.location`), read by independent means; undefined if nothing is there. */
  readAt(location: string): Promise<Buffer | undefined>;
  /** The sink's own reader of this store (`SinkFactory.reader`), for a sink that can be verified. */
  reader?(): Promise<StoreReader>;
  /** Changes to the store behind the sink's back, by independent means (for the reader's cases). */
  tamper?: {
    /** One byte of the message at `location` changed; its Message-ID and date kept. */
    alter(mailbox: string, location: string): Promise<void>;
    /** The message at `location` deleted. */
    remove(mailbox: string, location: string): Promise<void>;
    /** What a mail client does reading and flagging these messages (flags changed, Maildir files renamed or moved); absent where a store has no flags. */
    clientChanges?(mailbox: string, locations: string[]): Promise<void>;
  };
}

export interface SinkHarness {
  name: string;
  /** A fresh store for one test. */
  store(): Promise<SinkStore>;
  /** The sink's option table (its keys and bounds are what the config case tries). */
  options: OptionTable;
  /** A sink made from the spec the factory sees, with `query` as its options (no other option given). */
  withOptions(query: string): Promise<Sink>;
  /** A sink whose store cannot be used at all (a root that is a file, nothing listening). */
  unusable(): Promise<Sink>;
  /** Sinks given a secret in their spec or environment, each with the secret. */
  secrets?: { secret: string; create(): Promise<Sink> }[];
  /** A reader of a store that cannot be read at all (a root that does not exist, nothing listening). */
  unusableReader?(): Promise<StoreReader>;
  /** The reader's `mailboxes()` cannot list the store's mailboxes (IMAP has no command for it): it answers none. */
  readerListsNoMailboxes?: boolean;
}

export type ConformanceCase = (harness: SinkHarness) => void;

/**
 * Event `m_<n>` for `mailbox`. `nextDay`: the next day's export reusing the id, for an event sent
 * a few seconds after the first day's window closed (the hardest case to tell apart).
 */
export function delivery(n: number, mailbox = 'jane@acme.example', nextDay = false): Delivery {
  const sentAt = nextDay ? `2026-11-24T00:00:${String(10 + n).padStart(2, '0')}.000Z` : new Date(Date.parse('2026-11-23T23:59:00Z') + n * 10_000).toISOString();
  const exportId = nextDay ? 'conformance-2026-11-24' : 'conformance';
  return chatDeliveries({ id: `m_${n}`, sentAt, text: `message number ${n}`, exportId, index: n }, [mailbox])[0]!;
}

/** The outcomes of writes, in order. */
async function outcomes(writes: Promise<Stored>[]): Promise<WriteOutcome[]> {
  return (await Promise.all(writes)).map((stored) => stored.outcome);
}

async function messageIds(raws: Buffer[]): Promise<string[]> {
  return (await Promise.all(raws.map(async (raw) => (await simpleParser(raw)).messageId ?? ''))).sort();
}

export const delivers: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: a delivered message is in the store, byte for byte, as soon as write resolves`, async (t) => {
    const store = await harness.store();
    const sink = await store.create();
    await sink.open();
    const d = delivery(1);
    t.is((await sink.write(d)).outcome, 'delivered');
    const stored = await store.read(d.mailbox);
    t.is(stored.length, 1);
    t.true(stored[0]!.equals(d.message));
    await sink.close();
  });

export const skipsWhatItHolds: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: the same (mailbox, Message-ID) again is skipped, in the same run and in a re-run`, async (t) => {
    const store = await harness.store();
    const first = await store.create();
    await first.open();
    t.is((await first.write(delivery(1))).outcome, 'delivered');
    t.is((await first.write(delivery(1))).outcome, 'skipped');
    await first.close();
    const again = await store.create();
    await again.open();
    t.deepEqual(await outcomes([1, 2].map((n) => again.write(delivery(n)))), ['skipped', 'delivered']);
    await again.close();
    t.deepEqual(await messageIds(await store.read('jane@acme.example')), [messageIdFor('acme', 'm_1'), messageIdFor('acme', 'm_2')].sort());
  });

export const keepsReusedEventIds: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: an event id that another day's export reuses is another item, kept beside the first`, async (t) => {
    const store = await harness.store();
    const first = await store.create();
    await first.open();
    t.is((await first.write(delivery(1))).outcome, 'delivered');
    t.is((await first.write(delivery(1, undefined, true))).outcome, 'delivered');
    await first.close();
    const again = await store.create();
    await again.open();
    t.deepEqual(await outcomes([false, true].map((nextDay) => again.write(delivery(1, undefined, nextDay)))), ['skipped', 'skipped']);
    await again.close();
    const stored = await Promise.all((await store.read('jane@acme.example')).map((raw) => simpleParser(raw)));
    t.deepEqual(stored.map((m) => m.messageId), [messageIdFor('acme', 'm_1'), messageIdFor('acme', 'm_1')]);
    t.deepEqual(stored.map((m) => m.date?.toISOString()).sort(), ['2026-11-23T23:59:10.000Z', '2026-11-24T00:00:11.000Z']);
  });

/** Delivery `n` as a corrected re-delivery of its export has it: the same event id and sentAt, another text. */
export function correctedDelivery(n: number, mailbox = 'jane@acme.example'): Delivery {
  const first = delivery(n, mailbox);
  return chatDeliveries({ id: `m_${n}`, sentAt: new Date(first.internalDate).toISOString(), text: `message number ${n}, corrected (a text that only grew at its end)`, exportId: 'conformance', index: n }, [mailbox])[0]!;
}

export const keepsCorrectedVersions: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: a corrected re-delivery (the same event id and sentAt, other content) is stored beside the first, never skipped for it; each version again is skipped`, async (t) => {
    const store = await harness.store();
    const [original, corrected] = [delivery(1), correctedDelivery(1)];
    t.is(original.messageId, corrected.messageId);
    t.false(original.message.equals(corrected.message));
    const first = await store.create();
    await first.open();
    const stored = await first.write(original);
    t.is(stored.outcome, 'delivered');
    await first.close();
    const again = await store.create();
    await again.open();
    const beside = await again.write(corrected);
    t.is(beside.outcome, 'delivered', 'the corrected version is stored');
    if (stored.location !== undefined) t.not(beside.location, stored.location);
    t.deepEqual(await outcomes([again.write(original), again.write(corrected)]), ['skipped', 'skipped']);
    await again.close();
    const third = await store.create();
    await third.open();
    const skips = await Promise.all([third.write(corrected), third.write(original)]);
    await third.close();
    t.deepEqual(skips.map((s) => s.outcome), ['skipped', 'skipped'], 'nothing stored a third time');
    if (stored.location !== undefined) t.deepEqual(skips.map((s) => s.location), [beside.location, stored.location], 'each version skipped to its own copy');
    const held = await Promise.all((await store.read('jane@acme.example')).map((raw) => simpleParser(raw)));
    t.deepEqual(held.map((m) => m.messageId), [original.messageId, original.messageId]);
    t.deepEqual(held.map((m) => (m.text ?? '').trim()).sort(), ['message number 1', 'message number 1, corrected (a text that only grew at its end)']);
  });

export const closeWaitsForWrites: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: close waits for every write in flight, and a second close for the same end`, async (t) => {
    const store = await harness.store();
    const sink = await store.create();
    await sink.open();
    const writes = Array.from({ length: 40 }, (_, n) => sink.write(delivery(n, `user${n % 4}@acme.example`)));
    await Promise.all([sink.close(), sink.close()]);
    t.deepEqual(await outcomes(writes), Array(40).fill('delivered'));
    for (let m = 0; m < 4; m++) t.is((await store.read(`user${m}@acme.example`)).length, 10);
    await sink.close();
  });

export const keepsMailboxesApart: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: mailboxes are kept apart`, async (t) => {
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

export const honoursMaxInFlight: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: kept at maxInFlight writes in flight (never more, as the pipeline keeps them), every write settles without waiting for close`, async (t) => {
    t.timeout(180_000);
    const store = await harness.store();
    const sink = await store.create();
    await sink.open();
    const limit = sink.maxInFlight;
    t.true(Number.isInteger(limit) && limit >= 1, `maxInFlight ${limit}`);
    // The pipeline's loop, instrumented: a write starts only while fewer than `limit` are unsettled.
    const total = limit + 20;
    const outcomes: string[] = [];
    let started = 0;
    let inFlight = 0;
    let peak = 0;
    await new Promise<void>((resolve, reject) => {
      const next = () => {
        if (started === total) {
          if (inFlight === 0) resolve();
          return;
        }
        const n = started++;
        inFlight++;
        peak = Math.max(peak, inFlight);
        sink.write(delivery(n, `user${n % 4}@acme.example`)).then(({ outcome }) => {
          outcomes.push(outcome);
          inFlight--;
          next();
        }, reject);
      };
      for (let i = 0; i < limit; i++) next();
    });
    t.is(peak, limit, 'the sink took maxInFlight writes at once');
    t.is(outcomes.length, total);
    t.true(outcomes.every((o) => o === 'delivered'));
    await sink.close();
    const stored = await Promise.all([0, 1, 2, 3].map(async (m) => (await store.read(`user${m}@acme.example`)).length));
    t.is(stored.reduce((a, b) => a + b, 0), total);
  });

export const refusesOutsideOpen: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: write before open or after close is refused with the shared E_SINK_CLOSED error, nothing stored`, async (t) => {
    const store = await harness.store();
    const sink = await store.create();
    await t.throwsAsync(sink.write(delivery(1)), { code: 'E_SINK_CLOSED', message: closedError(sink.kind, 'write before open()').message });
    await sink.open();
    await sink.close();
    await t.throwsAsync(sink.write(delivery(2)), { code: 'E_SINK_CLOSED', message: closedError(sink.kind, 'write after close()').message });
    await t.throwsAsync(sink.open(), { code: 'E_SINK_CLOSED', message: closedError(sink.kind, 'open() after close()').message });
    t.is((await store.read('jane@acme.example')).length, 0);
  });

export const openFindsUnusableStore: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: open() on a store that cannot be used is E_SINK_UNAVAILABLE, and the sink stays unopened`, async (t) => {
    t.timeout(60_000);
    const sink = await harness.unusable();
    await t.throwsAsync(sink.open(), { code: 'E_SINK_UNAVAILABLE' });
    await t.throwsAsync(sink.write(delivery(1)), { code: 'E_SINK_CLOSED', message: closedError(sink.kind, 'write before open()').message });
    await sink.close();
  });

export const rejectsWhatItCannotStore: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: a store that refuses writes makes write reject, never resolve, and nothing is stored`, async (t) => {
    t.timeout(120_000);
    const store = await harness.store();
    const sink = await store.create();
    await sink.open();
    const broken = await store.breakStore();
    const results = await Promise.allSettled([1, 2, 3].map((n) => sink.write(delivery(n, broken.mailbox))));
    for (const result of results) {
      t.is(result.status, 'rejected', `resolved ${JSON.stringify((result as PromiseFulfilledResult<Stored>).value)}`);
      if (result.status === 'rejected') t.true(result.reason instanceof Error);
    }
    if (results[0]?.status === 'rejected') t.log(`rejected: ${(results[0].reason as Error).message}`);
    await sink.close();
    await broken.repair();
    t.deepEqual(await store.read(broken.mailbox), []);
  });

export const configErrorsByCode: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: unknown options and values out of bounds are E_SINK_CONFIG, before any I/O`, async (t) => {
    const keys = Object.keys(harness.options);
    for (const typed of ['bogus', 'fo%6Fder2', keys[0]!.toUpperCase()]) {
      const err = await t.throwsAsync(harness.withOptions(`${typed}=1`), { code: 'E_SINK_CONFIG' }, typed);
      t.true(err?.message.includes(`unknown option ${JSON.stringify(typed)}`), `names ${typed} as typed: ${err?.message}`);
      for (const key of keys) t.true(err?.message.includes(key), `lists ${key}: ${err?.message}`);
    }
    await t.throwsAsync(harness.withOptions(`${keys[0]}=&${keys[0]}=`), { code: 'E_SINK_CONFIG', message: /given twice/ });
    for (const [name, option] of Object.entries(harness.options)) {
      const wrong =
        option.type === 'integer' ? [String(option.min - 1), String(option.max + 1), '1.5', 'x'] : option.type === 'choice' ? ['not-a-choice', option.default.toUpperCase()] : [];
      for (const value of wrong) {
        if (option.type === 'choice' && option.choices.includes(value)) continue;
        await t.throwsAsync(harness.withOptions(`${name}=${value}`), { code: 'E_SINK_CONFIG', message: new RegExp(`${name} must be`) }, `${name}=${value}`);
      }
    }
  });

export const noSecretInDescription: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: description never holds a password or key given in the spec or the environment`, async (t) => {
    t.true((harness.secrets ?? []).length > 0, 'the harness gives sinks with secrets');
    for (const { secret, create } of harness.secrets ?? []) {
      const sink = await create();
      for (const form of new Set([secret, encodeURIComponent(secret)])) t.false(sink.description.includes(form), `${sink.description} holds the secret`);
    }
  });

export const locatesWhatItStores: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: the location a write resolves names where the store holds those exact bytes, delivered or skipped (same run and re-run)`, async (t) => {
    const store = await harness.store();
    const first = await store.create();
    await first.open();
    const [d1, d2, other] = [delivery(1), delivery(2), delivery(1, 'a@acme.example')];
    const written = await Promise.all([d1, d2, other].map((d) => first.write(d)));
    t.deepEqual(written.map((s) => s.outcome), ['delivered', 'delivered', 'delivered']);
    const locations = written.map((s) => s.location);
    t.is(new Set(locations).size, 3, `three places: ${locations.join(' ')}`);
    const again = await first.write(d1);
    t.deepEqual(again, { outcome: 'skipped', location: locations[0] });
    // The same item twice at once: one stores it, the other is skipped naming the same place.
    const twice = await Promise.all([first.write(delivery(3)), first.write(delivery(3))]);
    t.deepEqual(twice.map((s) => s.outcome).sort(), ['delivered', 'skipped']);
    t.is(twice[0]!.location, twice[1]!.location);
    t.true((await store.readAt(twice[0]!.location!))?.equals(delivery(3).message));
    await first.close();
    const rerun = await store.create();
    await rerun.open();
    const skipped = await Promise.all([d1, d2, other].map((d) => rerun.write(d)));
    await rerun.close();
    t.deepEqual(skipped, written.map((s) => ({ outcome: 'skipped', location: s.location })));
    for (const [i, d] of [d1, d2, other].entries()) {
      const held = await store.readAt(locations[i]!);
      t.true(held?.equals(d.message), `${locations[i]} holds ${d.mailbox}'s m_${i}`);
    }
  });

/** The message with one byte of its body changed (a letter or digit, so it stays a message), its header kept. */
export function alterOneByte(raw: Buffer): Buffer {
  const altered = Buffer.from(raw);
  const body = raw.indexOf('\r\n\r\n') + 4;
  let i = body;
  while (i < altered.length && !/[A-Za-z0-9]/.test(String.fromCharCode(altered[i]!))) i++;
  if (body < 4 || i >= altered.length) throw new Error('no body byte to change');
  altered[i] = altered[i] === 0x41 ? 0x42 : 0x41;
  return altered;
}

/** A message the ledger would list: what was delivered and where the write said it is. */
function wantedOf(d: Delivery, stored: Stored | undefined): WantedMessage {
  return { messageId: d.messageId, sentAt: new Date(d.internalDate).toISOString(), ...(stored?.location === undefined ? {} : { location: stored.location }) };
}

/** Three messages delivered to jane and one to a, then the reader opened: what the reader's cases start from. */
async function delivered(harness: SinkHarness) {
  const store = await harness.store();
  const sink = await store.create();
  await sink.open();
  const deliveries = [1, 2, 3].map((n) => delivery(n));
  const stored = await Promise.all(deliveries.map((d) => sink.write(d)));
  await sink.write(delivery(4, 'a@acme.example'));
  await sink.close();
  const reader = await store.reader!();
  await reader.open();
  const wanted = deliveries.map((d, i) => wantedOf(d, stored[i]));
  return { store, reader, deliveries, stored, wanted, tamper: store.tamper! };
}

/** Whether `held` is `d` byte for byte (sha256 and size). */
function intact(held: HeldMessage | undefined, d: Delivery): boolean {
  return held !== undefined && held.sha256 === sha256Hex(d.message) && held.size === d.message.length && held.messageId === d.messageId;
}

export const readerFindsWhatItHolds: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: the reader finds every message delivered, byte for byte, by location and by identity; nothing unexpected`, async (t) => {
    const { reader, deliveries, stored, wanted } = await delivered(harness);
    for (const sample of [false, true]) {
      const { held, unexpected } = await reader.mailbox('jane@acme.example', wanted, { sample });
      t.is(held.size, 3);
      wanted.forEach((w, i) => {
        t.true(intact(held.get(w), deliveries[i]!), `m_${i + 1} intact (sample ${sample})`);
        t.is(held.get(w)?.location, stored[i]!.location);
        t.is(held.get(w)?.sentAt, w.sentAt);
      });
      t.deepEqual(unexpected, []);
    }
    // The ledger says nothing of where: found by Message-ID and sentAt, as the sink's presence check does.
    const unlocated = wanted.map(({ location: _, ...w }) => w);
    for (const sample of [false, true]) {
      const { held, unexpected } = await reader.mailbox('jane@acme.example', unlocated, { sample });
      unlocated.forEach((w, i) => t.true(intact(held.get(w), deliveries[i]!), `m_${i + 1} found without a location (sample ${sample})`));
      t.deepEqual(unexpected, []);
    }
    t.deepEqual(await reader.mailboxes(), harness.readerListsNoMailboxes ? [] : ['a@acme.example', 'jane@acme.example']);
    const none = await reader.mailbox('nobody-here@acme.example', [wantedOf(delivery(9, 'nobody-here@acme.example'), undefined)], { sample: false });
    t.deepEqual([none.held.size, none.unexpected], [0, []]);
    await reader.close();
  });

export const readerSeesAlteredBytes: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: a stored message with one byte changed is reported with another sha256`, async (t) => {
    const { reader, deliveries, wanted, tamper } = await delivered(harness);
    await tamper.alter('jane@acme.example', wanted[1]!.location!);
    for (const sample of [false, true]) {
      const { held, unexpected } = await reader.mailbox('jane@acme.example', wanted, { sample });
      t.true(intact(held.get(wanted[0]!), deliveries[0]!));
      t.true(intact(held.get(wanted[2]!), deliveries[2]!));
      const altered = held.get(wanted[1]!);
      t.truthy(altered, 'the altered message is still found');
      t.not(altered?.sha256, sha256Hex(deliveries[1]!.message));
      t.is(altered?.messageId, deliveries[1]!.messageId);
      t.deepEqual(unexpected, []);
    }
    await reader.close();
  });

export const readerMissesRemoved: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: a message deleted from the store is not held`, async (t) => {
    const { reader, deliveries, wanted, tamper } = await delivered(harness);
    await tamper.remove('jane@acme.example', wanted[0]!.location!);
    for (const sample of [false, true]) {
      const { held, unexpected } = await reader.mailbox('jane@acme.example', wanted, { sample });
      t.false(held.has(wanted[0]!));
      t.is(held.size, 2);
      t.true(intact(held.get(wanted[1]!), deliveries[1]!));
      t.true(intact(held.get(wanted[2]!), deliveries[2]!));
      t.deepEqual(unexpected, []);
    }
    await reader.close();
  });

export const readerIgnoresClientFlags: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: messages a mail client read, flagged or moved between new and cur are still intact`, async (t) => {
    const { reader, deliveries, wanted, tamper } = await delivered(harness);
    await tamper.clientChanges!('jane@acme.example', wanted.map((w) => w.location!));
    for (const sample of [false, true]) {
      const { held, unexpected } = await reader.mailbox('jane@acme.example', wanted, { sample });
      wanted.forEach((w, i) => t.true(intact(held.get(w), deliveries[i]!), `m_${i + 1} intact (sample ${sample})`));
      t.deepEqual(unexpected, []);
    }
    await reader.close();
  });

export const readerFindsUnexpected: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: a message of ours the ledger does not list is unexpected (not looked for in a sample)`, async (t) => {
    const { reader, deliveries, stored, wanted } = await delivered(harness);
    const { held, unexpected } = await reader.mailbox('jane@acme.example', wanted.slice(0, 2), { sample: false });
    t.is(held.size, 2);
    t.deepEqual(unexpected, [{ messageId: deliveries[2]!.messageId, sentAt: wanted[2]!.sentAt, location: stored[2]!.location! }]);
    const sampled = await reader.mailbox('jane@acme.example', wanted.slice(0, 1), { sample: true });
    t.is(sampled.held.size, 1);
    t.deepEqual(sampled.unexpected, []);
    await reader.close();
  });

export const readerOpensOnlyWhatIsThere: ConformanceCase = (harness) =>
  test(`${harness.name} conformance: a reader of a store that cannot be read fails open() with E_SINK_UNAVAILABLE`, async (t) => {
    t.timeout(60_000);
    const reader = await harness.unusableReader!();
    await t.throwsAsync(reader.open(), { code: 'E_SINK_UNAVAILABLE' });
    await reader.close();
  });

/** The reader's cases, for a sink that can be verified (`reader` and `tamper` on its store, `unusableReader`). */
export const readerCases: ConformanceCase[] = [readerFindsWhatItHolds, readerSeesAlteredBytes, readerMissesRemoved, readerFindsUnexpected, readerOpensOnlyWhatIsThere];

/** Every case, for a sink that has secrets to keep out of its description. */
export const everyCase: ConformanceCase[] = [
  delivers,
  locatesWhatItStores,
  skipsWhatItHolds,
  keepsReusedEventIds,
  keepsCorrectedVersions,
  closeWaitsForWrites,
  keepsMailboxesApart,
  honoursMaxInFlight,
  refusesOutsideOpen,
  openFindsUnusableStore,
  rejectsWhatItCannotStore,
  configErrorsByCode,
  noSecretInDescription,
];

export function sinkConformance(harness: SinkHarness, cases: ConformanceCase[]): void {
  for (const register of cases) register(harness);
}

/**
 * Registers the tests of a server the suite needs: `register` when it is there; when `missing`
 * says why it is not, in CI one failing test naming it, elsewhere a visible skip and a warning.
 */
export function withServer(what: string, missing: string | undefined, register: () => void): void {
  if (missing === undefined) return register();
  if (process.env.CI) {
    test(`${what} is there for these tests`, (t) => t.fail(missing));
    return;
  }
  console.warn(`\n*** ${what} tests skipped: ${missing} ***\n`);
  test.skip(`${what} tests skipped: ${missing}`, () => undefined);
}
