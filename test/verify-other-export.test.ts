// F1: two runs of different exports carry the same event; each builds a message that differs only
// in X-Pivot-Export-Id. A store that tells versions apart by the digest less that field (IMAP,
// Graph) may keep the other export's copy and remove ours as its duplicate (the sinks' close).
// verify of our ledger must then read the record as intact by version (stored, the same version,
// in the other export's copy: SAME VERSION), when the record carries its version digest
// (src/ledger/version.ts); not ALTERED, not MISSING. A record without the digest (an older ledger)
// keeps reading ALTERED; a copy that differs in anything else than X-Pivot-Export-Id is ALTERED.
//
// Each run's records carry `version` (src/pipeline/settle.ts); checked here against the digest
// worked out from the bytes the store holds (not with the tool's code). `withoutVersions` writes a
// real run's ledger as a run before the field wrote it, chained and sealed anew by the ledger's writer.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { cp, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ExpectedMessages } from '../src/expected-messages.js';
import { LedgerWriter, type LedgerLine } from '../src/ledger/writer.js';
import { recordedVersion } from '../src/ledger/version.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { writeArchive, MANIFEST } from './helpers/archive.js';
import { ADMIN_PASSWORD, DOVECOT_BINARY, asBuilt, dovecotMissingMessage, fetchAt, removeAt, removeDovecot, replaceAt, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { CORRECTED_EXPORT, MAILBOXES } from './helpers/corrected-export.js';

type Json = Record<string, unknown>;
const OTHER = `${MANIFEST.exportId}-other`;

/** sha256 of a message built less its X-Pivot-Export-Id field (with its folded lines; its line break stays): worked out here. */
function versionOf(built: Buffer): string {
  const split = built.indexOf('\r\n\r\n');
  const head = built.toString('latin1', 0, split).replace(/(^|\n)X-Pivot-Export-Id:[^\n]*(\n[ \t][^\n]*)*/i, '$1');
  return createHash('sha256').update(Buffer.from(head, 'latin1')).update(built.subarray(split)).digest('hex');
}

/**
 * The state dir `from` copied to `to`, its ledger written again as a run before `version` wrote it:
 * every record as it was less that field, chained anew, each checkpoint sealed anew.
 */
async function withoutVersions(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true });
  const ledgerPath = join(to, 'ledger.jsonl');
  const lines = (await readFile(ledgerPath, 'utf8')).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Json);
  await rm(ledgerPath);
  await rm(join(to, 'checkpoint.note'), { force: true });
  const writer = await LedgerWriter.open(ledgerPath);
  for (const { seq: _, prev: __, version: ___, ...record } of lines) {
    if (record.record === 'checkpoint') await writer.seal(String(record.runId), undefined, join(to, 'checkpoint.note'));
    else await writer.append(JSON.stringify(record));
  }
  await writer.close();
}

test('the fold pairs a version digest with the sha256 of its own record; a record without one (an older ledger) leaves none', (t) => {
  const expected = new ExpectedMessages();
  const base = { prev: '', record: 'outcome', at: '2026-11-23T10:00:00.000Z', conversationId: 'c', sink: 's', sentAt: '2026-11-23T10:00:00.000Z', itemId: 'i-1', exportId: 'e1' };
  let seq = 0;
  const add = (mailbox: string, outcome: string, location: string, sha256: string, version?: string) =>
    expected.add({ ...base, seq: ++seq, runId: `r${seq}`, mailbox, messageId: '<m-1@pivot-archive.invalid>', outcome, location, sha256, ...(version === undefined ? {} : { version }) } as unknown as LedgerLine, true);
  const v = (c: string) => c.repeat(64);
  const imap = (mailbox: string, uid: number) => `${mailbox}/INBOX/Pivot;UIDVALIDITY=7/;UID=${uid}`;
  // a: delivered with a version, then a skip with another; b: delivered with a version, then again by an older tool (none).
  add('a@acme.example', 'delivered', imap('a@acme.example', 5), 'aa', v('1'));
  add('a@acme.example', 'skipped', imap('a@acme.example', 5), 'a2', v('2'));
  add('b@acme.example', 'delivered', imap('b@acme.example', 5), 'bb', v('3'));
  add('b@acme.example', 'delivered', imap('b@acme.example', 6), 'b2');
  // c: a version that is not a digest of the writer's form is none.
  add('c@acme.example', 'delivered', imap('c@acme.example', 5), 'cc', 'not-a-digest');
  const wanted = [...expected.groups()].flat();
  expected.dispose();
  const of = (mailbox: string) => wanted.find((w) => w.mailbox === mailbox)!;
  t.like(of('a@acme.example'), { sha256: 'aa', version: v('1'), builtSha256: 'a2', builtVersion: v('2') });
  t.is(of('b@acme.example').sha256, 'b2');
  t.is(of('b@acme.example').version, undefined);
  t.deepEqual(of('b@acme.example').versions, [{ sha256: 'bb', location: imap('b@acme.example', 5), version: v('3') }]);
  t.is(of('c@acme.example').version, undefined);
  t.is(recordedVersion({ version: v('a') }), v('a'));
  t.is(recordedVersion({ version: v('A') }), undefined);
  t.is(recordedVersion({}), undefined);
});

let dovecot: Dovecot;
const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
const imapSink = (folder: string) => `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=${folder}&probe=${MAILBOXES[0]}`;

/**
 * Export E1 run into `folder` (state dir `state1`), its ledger also written as before version digests
 * (`state1old`); then jane's copy of m_1 removed, as the close of a run of another export (state dir
 * `state2`) removes a duplicate, and that other export run: it delivers m_1 again as it builds it
 * (its X-Pivot-Export-Id is OTHER) and finds the rest.
 */
async function otherExportKept(t: ExecutionContext, folder: string) {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const sink = imapSink(folder);
  const run = async (archive: string, state: string, n: number) => {
    const status = join(dir, `status-${n}.jsonl`);
    const r = await cli(['run', archive, '--sink', sink, '--state-dir', join(dir, state), '--status-log', status, '--rejects', join(dir, 'rejects'), '--quiet'], { env });
    t.is(r.code, 0, r.stderr);
    return readStatusLog(status);
  };
  const verify = async (state: string, json = true, ...extra: string[]) => {
    const r = await cli(['verify', '--state-dir', join(dir, state), '--sink', sink, ...(json ? ['--json'] : []), ...extra], { env });
    return { code: r.code, store: (json ? ((JSON.parse(r.stdout || '{}') as Json).store ?? {}) : {}) as Json, stdout: r.stdout + r.stderr };
  };
  const first = await run(await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT), 'state1', 1);
  t.is(first.summary.delivered, 6);
  // Each delivery's record carries the version of what the store holds (worked out here from its bytes).
  for (const line of first.lines.filter((l) => l.outcome === 'delivered')) {
    t.is(line.version, versionOf(asBuilt((await fetchAt(dovecot.port, String(line.location)))!)), String(line.location));
  }
  await withoutVersions(join(dir, 'state1'), join(dir, 'state1old'));
  for (const state of ['state1', 'state1old']) {
    const clean = await verify(state);
    t.is(clean.code, 0, `${state}: ${clean.stdout}`);
    t.is(clean.store.intact, 6);
    t.deepEqual(clean.store.altered, []);
  }
  const ours = String(first.lines.find((l) => l.itemId === 'm_1' && l.mailbox === MAILBOXES[0])!.location);
  await removeAt(dovecot.port, ours);
  const second = await run(await writeArchive(join(dir, 'b.zip'), { ...CORRECTED_EXPORT, manifest: { ...MANIFEST, exportId: OTHER } }), 'state2', 2);
  t.is(second.summary.delivered, 1);
  t.is(second.summary.skipped, 5);
  const theirs = String(second.lines.find((l) => l.itemId === 'm_1' && l.mailbox === MAILBOXES[0] && l.outcome === 'delivered')!.location);
  const ourBytes = asBuilt((await fetchAt(dovecot.port, theirs))!).toString('latin1').replace(`X-Pivot-Export-Id: ${OTHER}\r\n`, `X-Pivot-Export-Id: ${MANIFEST.exportId}\r\n`);
  const recorded = String(first.lines.find((l) => l.itemId === 'm_1' && l.mailbox === MAILBOXES[0])!.sha256);
  // The copy kept is ours but for X-Pivot-Export-Id: with our export's id it is what we delivered.
  t.is(createHash('sha256').update(Buffer.from(ourBytes, 'latin1')).digest('hex'), recorded);
  return { verify, ours, theirs, recorded };
}

withServer('Dovecot (verify of another export\'s copy)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test.before(async () => {
    dovecot = await startDovecot(MAILBOXES);
  });
  test.after.always(async () => {
    if (dovecot) await removeDovecot(dovecot);
  });

  test('imap: our copy removed as the duplicate of another export\'s copy of the same event is intact by version (exit 0, SAME VERSION), when the record carries its version; an older record reads it ALTERED as before', async (t) => {
    const { verify, theirs, recorded } = await otherExportKept(t, 'INBOX/OtherKept');

    // A record with its version digest: the other export's copy is the same version, intact.
    const report = await verify('state1');
    t.is(report.code, 0, report.stdout);
    t.deepEqual(report.store.altered, []);
    t.deepEqual(report.store.missing, []);
    t.deepEqual(report.store.unexpected, []);
    t.is(report.store.intact, 6);
    const [byVersion, ...more] = report.store.intactByVersion as Json[];
    t.deepEqual(more, []);
    t.like(byVersion, { mailbox: MAILBOXES[0], itemId: 'm_1', location: theirs, exportId: OTHER, expected: recorded });
    t.not(byVersion!.found, recorded);
    const text = await verify('state1', false);
    t.is(text.code, 0, text.stdout);
    t.regex(text.stdout, /intact 6 \(of which 1 the same version in another copy: the bytes delivered but for X-Pivot-Export-Id\)/);
    t.regex(text.stdout, new RegExp(`SAME VERSION ${MAILBOXES[0]} \\S+ \\(item m_1\\) at ${theirs.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: a copy holding X-Pivot-Export-Id ${OTHER} \\(another export's build of the same event\\)`));
    t.regex(text.stdout, /verified: the ledger holds, and everything it records is there, unaltered \(1 as the same version in another export's copy/);
    t.notRegex(text.stdout, /ALTERED|MISSING|UNEXPECTED/);
    // Of one export (the reader finds what it is asked for, by location then by Message-ID): the same.
    const ofExport = await verify('state1', true, '--export', MANIFEST.exportId);
    t.is(ofExport.code, 0, ofExport.stdout);
    t.like((ofExport.store.intactByVersion as Json[])[0], { itemId: 'm_1', location: theirs, exportId: OTHER });
    t.is(ofExport.store.intact, 6);

    // The same ledger without version digests (written before the field): ALTERED, as before.
    const old = await verify('state1old');
    t.is(old.code, 6, old.stdout);
    t.deepEqual((old.store.altered as Json[]).map((a) => `${String(a.itemId)} ${String(a.location)} ${String(a.expected)}`), [`m_1 ${theirs} ${recorded}`]);
    t.deepEqual(old.store.intactByVersion, []);

    // The other export's own ledger holds its delivery.
    const other = await verify('state2');
    t.deepEqual(other.store.altered, []);
    t.deepEqual(other.store.missing, []);
  });

  test('imap: the other export\'s copy changed in anything but X-Pivot-Export-Id (the body; a header; its X-Pivot-Version field made to match) is ALTERED, whatever version the record carries', async (t) => {
    const { verify, theirs, recorded } = await otherExportKept(t, 'INBOX/OtherChanged');
    let at = theirs;
    const uidOf = async () => {
      // replaceAt appends the changed copy anew: the copy with the greatest UID of the folder is it.
      const report = await verify('state1');
      return { report, location: String(((report.store.altered as Json[])[0] ?? {}).location ?? at) };
    };
    for (const [what, change] of [
      ['the body', (s: string) => s.replace('text of m_1', 'text of m_9')],
      ['a header', (s: string) => s.replace(/\r\nSubject: ([^\r\n]*)/, '\r\nSubject: $1!')],
    ] as const) {
      await replaceAt(dovecot.port, at, (raw) => {
        const built = Buffer.from(change(asBuilt(raw).toString('latin1')), 'latin1');
        t.not(built.toString('latin1'), asBuilt(raw).toString('latin1'), what);
        // Its X-Pivot-Version field names the changed message's version, as a sink would write it.
        return Buffer.concat([Buffer.from(`X-Pivot-Version: sha256=${versionOf(built)}\r\n`), built]);
      });
      const { report, location } = await uidOf();
      at = location;
      t.is(report.code, 6, `${what}: ${report.stdout}`);
      t.deepEqual((report.store.altered as Json[]).map((a) => `${String(a.itemId)} ${String(a.expected)}`), [`m_1 ${recorded}`], what);
      t.deepEqual(report.store.intactByVersion, [], what);
      t.deepEqual(report.store.missing, [], what);
      t.is(report.store.intact, 5, what);
    }
  });
});
