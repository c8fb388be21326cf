// src/auth/entra.ts against the local Entra ID stand-in (test/helpers/entra-endpoint.ts), through
// the real @azure/identity and MSAL: discovery, client secret and certificate assertion, caching,
// renewal before expiry, and refusals that name no secret.
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { entraTokens, type EntraCredential } from '../src/auth/entra.js';
import { ErrorCode } from '../src/errors.js';
import { startEntraEndpoint, type EntraEndpoint } from './helpers/entra-endpoint.js';
import { selfSignedCertificate } from './helpers/net.js';

const TENANT = '6f1f0c3e-3b9a-4c55-9a57-2d7d1c0e4b11';
const SECRET = 'Cl1ent~Secret.Value_9';
const RESOURCE = 'https://outlook.office365.com';

let endpoint: EntraEndpoint;
let certificatePath: string;
let otherCertificatePath: string;
let dir: string;
/** An app whose secret a test revokes (the endpoint reads its app list as it stands). */
const keptApp = { clientId: 'app-kept', secrets: [SECRET] };

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pivot-entra-test-'));
  // ClientCertificateCredential takes one PEM file with the private key and the certificate.
  const pem = async (name: string) => {
    const { certFile, keyFile } = await selfSignedCertificate(await mkdtemp(join(dir, 'cert-')));
    const path = join(dir, name);
    await writeFile(path, (await readFile(keyFile, 'utf8')) + (await readFile(certFile, 'utf8')));
    return { path, certificatePem: await readFile(certFile, 'utf8') };
  };
  const registered = await pem('app.pem');
  certificatePath = registered.path;
  otherCertificatePath = (await pem('other.pem')).path;
  endpoint = await startEntraEndpoint({
    tenant: TENANT,
    resources: [RESOURCE, 'https://outlook.office365.us'],
    apps: [
      { clientId: 'app-secret', secrets: [SECRET], roles: ['IMAP.AccessAsApp'] },
      { clientId: 'app-cache', secrets: [SECRET], roles: ['IMAP.AccessAsApp'], servicePrincipalId: 'sp-object-1' },
      { clientId: 'app-cert', certificatePem: registered.certificatePem, roles: ['IMAP.AccessAsApp'] },
      { clientId: 'app-renew', secrets: [SECRET] },
      { clientId: 'app-forget', secrets: [SECRET] },
      keptApp,
    ],
  });
});
test.after.always(async () => {
  await endpoint?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const options = (scope = `${RESOURCE}/.default`) => ({ authorityHost: endpoint.authorityHost, scope, describe: 'IMAP sink for outlook.office365.com:993', extraCaFile: endpoint.caFile });
const secret = (clientId = 'app-secret', value = SECRET, tenant = TENANT): EntraCredential => ({ kind: 'secret', tenant, clientId, secret: value });
const claims = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<string, unknown>;

test('a client secret gets an app-only token for the resource, with the roles consented; kept until it nears expiry; callers at once share one request', async (t) => {
  const tokens = entraTokens(secret('app-cache'), options());
  const [token, again] = await Promise.all([tokens.get(), tokens.get()]);
  t.is(token, again);
  t.like(claims(token), { aud: RESOURCE, appid: 'app-cache', oid: 'sp-object-1', tid: TENANT, iss: `https://sts.windows.net/${TENANT}/`, roles: ['IMAP.AccessAsApp'] });
  t.is(await tokens.get(), token);
  t.is(endpoint.issued('app-cache'), 1);
});

test('a national cloud resource is asked for by its own scope', async (t) => {
  const token = await entraTokens(secret(), options('https://outlook.office365.us/.default')).get();
  t.is(claims(token).aud, 'https://outlook.office365.us');
});

test('a certificate signs a client assertion that the service accepts; one the app does not hold is refused', async (t) => {
  const token = await entraTokens({ kind: 'certificate', tenant: TENANT, clientId: 'app-cert', certificatePath }, options()).get();
  t.like(claims(token), { appid: 'app-cert', appidacr: '2' });
  const err = await t.throwsAsync(entraTokens({ kind: 'certificate', tenant: TENANT, clientId: 'app-cert', certificatePath: otherCertificatePath }, options()).get(), { code: ErrorCode.SINK_UNAVAILABLE });
  t.regex(err!.message, /AADSTS700027/);
  t.regex(err!.message, /app app-cert in tenant .* with a client certificate/);
});

// Serial: the lifetime it sets is the endpoint's, for every test's tokens.
test.serial('a short-lived token is renewed before it expires (at half its life), not on every request', async (t) => {
  t.timeout(30_000);
  endpoint.setLifetime(4);
  const tokens = entraTokens(secret('app-renew'), options());
  const first = await tokens.get();
  endpoint.setLifetime(3600);
  t.is(await tokens.get(), first, 'the same token while it has more than half its life');
  await new Promise((resolve) => setTimeout(resolve, 2500));
  const second = await tokens.get();
  t.not(second, first);
  t.true((claims(second).exp as number) > Math.floor(Date.now() / 1000) + 600);
  t.is(endpoint.issued('app-renew'), 2);
});

test.serial('a renewal the service refuses keeps the token while a quarter of its life is left, then fails with the reason', async (t) => {
  t.timeout(30_000);
  // 8-s tokens: renewed from 4 s on, kept until 6 s; the margins (1.4 s, then 1.4 s past) leave room for a loaded machine.
  endpoint.setLifetime(8);
  const tokens = entraTokens(secret('app-kept'), options());
  const first = await tokens.get();
  endpoint.setLifetime(3600);
  keptApp.secrets = [];
  await new Promise((resolve) => setTimeout(resolve, 4600));
  t.is(await tokens.get(), first, 'renewal refused at 4.6 s of 8: the token still lasts');
  t.true(endpoint.refusals().includes(7000215));
  await new Promise((resolve) => setTimeout(resolve, 2800));
  const err = await t.throwsAsync(tokens.get(), { code: ErrorCode.SINK_UNAVAILABLE });
  t.regex(err!.message, /AADSTS7000215/);
});

test('forget() asks the service anew, past the token MSAL keeps', async (t) => {
  const tokens = entraTokens(secret('app-forget'), options());
  const first = await tokens.get();
  tokens.forget();
  const second = await tokens.get();
  t.not(second, first);
  t.is(endpoint.issued('app-forget'), 2);
});

test("a wrong client secret is E_SINK_UNAVAILABLE with Entra's reason (AADSTS7000215), and the secret is nowhere in it", async (t) => {
  const wrong = 'Wr0ng~Secret/with?odd#chars';
  const err = await t.throwsAsync(entraTokens(secret('app-secret', wrong), options()).get(), { code: ErrorCode.SINK_UNAVAILABLE });
  t.regex(err!.message, /^IMAP sink for outlook\.office365\.com:993: no access token for https:\/\/outlook\.office365\.com\/\.default \(app app-secret in tenant [-0-9a-f]+ with a client secret\): .*AADSTS7000215: Invalid client secret/);
  t.false(err!.message.includes(wrong));
  t.false(err!.message.includes(encodeURIComponent(wrong)));
  t.false(err!.message.includes('\n'), 'one line: the library appends troubleshooting links');
  t.true(endpoint.refusals().includes(7000215));
});

test('an unknown tenant, an unknown app and a resource the tenant lacks are refused with their AADSTS codes', async (t) => {
  const reasons = await Promise.all([
    t.throwsAsync(entraTokens(secret('app-secret', SECRET, '00000000-0000-0000-0000-000000000000'), options()).get()),
    t.throwsAsync(entraTokens(secret('no-such-app'), options()).get()),
    t.throwsAsync(entraTokens(secret(), options('https://mail.contoso.example/.default')).get()),
  ]);
  t.regex(reasons[0]!.message, /knows no tenant 00000000-0000-0000-0000-000000000000 at this authorityHost/);
  t.true(endpoint.refusals().includes(90002));
  t.regex(reasons[1]!.message, /AADSTS700016/);
  t.regex(reasons[2]!.message, /AADSTS500011/);
});

test('an authorityHost nothing answers at is said so (ECONNREFUSED), not taken for an unknown tenant', async (t) => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as { port: number }).port;
  await new Promise((resolve) => closed.close(resolve));
  const err = await t.throwsAsync(entraTokens(secret(), { ...options(), authorityHost: `https://127.0.0.1:${port}` }).get(), { code: ErrorCode.SINK_UNAVAILABLE });
  t.regex(err!.message, new RegExp(`the identity service at https://127\\.0\\.0\\.1:${port} cannot be reached \\(ECONNREFUSED\\)`));
  t.notRegex(err!.message, /knows no tenant/);
});
