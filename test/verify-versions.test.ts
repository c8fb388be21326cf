// `verify` and the versions of an item (a corrected re-delivery: the same event id and sentAt,
// other content, stored beside the first version in IMAP and Graph): every version the ledger
// records as delivered must still be there. The first version deleted, or the corrected one, is
// MISSING (exit 6), in a check of the whole ledger and of one export; a copy that differs from a
// delivered message only in X-Pivot-Export-Id (the same event from another export) is a plain
// copy, unexpected, whatever skip of that export the ledger holds.
import test, { type ExecutionContext } from 'ava';
import { join } from 'node:path';
import { ImapFlow } from 'imapflow';
import { ExpectedMessages } from '../src/expected-messages.js';
import type { LedgerLine } from '../src/ledger/writer.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { writeArchive, MANIFEST } from './helpers/archive.js';
import { ADMIN, ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchAt, removeAt, removeDovecot, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { startGraphStandin } from './helpers/graph-standin.js';
import { startIdentityEndpoint } from './helpers/identity-endpoint.js';
import { withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { ATTACHMENT_BYTES, CORRECTED_EXPORT, MAILBOXES } from './helpers/corrected-export.js';

type Json = Record<string, unknown>;
const TENANT = '11111111-2222-3333-4444-555555555555';

/** Runs into `sink` with one state dir under `dir` (each run's status log numbered `n`), and verify of it. */
function runsInto(t: ExecutionContext, dir: string, sink: string, env: Record<string, string>) {
  const run = async (archive: string, n: number) => {
    const status = join(dir, `status-${n}.jsonl`);
    const r = await cli(['run', archive, '--sink', sink, '--state-dir', join(dir, 'state'), '--status-log', status, '--rejects', join(dir, 'rejects'), '--quiet'], { env });
    t.is(r.code, 0, r.stderr);
    return readStatusLog(status);
  };
  const verify = async () => {
    const r = await cli(['verify', '--state-dir', join(dir, 'state'), '--sink', sink, '--json'], { env });
    return { code: r.code, store: ((JSON.parse(r.stdout || '{}') as Json).store ?? {}) as Json, stdout: r.stdout + r.stderr };
  };
  return { run, verify };
}

/** Runs of the first export, then of its corrected re-delivery, into `sink`; verify of that state dir. */
async function correctedTwice(t: ExecutionContext, sink: string, env: Record<string, string>) {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const first = await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT);
  const corrected = await writeArchive(join(dir, 'a-corrected.zip'), { ...CORRECTED_EXPORT, attachments: { a_1: ATTACHMENT_BYTES } });
  let runs = 0;
  const run = async (archive: string) => {
    const status = join(dir, `status-${++runs}.jsonl`);
    const r = await cli(['run', archive, '--sink', sink, '--domain', 'acme.example', '--state-dir', join(dir, 'state'), '--status-log', status, '--rejects', join(dir, 'rejects'), '--quiet'], { env });
    t.is(r.code, 0, r.stderr);
    return (await readStatusLog(status)).lines;
  };
  const verify = async (...extra: string[]) => {
    const r = await cli(['verify', '--state-dir', join(dir, 'state'), '--sink', sink, '--json', ...extra], { env });
    return { code: r.code, store: ((JSON.parse(r.stdout || '{}') as Json).store ?? {}) as Json, stdout: r.stdout + r.stderr };
  };
  const att = (lines: Json[], mailbox: string) => String(lines.find((l) => l.itemId === 'm_att' && l.mailbox === mailbox && l.outcome === 'delivered')!.location);
  const one = await run(first);
  const two = await run(corrected);
  // A re-run of each: skips, which must not stand for a version of their own.
  await run(corrected);
  await run(first);
  const clean = await verify();
  t.is(clean.code, 0, clean.stdout);
  t.is(clean.store.intact, 8);
  return { verify, firstAt: (mailbox: string) => att(one, mailbox), correctedAt: (mailbox: string) => att(two, mailbox) };
}

/** After jane's first version and omar's corrected one are gone: both MISSING, named where they were; nothing else. */
async function bothMissing(t: ExecutionContext, verify: (...extra: string[]) => Promise<{ code: number | null; store: Json; stdout: string }>, gone: string[]) {
  for (const extra of [[], ['--export', MANIFEST.exportId]]) {
    const report = await verify(...extra);
    t.is(report.code, 6, report.stdout);
    t.deepEqual(
      (report.store.missing as Json[]).map((m) => `${String(m.mailbox)} ${String(m.itemId)} ${String(m.location)}`).sort(),
      [`${MAILBOXES[0]} m_att ${gone[0]}`, `${MAILBOXES[1]} m_att ${gone[1]}`].sort(),
      extra.join(' '),
    );
    t.deepEqual(report.store.altered, []);
    t.is(report.store.intact, 6);
    if (extra.length === 0) t.deepEqual(report.store.unexpected, []);
  }
}

test('the fold keeps every version an identity was delivered as (IMAP, Graph); a skip adds none, two records of one version are one; Maildir variants have none', (t) => {
  const expected = new ExpectedMessages();
  const base = { prev: '', record: 'outcome', at: '2026-11-23T10:00:00.000Z', conversationId: 'c', sink: 's', sentAt: '2026-11-23T10:00:00.000Z', mailbox: 'a@acme.example', itemId: 'i-1' };
  let seq = 0;
  const add = (messageId: string, outcome: string, location: string, sha256: string) => expected.add({ ...base, seq: ++seq, runId: `r${seq}`, exportId: 'e1', messageId, outcome, location, sha256 } as unknown as LedgerLine, true);
  const imap = (uid: number) => `a@acme.example/INBOX/Pivot;UIDVALIDITY=7/;UID=${uid}`;
  // IMAP: the first version at UID 5, the corrected one at 6, a re-run's skips of both, a skip of another export's build.
  add('<m-1@pivot-archive.invalid>', 'delivered', imap(5), 'aa');
  add('<m-1@pivot-archive.invalid>', 'delivered', imap(6), 'bb');
  add('<m-1@pivot-archive.invalid>', 'skipped', imap(5), 'aa');
  add('<m-1@pivot-archive.invalid>', 'skipped', imap(6), 'bb');
  add('<m-1@pivot-archive.invalid>', 'skipped', imap(6), 'b2');
  // Graph: one version delivered, then found (a skip) at another copy: one version.
  add('<m-2@pivot-archive.invalid>', 'delivered', 'a@acme.example/AAMk%3D/AAMkAAA%3D', 'cc');
  add('<m-2@pivot-archive.invalid>', 'skipped', 'a@acme.example/AAMk%3D/AAMkBBB%3D', 'cc');
  // Maildir: a first version and its content-named variant, each its own entry.
  const name = `1795428000.P${'0'.repeat(32)}`;
  add('<m-3@pivot-archive.invalid>', 'delivered', `a%40acme.example/.Pivot/cur/${name}.pivot-archive:2,S`, 'dd');
  add('<m-3@pivot-archive.invalid>', 'delivered', `a%40acme.example/.Pivot/cur/${name}.C${'1'.repeat(16)}.pivot-archive:2,S`, 'ee');
  const wanted = [...expected.groups()].flat();
  expected.dispose();
  const of = (sha256: string) => wanted.find((w) => w.sha256 === sha256)!;
  t.is(wanted.length, 4);
  t.deepEqual(of('bb').versions, [{ sha256: 'aa', location: imap(5) }]);
  t.is(of('bb').location, imap(6));
  t.is(of('cc').versions, undefined);
  t.is(of('dd').versions, undefined);
  t.is(of('ee').versions, undefined);
});

test('graph json: the first version of a corrected re-delivery deleted, or the corrected one, is missing to verify (exit 6), also of one export', async (t) => {
  const standin = await startGraphStandin({ tenant: TENANT, everyUser: true, latencyMs: 2 });
  const identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  t.teardown(() => Promise.all([standin.close(), identity.close()]));
  const sink = `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}`;
  const { verify, firstAt, correctedAt } = await correctedTwice(t, sink, identity.env);
  // Deleted in the mailbox (as a user or a retention policy would): jane's first version, omar's corrected one.
  const idOf = (location: string) => decodeURIComponent(location.slice(location.lastIndexOf('/') + 1));
  const gone = [firstAt(MAILBOXES[0]!), correctedAt(MAILBOXES[1]!)];
  for (const [i, location] of gone.entries()) t.true(standin.mailbox(MAILBOXES[i]!).messages.delete(idOf(location)), location);
  await bothMissing(t, verify, gone);
});

let dovecot: Dovecot;
const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
const imapSink = (folder: string) => `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${folder}&probe=${MAILBOXES[0]}`;

withServer('Dovecot (verify of versions)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test.before(async () => {
    dovecot = await startDovecot(MAILBOXES);
  });
  test.after.always(async () => {
    if (dovecot) await removeDovecot(dovecot);
  });

  test('imap: the first version of a corrected re-delivery removed, or the corrected one, is missing to verify (exit 6), also of one export', async (t) => {
    const { verify, firstAt, correctedAt } = await correctedTwice(t, imapSink('INBOX/Versions'), env);
    const gone = [firstAt(MAILBOXES[0]!), correctedAt(MAILBOXES[1]!)];
    for (const location of gone) await removeAt(dovecot.port, location);
    await bothMissing(t, verify, gone);
  });

  test('imap: a copy that differs from a delivered message only in X-Pivot-Export-Id is unexpected (exit 6), though the ledger holds a skip of that export', async (t) => {
    t.timeout(300_000);
    const dir = await tempDir(t);
    const folder = 'INBOX/OtherExport';
    const sink = imapSink(folder);
    const other = `${MANIFEST.exportId}-redelivered`;
    const { run, verify } = runsInto(t, dir, sink, env);
    const first = await run(await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT), 1);
    // The same events in an export of another id: found there, skipped (the ledger records what that export builds).
    t.is((await run(await writeArchive(join(dir, 'a-again.zip'), { ...CORRECTED_EXPORT, manifest: { ...MANIFEST, exportId: other } }), 2)).summary.skipped, 6);
    t.is((await verify()).code, 0);

    // Someone appends m_1 again as that other export built it: the same version, a second copy.
    const location = String(first.lines.find((l) => l.itemId === 'm_1' && l.mailbox === MAILBOXES[0])!.location);
    const bytes = (await fetchAt(dovecot.port, location))!.toString('latin1');
    const field = `X-Pivot-Export-Id: ${MANIFEST.exportId}\r\n`;
    t.true(bytes.includes(field));
    const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${MAILBOXES[0]}*${ADMIN}`, pass: ADMIN_PASSWORD } });
    await client.connect();
    const appended = await client.append(folder, Buffer.from(bytes.replace(field, `X-Pivot-Export-Id: ${other}\r\n`), 'latin1'), ['\\Seen'], new Date('2026-11-23T09:00:01Z'));
    await client.logout();
    t.truthy(appended && appended.uid);

    const report = await verify();
    t.is(report.code, 6, report.stdout);
    t.deepEqual(
      (report.store.unexpected as Json[]).map((u) => String(u.location)),
      [location.replace(/;UID=\d+$/, `;UID=${appended && appended.uid}`)],
    );
    t.deepEqual(report.store.missing, []);
    t.deepEqual(report.store.altered, []);
    t.is(report.store.intact, 6);
  });

  test('imap: a message removed and delivered again by an export of another id is intact as the same version (the other export\'s build of it); its bytes appended back, it is there, and the item is there twice (exit 6)', async (t) => {
    t.timeout(300_000);
    const dir = await tempDir(t);
    const folder = 'INBOX/Again';
    const sink = imapSink(folder);
    const { run, verify } = runsInto(t, dir, sink, env);
    const first = await run(await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT), 1);
    const location = String(first.lines.find((l) => l.itemId === 'm_1' && l.mailbox === MAILBOXES[0])!.location);
    const bytes = (await fetchAt(dovecot.port, location))!;
    await removeAt(dovecot.port, location);
    const again = await run(await writeArchive(join(dir, 'a-again.zip'), { ...CORRECTED_EXPORT, manifest: { ...MANIFEST, exportId: `${MANIFEST.exportId}-redelivered` } }), 2);
    t.is(again.summary.delivered, 1);

    // The ledger's first record is answered by the other export's build of the same event: the same version (src/ledger/version.ts).
    const gone = await verify();
    t.is(gone.code, 0, gone.stdout);
    t.deepEqual(gone.store.missing, []);
    t.deepEqual((gone.store.intactByVersion as Json[]).map((v) => `${String(v.expected)} ${String(v.exportId)}`), [`${String(first.lines.find((l) => l.itemId === 'm_1' && l.mailbox === MAILBOXES[0])!.sha256)} ${MANIFEST.exportId}-redelivered`]);
    t.deepEqual(gone.store.unexpected, []);
    t.is(gone.store.intact, 7);

    const client = new ImapFlow({ host: '127.0.0.1', port: dovecot.port, secure: false, doSTARTTLS: false, logger: false, auth: { user: `${MAILBOXES[0]}*${ADMIN}`, pass: ADMIN_PASSWORD } });
    await client.connect();
    const appended = await client.append(folder, bytes, ['\\Seen'], new Date('2026-11-23T09:00:01Z'));
    await client.logout();
    const back = await verify();
    t.is(back.code, 6, back.stdout);
    t.deepEqual(back.store.missing, []);
    t.deepEqual(back.store.altered, []);
    t.deepEqual((back.store.unexpected as Json[]).map((u) => String(u.location)), [location.replace(/;UID=\d+$/, `;UID=${appended && appended.uid}`)]);
    t.is(back.store.intact, 7);
  });
});
