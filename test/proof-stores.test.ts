// `verify` through the command line against the real servers: a run into Dovecot (IMAP) and one
// into Azurite (staged batches), each with its ledger; then one message altered and one removed
// behind the tool's back, by a client of the test's own, and each found (exit 6).
import test, { type ExecutionContext } from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { canonicalMailbox } from '../src/formats/address/index.js';
import { AZURITE_BLOB, azuriteMissingMessage, rewriteStaged, startAzurite } from './helpers/azurite.js';
import { cli } from './helpers/cli.js';
import { ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, removeAt, removeDovecot, replaceAt, startDovecot } from './helpers/dovecot.js';
import { alterOneByte, withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

type Json = Record<string, unknown>;

async function sampleExport(t: ExecutionContext) {
  t.timeout(240_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 150, seed: 31, edgeCases: false });
  const users = readJsonEntriesIndependently(archive)['users.json'] as { email?: string | null }[];
  const mailboxes = [...new Set(users.flatMap((u) => (canonicalMailbox(u.email) ? [u.email!.toLowerCase()] : [])))];
  return { dir, archive, mailboxes, state: join(dir, 'state') };
}

/** Two delivered outcomes of the ledger, in different items: one to alter, one to remove. */
async function twoDelivered(state: string): Promise<[Json, Json]> {
  const lines = (await readFile(join(state, 'ledger.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Json);
  const delivered = lines.filter((l) => l.outcome === 'delivered');
  const other = delivered.find((d) => d.itemId !== delivered[0]!.itemId)!;
  return [delivered[0]!, other];
}

/** Runs the export into `sink` with a ledger and sees verify find it all intact; returns verify's arguments. */
async function deliveredAndIntact(t: ExecutionContext, ex: { dir: string; archive: string; state: string }, sink: string, env: Record<string, string>): Promise<string[]> {
  const run = await cli(['run', ex.archive, '--sink', sink, '--state-dir', ex.state, '--rejects', join(ex.dir, 'rejects')], { env });
  t.is(run.code, 0, run.stderr);
  const args = ['verify', '--state-dir', ex.state, '--sink', sink];
  const clean = await verifyExit(args, env);
  t.is(clean.code, 0);
  t.true(Number(clean.store.intact) > 100);
  t.deepEqual(clean.store.unexpected, []);
  return args;
}

async function verifyExit(args: string[], env: Record<string, string>): Promise<{ code: number | null; store: Json }> {
  const r = await cli([...args, '--json'], { env });
  return { code: r.code, store: ((JSON.parse(r.stdout || '{}') as Json).store ?? {}) as Json };
}

withServer('Dovecot (verify over IMAP)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test('verify over IMAP: intact after a run; one message altered and one removed in Dovecot are found (exit 6)', async (t) => {
    const { dir, archive, mailboxes, state } = await sampleExport(t);
    const dovecot = await startDovecot(mailboxes);
    t.teardown(() => removeDovecot(dovecot));
    const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
    const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Pivot`;
    const args = await deliveredAndIntact(t, { dir, archive, state }, sink, env);

    const [toAlter, toRemove] = await twoDelivered(state);
    t.regex(String(toAlter.location), /;UIDVALIDITY=\d+\/;UID=\d+$/);
    await replaceAt(dovecot.port, String(toAlter.location), alterOneByte);
    await removeAt(dovecot.port, String(toRemove.location));
    const after = await verifyExit(args, env);
    t.is(after.code, 6);
    t.deepEqual((after.store.altered as Json[]).map((a) => a.messageId), [toAlter.messageId]);
    t.deepEqual((after.store.missing as Json[]).map((m) => m.messageId), [toRemove.messageId]);
  });
});

withServer('Azurite (verify of staged batches)', AZURITE_BLOB ? undefined : azuriteMissingMessage(), () => {
  test('verify of Azure Blob staging: intact after a run; a batch entry altered and one dropped are found (exit 6)', async (t) => {
    const { dir, archive, state } = await sampleExport(t);
    const azurite = await startAzurite();
    t.teardown(() => azurite.dispose());
    const env = { AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
    const sink = 'azblob://proof/staging';
    const args = await deliveredAndIntact(t, { dir, archive, state }, sink, env);

    const [toAlter, toRemove] = await twoDelivered(state);
    const container = azurite.container('proof');
    await rewriteStaged(container, String(toAlter.location), (files, entry) => files.map((f) => (f.name === entry ? { ...f, data: alterOneByte(f.data) } : f)));
    await rewriteStaged(container, String(toRemove.location), (files, entry) => files.filter((f) => f.name !== entry));
    const after = await verifyExit(args, env);
    t.is(after.code, 6);
    t.deepEqual((after.store.altered as Json[]).map((a) => a.messageId), [toAlter.messageId]);
    t.deepEqual((after.store.missing as Json[]).map((m) => m.messageId), [toRemove.messageId]);
  });
});
