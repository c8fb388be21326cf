// The Graph sink's app credentials end to end through the command line: a client secret and a
// certificate, each turned into a token by the real @azure/identity (MSAL) at the local Entra
// stand-in (test/helpers/entra-endpoint.ts), the token then checked by the Graph stand-in
// (audience, tenant, roles). A wrong secret, importMime without its permission, or an app granted
// Mail.Read only, stops the run before any delivery, naming no secret.
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { startGraphStandin } from './helpers/graph-standin.js';
import { startEntraEndpoint } from './helpers/entra-endpoint.js';
import { selfSignedCertificate } from './helpers/net.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const TENANT = '22222222-3333-4444-5555-666666666666';
const APP = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
const SECRET = 'graph~Secret.Value-1234567890';
/** An app granted Mail.Read only: Graph lets it read mailboxes and refuses its writes. */
const READER = 'ffffffff-bbbb-cccc-dddd-eeeeeeeeeeee';

test('graph with an app registration: a client secret and a certificate each deliver through the CLI; a wrong secret, importMime without its permission, or an app that may only read, exits 2 before any delivery, naming no secret', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const { certFile, keyFile } = await selfSignedCertificate(dir);
  const certificatePath = join(dir, 'app.pem');
  await writeFile(certificatePath, (await readFile(keyFile, 'utf8')) + (await readFile(certFile, 'utf8')));
  const standin = await startGraphStandin({ tenant: TENANT, everyUser: true, latencyMs: 2 });
  const entra = await startEntraEndpoint({
    tenant: TENANT,
    apps: [
      { clientId: APP, secrets: [SECRET], certificatePem: await readFile(certFile, 'utf8'), roles: ['Mail.ReadWrite'] },
      { clientId: READER, secrets: [SECRET], roles: ['Mail.Read'] },
    ],
    resources: [standin.audience],
  });
  t.teardown(() => Promise.all([standin.close(), entra.close()]));
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 200, seed: 21 });
  const sink = (extra: string, folder: string) =>
    `graph://${TENANT}/?clientId=${APP}&authorityHost=${encodeURIComponent(entra.authorityHost)}&graphEndpoint=${encodeURIComponent(standin.url)}&folder=${folder}${extra}`;
  const run = (spec: string, log: string, env: Record<string, string>) =>
    cli(['run', archive, '--sink', spec, '--domain', 'acme.example', '--status-log', join(dir, log), '--rejects', join(dir, 'rejects')], { env: { NODE_EXTRA_CA_CERTS: entra.caFile, ...env } });

  const bySecret = await run(sink('', 'Inbox/BySecret'), 'secret.jsonl', { PIVOT_GRAPH_CLIENT_SECRET: SECRET });
  t.is(bySecret.code, 0, bySecret.stderr);
  const delivered = (await readStatusLog(join(dir, 'secret.jsonl'))).summary.delivered;
  t.true(delivered > 50, `delivered ${delivered}`);
  t.true(entra.issued(APP) >= 1);
  t.false((bySecret.stdout + bySecret.stderr + (await readFile(join(dir, 'secret.jsonl'), 'utf8'))).includes(SECRET));

  const byCertificate = await run(sink(`&clientCertificate=${encodeURIComponent(certificatePath)}`, 'Inbox/ByCertificate'), 'certificate.jsonl', {});
  t.is(byCertificate.code, 0, byCertificate.stderr);
  t.is((await readStatusLog(join(dir, 'certificate.jsonl'))).summary.delivered, delivered);

  // importMime needs Mail-Advanced.ReadWrite.All, which this app was not granted: refused before any delivery.
  const unpermitted = await run(sink('&mode=importMime', 'Inbox/Imported'), 'unpermitted.jsonl', { PIVOT_GRAPH_CLIENT_SECRET: SECRET });
  t.is(unpermitted.code, 2, unpermitted.stderr);
  t.regex(unpermitted.stderr, /E_SINK_UNAVAILABLE.*mode=importMime needs the Mail-Advanced\.ReadWrite\.All application permission/);
  t.is((await readStatusLog(join(dir, 'unpermitted.jsonl'))).lines.filter((l) => l.outcome === 'delivered' || l.outcome === 'failed').length, 0);

  // Mail.Read, not Mail.ReadWrite: open() passes (reads are allowed); each mailbox's items fail with the reason, nothing delivered, exit 1.
  const reader = await run(sink('', 'Inbox/ReadOnly').replace(`clientId=${APP}`, `clientId=${READER}`), 'reader.jsonl', { PIVOT_GRAPH_CLIENT_SECRET: SECRET });
  t.is(reader.code, 1, reader.stderr);
  const readerLog = await readStatusLog(join(dir, 'reader.jsonl'));
  t.is(readerLog.summary.delivered, 0);
  const failedLines = readerLog.lines.filter((l) => l.outcome === 'failed');
  t.true(failedLines.length > 0);
  t.true(failedLines.every((l) => /Graph refused a write .*grant the app the Mail\.ReadWrite application permission/.test(String(l.detail))), JSON.stringify(failedLines[0]));

  const wrong = 'graph~Wrong.Secret-0987654321';
  const refused = await run(sink('', 'Inbox/Refused'), 'refused.jsonl', { PIVOT_GRAPH_CLIENT_SECRET: wrong });
  t.is(refused.code, 2, refused.stderr);
  t.regex(refused.stderr, /AADSTS7000215/);
  const text = refused.stdout + refused.stderr + (await readFile(join(dir, 'refused.jsonl'), 'utf8').catch(() => ''));
  t.false(text.includes(wrong), 'the wrong secret is never shown');
  t.is((await readStatusLog(join(dir, 'refused.jsonl'))).lines.filter((l) => l.outcome === 'delivered').length, 0);
});
