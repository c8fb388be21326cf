// A corrected re-delivery through the CLI into Maildir and into Graph (json mode, the stand-in):
// the same event (same id and sentAt) comes again with other content (an attachment whose bytes
// were missing the first time). Each sink stores it beside the earlier version, which stays; a
// re-run skips both; `verify` of the ledger that records both is clean, and a plain copy of a
// version is still unexpected. (IMAP: test/imap-corrected-redelivery.test.ts.) Messages are read
// back with Python's email package (Maildir) and the stand-in's own store (Graph), not our code.
import test, { type ExecutionContext } from 'ava';
import { execFileSync } from 'node:child_process';
import { copyFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { cli, readStatusLog } from './helpers/cli.js';
import { writeArchive } from './helpers/archive.js';
import { startGraphStandin, type GraphStandin } from './helpers/graph-standin.js';
import { startIdentityEndpoint } from './helpers/identity-endpoint.js';
import { tempDir } from './helpers/tmp.js';
import { ATTACHMENT_BYTES, CORRECTED_EXPORT, MAILBOXES } from './helpers/corrected-export.js';

type Json = Record<string, unknown>;
const TENANT = '11111111-2222-3333-4444-555555555555';


const outcomes = (lines: Json[]) =>
  lines
    .filter((l) => l.outcome !== undefined && l.record !== 'summary')
    .map((l) => `${String(l.mailbox)} ${String(l.itemId)} ${String(l.outcome)}`)
    .sort();

async function scenario(t: ExecutionContext, sink: string, env: Record<string, string>, held: (mailbox: string) => Promise<{ itemId: string; attachments: number }[]>, copyOne: (mailbox: string) => Promise<void>) {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const first = await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT);
  const corrected = await writeArchive(join(dir, 'a-corrected.zip'), { ...CORRECTED_EXPORT, attachments: { a_1: ATTACHMENT_BYTES } });
  let runs = 0;
  const run = async (archive: string) => {
    const status = join(dir, `status-${++runs}.jsonl`);
    const r = await cli(['run', archive, '--sink', sink, '--domain', 'acme.example', '--state-dir', join(dir, 'state'), '--status-log', status, '--rejects', join(dir, 'rejects'), '--quiet'], { env });
    t.is(r.code, 0, r.stderr);
    return readStatusLog(status);
  };
  const verify = async () => {
    const r = await cli(['verify', '--state-dir', join(dir, 'state'), '--sink', sink, '--json'], { env });
    return { code: r.code, store: ((JSON.parse(r.stdout || '{}') as Json).store ?? {}) as Json, stdout: r.stdout + r.stderr };
  };

  t.is((await run(first)).summary.delivered, 6);
  const two = await run(corrected);
  t.deepEqual(outcomes(two.lines), MAILBOXES.flatMap((m) => [`${m} m_1 skipped`, `${m} m_3 skipped`, `${m} m_att delivered`]).sort());
  for (const mailbox of MAILBOXES) {
    const versions = (await held(mailbox)).filter((m) => m.itemId === 'm_att');
    t.deepEqual(versions.map((m) => m.attachments).sort(), [0, 1], `${mailbox}: the first version (no attachment) and the corrected one`);
  }
  const three = await run(corrected);
  t.is(three.summary.delivered, 0, 'nothing stored a third time');
  t.is((await run(first)).summary.delivered, 0, 'the first version is found too');
  for (const mailbox of MAILBOXES) t.is((await held(mailbox)).length, 4);

  const clean = await verify();
  t.is(clean.code, 0, clean.stdout);
  t.is(clean.store.intact, 8);
  await copyOne(MAILBOXES[0]!);
  const copied = await verify();
  t.is(copied.code, 6, copied.stdout);
  t.is((copied.store.unexpected as unknown[]).length, 1);
}

test('maildir: a corrected re-delivery is stored beside the first version; a re-run skips both; verify is clean, and a plain copy is unexpected', async (t) => {
  const root = join(await tempDir(t), 'mail');
  const folder = (mailbox: string) => join(root, mailbox, '.INBOX.Pivot', 'cur');
  const PY = `
import email, email.policy, json, os, sys
out = []
for name in sorted(os.listdir(sys.argv[1])):
    m = email.message_from_bytes(open(os.path.join(sys.argv[1], name), 'rb').read(), policy=email.policy.default)
    out.append({'itemId': m['X-Pivot-Item-Id'], 'attachments': len(list(m.iter_attachments()))})
print(json.dumps(out))
`;
  const held = async (mailbox: string) => JSON.parse(execFileSync('python3', ['-c', PY, folder(mailbox)]).toString()) as { itemId: string; attachments: number }[];
  await scenario(t, `maildir:${root}`, {}, held, async (mailbox) => {
    // The corrected version again under its own name with other flags (the reader reads our names only).
    const name = (await readdir(folder(mailbox))).find((n) => n.includes('.C'))!;
    await copyFile(join(folder(mailbox), name), join(folder(mailbox), name.replace(/:2,S$/, ':2,FS')));
  });
});

test('graph json: a corrected re-delivery is created beside the first version; a re-run skips both; verify is clean, and a plain copy is unexpected', async (t) => {
  const standin: GraphStandin = await startGraphStandin({ tenant: TENANT, everyUser: true, latencyMs: 2 });
  const identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  t.teardown(() => Promise.all([standin.close(), identity.close()]));
  const sink = `graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}`;
  // Graph keeps fields, not the X-Pivot headers: m_att is the event of second 2.
  const held = async (mailbox: string) => standin.messagesIn(mailbox, 'Inbox/Pivot').map((m) => ({ itemId: m.sentDateTime.startsWith('2026-11-23T09:00:02') ? 'm_att' : m.sentDateTime, attachments: m.attachments.length }));
  await scenario(t, sink, identity.env, held, async (mailbox) => {
    // The corrected version again, under an id after every other (as another writer's copy would be).
    const [message] = standin.messagesIn(mailbox, 'Inbox/Pivot').filter((m) => m.attachments.length === 1);
    const id = `${message!.id}zz`;
    standin.mailbox(mailbox).messages.set(id, { ...message!, id, extended: new Map(message!.extended) });
  });
});
