// Half-created copies a lost create answer leaves (against the Graph stand-in): items with an
// attachment of 3 MiB or more are created with a pending stamp, then the attachment goes through an
// upload session, then the stamp is made final. When a batch's answer is lost while Graph still
// runs it, the sink looks, finds nothing yet, and creates the item again; the lost create then
// lands as a pending copy no run finishes. Was: neither the close nor a re-run removed it (only
// whole extra copies were), and every later verify named it unexpected.
import test from 'ava';
import { createGraphSink } from '../src/sinks/graph/index.js';
import { buildMessage } from '../src/transforms/mime/index.js';
import type { Delivery } from '../src/model.js';
import { startGraphStandin, type GraphStandin } from './helpers/graph-standin.js';
import { startIdentityEndpoint, type IdentityEndpoint } from './helpers/identity-endpoint.js';
import { delivery } from './helpers/sink-conformance.js';

const TENANT = '11111111-2222-3333-4444-555555555555';
let standin: GraphStandin;
let identity: IdentityEndpoint;

test.before(async () => {
  standin = await startGraphStandin({ tenant: TENANT, mailboxes: ['closed@acme.example', 'killed@acme.example'] });
  identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  Object.assign(process.env, identity.env);
});
test.after.always(async () => {
  await standin?.close();
  await identity?.close();
});

const specOf = (folder: string) => `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}&retryDelay=20&folder=${folder}`;

/** A delivery whose message carries a 3 MiB attachment: created pending, finished by an upload session. */
function large(n: number, mailbox: string): Delivery {
  const d = delivery(n, mailbox);
  const user = { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' };
  const attachments = [{ ref: { id: 'a0', fileName: 'big.bin', contentType: 'application/octet-stream' }, bytes: Buffer.alloc(3 * 1024 * 1024 + 10, 65) }];
  const message = buildMessage(
    { id: `m_${n}`, type: 'message', sentAt: new Date(d.internalDate).toISOString(), conversation: { id: 'c_1', name: 'Big', type: 'room', members: ['u_1'] }, sender: user, text: `big ${n}`, attachments: attachments.map((a) => a.ref), participants: [user], headers: {}, raw: {}, position: d.position } as unknown as Parameters<typeof buildMessage>[0],
    { tenant: 'acme', exportId: d.exportId },
    attachments,
  );
  return { ...d, message };
}

/** How many messages the folder holds, of how many items, and how many are still pending. */
function held(mailbox: string, folder: string): { messages: number; items: number; pending: number } {
  const messages = standin.messagesIn(mailbox, folder);
  const pending = messages.filter((m) => [...m.extended.values()].some((v) => v.startsWith('pending '))).length;
  return { messages: messages.length, items: new Set(messages.map((m) => m.internetMessageId)).size, pending };
}

/** Writes four large items while the batch carrying them has its answer lost, Graph finishing it meanwhile. */
async function writeThroughLostBatch(mailbox: string, folder: string) {
  const sink = createGraphSink(specOf(folder));
  await sink.open();
  // A first item makes the mailbox busy, so the next creates go as a batch.
  await sink.write(delivery(1, mailbox));
  let goOn!: () => void;
  const cut = standin.cutBatch(mailbox, 1, new Promise<void>((resolve) => (goOn = resolve)));
  const items = [600, 601, 602, 603].map((n) => large(n, mailbox));
  const outcomes = await Promise.all(items.map((d) => sink.write(d)));
  goOn();
  await cut.finished;
  return { sink, items, outcomes };
}

test('graph: half-created copies a lost batch answer left beside a whole one are removed at close', async (t) => {
  t.timeout(120_000);
  const { sink, outcomes } = await writeThroughLostBatch('closed@acme.example', 'Inbox/Half');
  t.deepEqual(outcomes.map((o) => o.outcome), Array(4).fill('delivered'));
  t.true(held('closed@acme.example', 'Inbox/Half').pending > 0, 'the lost creates landed half-created');
  await sink.close();
  t.deepEqual(held('closed@acme.example', 'Inbox/Half'), { messages: 5, items: 5, pending: 0 });
});

test('graph: a run killed before its close: the re-run removes the half-created copies when it meets their items', async (t) => {
  t.timeout(120_000);
  const { items } = await writeThroughLostBatch('killed@acme.example', 'Inbox/Killed');
  // No close: the run was killed.
  t.true(held('killed@acme.example', 'Inbox/Killed').pending > 0);
  const rerun = createGraphSink(specOf('Inbox/Killed'));
  await rerun.open();
  const again = await Promise.all([delivery(1, 'killed@acme.example'), ...items].map((d) => rerun.write(d)));
  await rerun.close();
  t.deepEqual(again.map((o) => o.outcome), Array(5).fill('skipped'));
  t.true(rerun.copiesRemoved > 0);
  t.deepEqual(held('killed@acme.example', 'Inbox/Killed'), { messages: 5, items: 5, pending: 0 });
});
