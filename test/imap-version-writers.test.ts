// Two writers at once storing the same corrected version into one IMAP folder (src/sinks/imap/SPEC.md,
// "Two writers at once", "Corrected versions"): the writer that closes last removes its copy of the
// version as it would a plain item's, so the version is held once. The listing by identity alone
// (a server whose sizes proved inexact) still never takes a version for a copy of another.
import test from 'ava';
import { createImapSink } from '../src/sinks/imap/index.js';
import { Appended, extraCopies } from '../src/sinks/imap/copies.js';
import type { Delivery } from '../src/model.js';
import { chatDeliveries } from './helpers/chat.js';
import { ADMIN_PASSWORD, appendGate, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { withServer } from './helpers/sink-conformance.js';

const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
const MAILBOX = 'jane@acme.example';
const event = (id: string, text: string): Delivery => chatDeliveries({ id, sentAt: '2026-11-23T09:00:02Z', text, exportId: 'acme-2026-11-23', index: 0 }, [MAILBOX])[0]!;

test('removing copies: listed by version, a version this run stored beside another is a copy like any other beyond the least UID; by identity alone it is kept', (t) => {
  const mine = new Appended('INBOX/Pivot', 1n);
  mine.add(0, 12);
  mine.versions.add(12);
  // 5 is version 1 of A; 11 another writer's copy of version 2 of A, 12 ours.
  const byVersion = new Map([
    [5, 'A 100'],
    [11, 'A 130'],
    [12, 'A 130'],
  ]);
  t.deepEqual(extraCopies(byVersion, mine, true), [12]);
  const byIdentity = new Map([
    [5, 'A'],
    [11, 'A'],
    [12, 'A'],
  ]);
  t.deepEqual(extraCopies(byIdentity, mine, false), [11]);
});

let dovecot: Dovecot;

withServer('Dovecot (two writers of one corrected version)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test.before(async () => {
    dovecot = await startDovecot([MAILBOX]);
  });
  test.after.always(async () => {
    if (dovecot) await removeDovecot(dovecot);
  });

  test('two writers at once storing the same corrected version leave it once, as they do a new item', async (t) => {
    t.timeout(120_000);
    // Writer B's next APPEND waits until writer A has appended the same item and closed.
    const gate = appendGate(t);
    const bodyOf = (d: Delivery) => d.message.subarray(d.message.indexOf('\r\n\r\n'));
    for (const [label, folder, before, item] of [
      ['corrected version', 'INBOX/Version', event('m_2', 'buy 100 at 101.25'), event('m_2', 'buy 100 at 101.25, corrected: settle T+2')],
      ['new item', 'INBOX/Plain', event('m_1', 'unrelated'), event('m_2', 'buy 100 at 101.25')],
    ] as const) {
      const spec = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${folder}`;
      const first = createImapSink(spec, { env });
      await first.open();
      t.is((await first.write(before)).outcome, 'delivered', label);
      await first.close();
      const b = createImapSink(spec, { env });
      await b.open();
      const release = gate.hold();
      // B lists the folder (the item not there), then its APPEND waits at the gate.
      const bWrote = b.write(item);
      await gate.taken();
      const a = createImapSink(spec, { env });
      await a.open();
      t.is((await a.write(item)).outcome, 'delivered', label);
      await a.close();
      release();
      t.is((await bWrote).outcome, 'delivered', label);
      await b.close();
      t.is(b.stats.copiesRemoved, 1, label);
      const held = await fetchFolder(dovecot.port, MAILBOX, folder);
      t.is(held.length, 2, label);
      t.is(held.filter((m) => m.source.subarray(m.source.indexOf('\r\n\r\n')).equals(bodyOf(item))).length, 1, label);
      t.is(held.filter((m) => m.source.subarray(m.source.indexOf('\r\n\r\n')).equals(bodyOf(before))).length, 1, label);
    }
  });
});
