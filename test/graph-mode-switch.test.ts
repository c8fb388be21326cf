// The Graph sink switched between mode=json and mode=importMime on one folder (against the Graph
// stand-in): a message of the item made in the other mode is the item, so nothing is made twice.
// An imported message carries no stamp (its version cannot be told) and stands for any version; an
// importMime delivery is compared by its own version (the sha256 of its MIME without the export id),
// so a stamped copy of another version does not stand for it.
import test from 'ava';
import { createGraphSink } from '../src/sinks/graph/index.js';
import { startGraphStandin, type GraphStandin } from './helpers/graph-standin.js';
import { startIdentityEndpoint, type IdentityEndpoint } from './helpers/identity-endpoint.js';
import { correctedDelivery, delivery } from './helpers/sink-conformance.js';

const TENANT = '11111111-2222-3333-4444-555555555555';
let standin: GraphStandin;
let identity: IdentityEndpoint;

test.before(async () => {
  standin = await startGraphStandin({ tenant: TENANT, mailboxes: ['switch@acme.example', 'versions@acme.example'] });
  identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite', 'Mail-Advanced.ReadWrite.All'] });
  Object.assign(process.env, identity.env);
});
test.after.always(async () => {
  await standin?.close();
  await identity?.close();
});

const specOf = (endpoint: string, folder: string, mode: 'json' | 'importMime') => `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${endpoint}&retryDelay=20&folder=${folder}&mode=${mode}`;

test('graph json, then importMime, then json again on one folder: each item is made once, and each later run skips it at the first copy', async (t) => {
  const mailbox = 'switch@acme.example';
  const items = [1, 2, 3].map((n) => delivery(n, mailbox));
  let first: (string | undefined)[] = [];
  for (const [run, mode] of (['json', 'importMime', 'json'] as const).entries()) {
    const sink = createGraphSink(specOf(standin.url, 'Inbox/Switch', mode));
    await sink.open();
    const stored = await Promise.all(items.map((d) => sink.write(d)));
    await sink.close();
    if (run === 0) first = stored.map((s) => s.location);
    t.deepEqual(stored.map((s) => s.outcome), Array(3).fill(run === 0 ? 'delivered' : 'skipped'), mode);
    t.deepEqual(stored.map((s) => s.location), first, mode);
    t.is(sink.copiesRemoved, 0, mode);
    t.is(standin.messagesIn(mailbox, 'Inbox/Switch').length, 3, `${mode}: each item once`);
  }
});

test('graph importMime after json: each version skipped at its own copy; a corrected version json did not store is made beside the first', async (t) => {
  const mailbox = 'versions@acme.example';
  const json = createGraphSink(specOf(standin.url, 'Inbox/Versions', 'json'));
  await json.open();
  const [v1, v2] = [await json.write(delivery(1, mailbox)), await json.write(correctedDelivery(1, mailbox))];
  const only = await json.write(delivery(2, mailbox));
  await json.close();
  t.deepEqual([v1.outcome, v2.outcome, only.outcome], ['delivered', 'delivered', 'delivered']);
  const imported = createGraphSink(specOf(standin.url, 'Inbox/Versions', 'importMime'));
  await imported.open();
  t.deepEqual(await imported.write(correctedDelivery(1, mailbox)), { outcome: 'skipped', location: v2.location });
  t.deepEqual(await imported.write(delivery(1, mailbox)), { outcome: 'skipped', location: v1.location });
  // Item 2's corrected version was never stored: importMime makes it beside the first, not skipped for it.
  const corrected = await imported.write(correctedDelivery(2, mailbox));
  await imported.close();
  t.is(corrected.outcome, 'delivered');
  t.not(corrected.location, only.location);
  t.is(standin.messagesIn(mailbox, 'Inbox/Versions').length, 4);
});

test('graph: a json run of a corrected export and an importMime run of the first at once into one folder: both versions stay when both have closed', async (t) => {
  t.timeout(120_000);
  // Each request answered after 5 ms: both runs list the day before either creates.
  const slow = await startGraphStandin({ tenant: TENANT, latencyMs: 5 });
  t.teardown(() => slow.close());
  const boxes = ['w0', 'w1'].map((p) => `${p}@acme.example`);
  for (const b of boxes) slow.mailbox(b);
  const [jsonSpec, importSpec] = (['json', 'importMime'] as const).map((mode) => specOf(slow.url, 'Inbox/Mixed', mode));
  const sinks = [createGraphSink(jsonSpec!), createGraphSink(importSpec!)];
  await Promise.all(sinks.map((s) => s.open()));
  const firsts = Array.from({ length: 10 }, (_, n) => delivery(n, boxes[n % 2]!));
  const corrections = Array.from({ length: 10 }, (_, n) => correctedDelivery(n, boxes[n % 2]!));
  const outcomes = await Promise.all([Promise.all(corrections.map((d) => sinks[0]!.write(d))), Promise.all(firsts.map((d) => sinks[1]!.write(d)))]);
  await Promise.all(sinks.map((s) => s.close()));
  t.true(outcomes.flat().every((o) => o.outcome === 'delivered'), 'the versions differ: each run made its own');
  t.is(sinks[0]!.copiesRemoved + sinks[1]!.copiesRemoved, 0, 'no version removed for the other');
  for (const b of boxes) t.is(slow.messagesIn(b, 'Inbox/Mixed').length, 10, `${b}: both versions of each of its 5 items`);
});

test('graph: two importMime runs at once, of a first and of a corrected export, keep both versions (imported copies are told apart by what Graph serves); a re-run removes neither', async (t) => {
  t.timeout(120_000);
  const own = await startGraphStandin({ tenant: TENANT });
  t.teardown(() => own.close());
  const boxes = ['i0', 'i1'].map((p) => `${p}@acme.example`);
  for (const b of boxes) own.mailbox(b);
  const spec = specOf(own.url, 'Inbox/Imports', 'importMime');
  const sinks = [createGraphSink(spec), createGraphSink(spec)];
  await Promise.all(sinks.map((s) => s.open()));
  // Each run first meets another item of the same day in each mailbox, so both have listed the day
  // (its listing kept for the run) before either imports the items below: they race for each.
  for (const s of sinks) for (const b of boxes) await s.write(delivery(5, b));
  const firsts = Array.from({ length: 4 }, (_, n) => delivery(n, boxes[n % 2]!));
  const corrections = Array.from({ length: 4 }, (_, n) => correctedDelivery(n, boxes[n % 2]!));
  const outcomes = await Promise.all([Promise.all(firsts.map((d) => sinks[0]!.write(d))), Promise.all(corrections.map((d) => sinks[1]!.write(d)))]);
  await Promise.all(sinks.map((s) => s.close()));
  t.true(outcomes.flat().every((o) => o.outcome === 'delivered'), 'each run imported its version of each item');
  t.is(sinks[0]!.copiesRemoved + sinks[1]!.copiesRemoved, 0, 'no version removed for the other');
  for (const b of boxes) t.is(own.messagesIn(b, 'Inbox/Imports').length, 5, `${b}: both versions of its 2 items, and the item each run met first`);
  // A re-run of the first export meets both imported copies of each item: neither is a copy of the other.
  const rerun = createGraphSink(spec);
  await rerun.open();
  await Promise.all(firsts.map((d) => rerun.write(d)));
  await rerun.close();
  t.is(rerun.copiesRemoved, 0);
  for (const b of boxes) t.is(own.messagesIn(b, 'Inbox/Imports').length, 5);
});

