// IMAP with app-only OAuth2 (auth=xoauth2), as for Exchange Online, against the real Dovecot:
// its oauth2 passdb validates the bearer token locally (signature, aud, exp, issuer) and keeps a
// list of the mailboxes the app may open (Exchange's Add-MailboxPermission). Tokens come through
// the real @azure/identity from the local Entra ID stand-in (test/helpers/entra-endpoint.ts).
import test, { type ExecutionContext } from 'ava';
import { simpleParser } from 'mailparser';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { entraTokens, type AccessTokens } from '../src/auth/entra.js';
import { ErrorCode } from '../src/errors.js';
import { canonicalMailbox } from '../src/formats/address/index.js';
import { generateSample } from '../src/sample/generate.js';
import { parseImapSpec } from '../src/sinks/imap/config.js';
import { createImapSink, ImapSink, imapSinkFactory } from '../src/sinks/imap/index.js';
import { createImapReader } from '../src/sinks/imap/reader.js';
import { imapOptions } from '../src/sinks/imap/options.js';
import type { SinkOptions } from '../src/sinks/sink.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { asBuilt, clientFlags, DOVECOT_BINARY, dovecotMissingMessage, dovecotOAuth2Missing, fetchAt, fetchFolder, removeAt, removeDovecot, replaceAt, revokeMailbox, setAppMailboxes, startDovecot, type Dovecot } from './helpers/dovecot.js';
import { startEntraEndpoint, type EntraApp, type EntraEndpoint } from './helpers/entra-endpoint.js';
import { freePort, selfSignedCertificate } from './helpers/net.js';
import { pairs } from './helpers/maildir.js';
import { expectedPairs, type ReferenceConversations } from './helpers/reference.js';
import { alterOneByte, CONFORMANCE_MAILBOXES, delivery, everyCase, honoursMaxInFlight, readerCases, readerIgnoresClientFlags, sinkConformance, withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const APP = '3c9d6a4e-1b2f-4a8e-9f0d-5e6b7c8d9e0f';
const SECRET = 'Xo~8Q~s3cr3t.Val/ue?#@%';
/** Apps of their own for the tests that count the tokens issued or revoke a secret (the tests of a file run at once). */
const REFUSAL_APP = 'b7e4c1d2-0a9f-4e3b-8c6d-1f2e3a4b5c6d';
const REVOKED_APP = 'e1d2c3b4-a596-4877-8a9b-0c1d2e3f4a5b';
const MANY_REFUSED_APP = '5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d';
const CLI_APP = '9d8c7b6a-5f4e-4d3c-9b2a-1f0e9d8c7b6a';
/** A user-assigned managed identity of the (pretend) Azure host. */
const MANAGED_IDENTITY = '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0';
/** Dovecot checks that a token's `aud` is this: the resource the sink asks for, `https://<IMAP host>`. */
const AUDIENCE = 'https://127.0.0.1';

test('xoauth2 spec: no admin in the URL; tenant and clientId required; options of the other mode refused; the scope follows the IMAP host', (t) => {
  const config = parseImapSpec(`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&folder=Pivot`);
  t.like(config, { host: 'outlook.office365.com', port: 993, tls: 'implicit', user: '', auth: 'xoauth2', folder: 'Pivot' });
  t.deepEqual(config.oauth, { credential: 'app', tenant: TENANT, clientId: APP, secretEnv: 'PIVOT_IMAP_CLIENT_SECRET', authorityHost: 'https://login.microsoftonline.com', scope: 'https://outlook.office365.com/.default' });
  // National clouds: GCC High's IMAP host is its resource; its login host is given.
  t.like(parseImapSpec(`imap://outlook.office365.us/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&authorityHost=https://login.microsoftonline.us`).oauth, {
    scope: 'https://outlook.office365.us/.default',
    authorityHost: 'https://login.microsoftonline.us',
  });
  t.like(parseImapSpec(`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&clientCertificate=/etc/app.pem`).oauth, { clientCertificate: '/etc/app.pem' });
  t.deepEqual(parseImapSpec('imap://outlook.office365.com/?auth=xoauth2&credential=managedIdentity').oauth?.credential, 'managedIdentity');
  const refused: [string, RegExp][] = [
    [`imap://archiver@outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}`, /name no admin user/],
    [`imap://outlook.office365.com/?auth=xoauth2&clientId=${APP}`, /needs the app registration's tenant=TENANT_ID and clientId=APP_ID/],
    [`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}`, /needs the app registration's tenant/],
    [`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&passwordEnv=X`, /passwordEnv applies to the admin's password/],
    [`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&masterSeparator=%2B`, /masterSeparator applies to the admin's password/],
    [`imap://archiver@mail.acme.example/?tenant=${TENANT}`, /tenant applies to auth=xoauth2 only, not to auth=master/],
    ['imap://archiver@mail.acme.example/?auth=authzid&secretEnv=X&authorityHost=https://login.microsoftonline.us', /secretEnv, authorityHost apply to auth=xoauth2 only/],
    [`imap://outlook.office365.com/?auth=xoauth2&credential=managedIdentity&tenant=${TENANT}`, /credential=managedIdentity takes no tenant/],
    [`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&clientCertificate=/a.pem&secretEnv=S`, /clientCertificate or secretEnv, not both/],
    [`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&authorityHost=http://login.example`, /authorityHost must be an https:\/\/ host/],
    [`imap://outlook.office365.com/?auth=xoauth2&tenant=a%20b&clientId=${APP}`, /tenant must be a tenant id or domain/],
    [`imap://mail.acme.example/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}&tls=none`, /sends the app's token in clear text/],
    ['imap://outlook.office365.com/', /names no admin user/],
  ];
  for (const [spec, message] of refused) t.throws(() => parseImapSpec(spec), { code: ErrorCode.SINK_CONFIG, message }, spec);
  // A password in the URL is still refused, and not repeated.
  const err = t.throws(() => parseImapSpec('imap://archiver:hunter2@outlook.office365.com/?auth=xoauth2'), { message: /must not carry a password/ });
  t.false(err!.message.includes('hunter2'));
});

test('xoauth2: a stop signal while open() waits for a token ends the wait; open() resolves and every write is rejected as stopped', async (t) => {
  const stop = new AbortController();
  const never: AccessTokens = { get: () => new Promise<string>(() => undefined), forget: () => undefined };
  const sink = new ImapSink(parseImapSpec(`imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}`), never, { stop: stop.signal });
  setTimeout(() => stop.abort(), 100);
  const started = Date.now();
  await sink.open();
  t.true(Date.now() - started < 2_000);
  await t.throwsAsync(sink.write(delivery(1)), { code: ErrorCode.SINK_WRITE, message: /stopped by a signal/ });
  await sink.close();
});

test('xoauth2: the client secret comes from the environment (PIVOT_IMAP_CLIENT_SECRET or secretEnv); missing, it is E_SINK_CONFIG; never in the description', (t) => {
  const spec = `imap://outlook.office365.com/?auth=xoauth2&tenant=${TENANT}&clientId=${APP}`;
  t.throws(() => createImapSink(spec, { env: {} }), { code: ErrorCode.SINK_CONFIG, message: /client secret in PIVOT_IMAP_CLIENT_SECRET/ });
  t.throws(() => createImapSink(`${spec}&secretEnv=APP_SECRET`, { env: { PIVOT_IMAP_CLIENT_SECRET: SECRET } }), { message: /the environment variable secretEnv= names/ });
  const sink = createImapSink(spec, { env: { PIVOT_IMAP_CLIENT_SECRET: SECRET } });
  t.is(sink.description, 'imap://outlook.office365.com:993/INBOX/Pivot');
  // A certificate or a managed identity needs no secret in the environment.
  t.notThrows(() => createImapSink(`${spec}&clientCertificate=/etc/app.pem`, { env: {} }));
  t.notThrows(() => createImapSink('imap://outlook.office365.com/?auth=xoauth2&credential=managedIdentity', { env: {} }));
  // App-only tokens come from the tenant itself: a multi-tenant alias is refused before any request.
  for (const alias of ['common', 'organizations', 'Consumers']) {
    t.throws(() => createImapSink(`imap://outlook.office365.com/?auth=xoauth2&tenant=${alias}&clientId=${APP}`, { env: { PIVOT_IMAP_CLIENT_SECRET: SECRET } }), { code: ErrorCode.SINK_CONFIG, message: /gives no app-only token/ });
  }
});

withServer('Dovecot with OAuth2 (IMAP XOAUTH2)', DOVECOT_BINARY ? dovecotOAuth2Missing() : dovecotMissingMessage(), () => {
  const permitted = [...CONFORMANCE_MAILBOXES, 'omar@acme.example', 'broken-xoauth2@acme.example'];
  const forbidden = 'ceo@acme.example';
  /** More mailboxes the app may not open, for one test alone (it counts Dovecot's refusals of each). */
  const manyRefused = ['cfo@acme.example', 'cto@acme.example', 'coo@acme.example'];
  let endpoint: EntraEndpoint;
  /** A second token service (its own signing key, which Dovecot also trusts) whose tokens live 4 s. */
  let shortLived: EntraEndpoint;
  /** An app of `shortLived` whose secret a test revokes (the endpoint reads its app list as it stands). */
  let revoked: EntraApp;
  let dovecot: Dovecot;
  let dir: string;
  let certificatePath: string;

  test.before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pivot-xoauth2-'));
    const { certFile, keyFile } = await selfSignedCertificate(dir);
    certificatePath = join(dir, 'app.pem');
    await writeFile(certificatePath, (await readFile(keyFile, 'utf8')) + (await readFile(certFile, 'utf8')));
    const app = { clientId: APP, secrets: [SECRET], certificatePem: await readFile(certFile, 'utf8'), roles: ['IMAP.AccessAsApp'] };
    endpoint = await startEntraEndpoint({ tenant: TENANT, apps: [app, { ...app, clientId: REFUSAL_APP }, { ...app, clientId: MANY_REFUSED_APP }, { ...app, clientId: CLI_APP }], managedIdentities: [{ clientId: MANAGED_IDENTITY, roles: ['IMAP.AccessAsApp'] }] });
    revoked = { ...app, clientId: REVOKED_APP, secrets: [SECRET] };
    shortLived = await startEntraEndpoint({ tenant: TENANT, apps: [app, revoked], lifetimeSeconds: 4 });
    dovecot = await startDovecot([...permitted, forbidden, ...manyRefused], {
      oauth2: { keys: [endpoint, shortLived], audience: AUDIENCE, issuer: `https://sts.windows.net/${TENANT}/`, appMailboxes: permitted },
    });
  });
  test.after.always(async () => {
    if (dovecot) await removeDovecot(dovecot);
    await endpoint?.close();
    await shortLived?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** The environment a sink in this process gets: the secret, and the token service's certificate to trust. */
  const env = () => ({ PIVOT_IMAP_CLIENT_SECRET: SECRET, NODE_EXTRA_CA_CERTS: endpoint.caFile });
  const spec = (query: string, port = dovecot.port, authority = endpoint) =>
    `imap://127.0.0.1:${port}/?tls=none&auth=xoauth2&tenant=${TENANT}&clientId=${APP}&authorityHost=${authority.authorityHost}${query ? `&${query}` : ''}`;
  const dovecotLog = () => readFile(join(dovecot.dir, 'log', 'dovecot.log'), 'utf8');
  let stores = 0;

  sinkConformance(
    {
      name: 'imap (xoauth2)',
      async store() {
        const folder = `INBOX/XOAuth${++stores}`;
        const sinkSpec = spec(`folder=${folder}&retries=0`);
        return {
          create: async () => createImapSink(sinkSpec, { env: env() }),
          read: async (mailbox) => (await fetchFolder(dovecot.port, mailbox, folder)).map((m) => asBuilt(m.source)),
          async breakStore() {
            const mailbox = 'broken-xoauth2@acme.example';
            return { mailbox, repair: await revokeMailbox(dovecot, mailbox) };
          },
          readAt: async (location) => {
              const stored = await fetchAt(dovecot.port, location);
              return stored && asBuilt(stored);
            },
          reader: async () => imapSinkFactory.reader!(sinkSpec, { cwd: '/', env: env() } as SinkOptions),
          tamper: {
            alter: (_mailbox, location) => replaceAt(dovecot.port, location, alterOneByte),
            remove: (_mailbox, location) => removeAt(dovecot.port, location),
            clientChanges: (_mailbox, locations) => clientFlags(dovecot.port, locations),
          },
        };
      },
      unusableReader: async () => createImapReader(spec('retryDelay=10', await freePort()), { cwd: '/', env: env() }),
      readerListsNoMailboxes: true,
      options: imapOptions,
      withOptions: async (query) => createImapSink(`imap://127.0.0.1:${dovecot.port}/?${query}`, { env: env() }),
      unusable: async () => createImapSink(spec('retryDelay=10', await freePort()), { env: env() }),
      secrets: [
        { secret: SECRET, create: async () => createImapSink(spec(''), { env: env() }) },
        { secret: 'other-var-Secret-2', create: async () => createImapSink(spec('secretEnv=APP_SECRET'), { env: { APP_SECRET: 'other-var-Secret-2', NODE_EXTRA_CA_CERTS: endpoint.caFile } }) },
      ],
    },
    // maxInFlight's case is the same whatever the login (10,020 deliveries): the password harnesses run it.
    [...everyCase.filter((c) => c !== honoursMaxInFlight), ...readerCases, readerIgnoresClientFlags],
  );

  test('xoauth2: a wrong client secret fails open() with E_SINK_UNAVAILABLE before any login, naming AADSTS7000215 and not the secret', async (t) => {
    const wrong = 'Wr0ng~Secret?/#@%25';
    // Nothing listens at the IMAP port: an open() that tried a login first would fail on that.
    const sink = createImapSink(spec('', await freePort()), { env: { ...env(), PIVOT_IMAP_CLIENT_SECRET: wrong } });
    const err = await t.throwsAsync(sink.open(), { code: ErrorCode.SINK_UNAVAILABLE });
    t.regex(err!.message, /AADSTS7000215: Invalid client secret provided/);
    t.notRegex(err!.message, /ECONNREFUSED/);
    t.false(err!.message.includes(wrong));
    t.false(err!.message.includes(encodeURIComponent(wrong)));
    await t.throwsAsync(sink.write(delivery(1)), { code: ErrorCode.SINK_CLOSED });
  });

  test('xoauth2: a client certificate instead of a secret delivers', async (t) => {
    const sink = createImapSink(spec(`clientCertificate=${encodeURIComponent(certificatePath)}&folder=INBOX/Certificate`), { env: { NODE_EXTRA_CA_CERTS: endpoint.caFile } });
    await sink.open();
    t.is((await sink.write(delivery(1, 'omar@acme.example'))).outcome, 'delivered');
    await sink.close();
    t.is((await fetchFolder(dovecot.port, 'omar@acme.example', 'INBOX/Certificate')).length, 1);
  });

  test("xoauth2: a mailbox the app may not open fails its items with the server's answer and what the app needs, after one new token; the others are delivered", async (t) => {
    const issued = endpoint.issued(REFUSAL_APP);
    const sink = createImapSink(spec('folder=INBOX/Refused&retries=3&retryDelay=10').replace(APP, REFUSAL_APP), { env: env() });
    await sink.open();
    const [refused, fine] = await Promise.allSettled([sink.write(delivery(1, forbidden)), sink.write(delivery(1, 'a@acme.example'))]);
    await sink.close();
    t.is(refused.status, 'rejected');
    const reason = (refused as PromiseRejectedResult).reason as { code: string; message: string };
    t.is(reason.code, ErrorCode.SINK_WRITE);
    t.regex(reason.message, /^mailbox ceo@acme\.example: the server refused the app's token for this mailbox \(AUTHENTICATIONFAILED .*\); the app needs the IMAP\.AccessAsApp .*Add-MailboxPermission/);
    t.notRegex(reason.message, /attempts/, 'not retried: a refusal is permanent');
    t.like(fine, { status: 'fulfilled', value: { outcome: 'delivered' } });
    t.is(endpoint.issued(REFUSAL_APP), issued + 2, 'open() asked for one, then one new token to tell a lapsed token from a refused mailbox');
    t.deepEqual(await fetchFolder(dovecot.port, forbidden, 'INBOX/Refused'), []);
  });

  test('xoauth2: refused mailboxes with many items cost one new token in all, not one per batch; their later items fail at once without a login', async (t) => {
    t.timeout(120_000);
    const issued = endpoint.issued(MANY_REFUSED_APP);
    // batch=2: each refused mailbox's 10 items are 5 batches, each of which logged in (and asked Entra ID anew) before.
    const sink = createImapSink(spec('folder=INBOX/ManyRefused&batch=2&retries=3&retryDelay=10').replace(APP, MANY_REFUSED_APP), { env: env() });
    await sink.open();
    t.is(endpoint.issued(MANY_REFUSED_APP), issued + 1, 'open() asks for one token');
    const before = (await dovecotLog()).length;
    const writes = [...manyRefused, 'a@acme.example', 'b@acme.example'].flatMap((mailbox) => Array.from({ length: 10 }, (_, i) => ({ mailbox, stored: sink.write(delivery(i + 1, mailbox)) })));
    const settled = await Promise.all(writes.map(async ({ mailbox, stored }) => ({ mailbox, result: await stored.then((value) => ({ value }), (reason: Error & { code?: string }) => ({ reason })) })));
    // Dovecot logs each login it refuses as the app's mailbox list's `unknown user`.
    const refusedLogins = async (mailbox: string) => (await dovecotLog()).slice(before).split('\n').filter((line) => line.includes(`passwd-file(${mailbox},`) && line.endsWith('unknown user')).length;
    const loginsBefore = await Promise.all(manyRefused.map(refusedLogins));
    // Later items of a mailbox refused with a fresh token: rejected at once, with no new login.
    const late = await Promise.allSettled(manyRefused.map((mailbox) => sink.write(delivery(11, mailbox))));
    await sink.close();
    t.is(endpoint.issued(MANY_REFUSED_APP), issued + 2, `tokens asked for: ${endpoint.issued(MANY_REFUSED_APP) - issued}; one after open(), whatever the number of refused mailboxes and items`);
    for (const { mailbox, result } of settled) {
      if (manyRefused.includes(mailbox)) {
        t.true('reason' in result, `${mailbox}: ${JSON.stringify(result)}`);
        if (!('reason' in result)) continue;
        t.is(result.reason.code, ErrorCode.SINK_WRITE);
        t.regex(result.reason.message, new RegExp(`^mailbox ${mailbox.replace('.', '\\.')}: the server refused the app's token for this mailbox \\(AUTHENTICATIONFAILED .*\\); the app needs the IMAP\\.AccessAsApp .*Add-MailboxPermission`));
      } else {
        t.like(result, { value: { outcome: 'delivered' } }, mailbox);
      }
    }
    for (const result of late) {
      t.is(result.status, 'rejected');
      if (result.status === 'rejected') t.regex((result.reason as Error).message, /the server refused the app's token for this mailbox \(AUTHENTICATIONFAILED/);
    }
    // One login with the token of open(), unless the new one had come by then, and one with the new token.
    for (const [i, count] of loginsBefore.entries()) t.true(count >= 1 && count <= 2, `${manyRefused[i]}: ${count} refused logins`);
    t.deepEqual(await Promise.all(manyRefused.map(refusedLogins)), loginsBefore, 'no login for the later items');
    for (const mailbox of manyRefused) t.deepEqual(await fetchFolder(dovecot.port, mailbox, 'INBOX/ManyRefused'), []);
    for (const mailbox of ['a@acme.example', 'b@acme.example']) t.is((await fetchFolder(dovecot.port, mailbox, 'INBOX/ManyRefused')).length, 10);
  });

  /** Tokens as the sink asks for them, except that the first one given is `first`. */
  function firstTokenThen(first: string, then: AccessTokens): AccessTokens & { given: string[] } {
    const given: string[] = [];
    let used = false;
    return {
      given,
      async get() {
        const token = used ? await then.get() : first;
        used = true;
        given.push(token);
        return token;
      },
      forget: () => then.forget(),
    };
  }
  const realTokens = (scope = `${AUDIENCE}/.default`) => entraTokens({ kind: 'secret', tenant: TENANT, clientId: APP, secret: SECRET }, { authorityHost: endpoint.authorityHost, scope, describe: 'test', extraCaFile: endpoint.caFile });
  const now = () => Math.floor(Date.now() / 1000);

  test('xoauth2: Dovecot refuses an expired token; the sink asks for a new one and delivers', async (t) => {
    const expired = endpoint.sign({ aud: AUDIENCE, appid: APP, oid: 'sp', sub: 'sp', iat: now() - 4000, nbf: now() - 4000, exp: now() - 60 });
    const tokens = firstTokenThen(expired, realTokens());
    const sink = new ImapSink(parseImapSpec(spec('folder=INBOX/Expired')), tokens, { proveCredentials: false });
    const before = (await dovecotLog()).length;
    await sink.open();
    t.is((await sink.write(delivery(1, 'b@acme.example'))).outcome, 'delivered');
    await sink.close();
    t.is(tokens.given.length, 2);
    t.regex((await dovecotLog()).slice(before), /oauth2\(b@acme\.example,.*Local validation failed: Token has expired/);
    t.is((await fetchFolder(dovecot.port, 'b@acme.example', 'INBOX/Expired')).length, 1);
  });

  test("xoauth2: Dovecot refuses a token for another audience (Graph's), and one not signed by the token service; with probe= open() says so", async (t) => {
    const graph = realTokens('https://graph.microsoft.com/.default');
    const sink = new ImapSink(parseImapSpec(spec('folder=INBOX/Audience&retries=0')), graph, { proveCredentials: false });
    const before = (await dovecotLog()).length;
    await sink.open();
    const err = await t.throwsAsync(sink.write(delivery(1, 'a@acme.example')), { code: ErrorCode.SINK_WRITE });
    await sink.close();
    t.regex(err!.message, /refused the app's token for this mailbox/);
    const forged = (await realTokens().get()).replace(/\.[^.]+$/, `.${Buffer.from('not the signature').toString('base64url')}`);
    const forgedSink = new ImapSink(parseImapSpec(spec('folder=INBOX/Audience&retries=0&probe=a@acme.example')), { get: async () => forged, forget: () => undefined });
    const refused = await t.throwsAsync(forgedSink.open(), { code: ErrorCode.SINK_UNAVAILABLE });
    t.regex(refused!.message, /^IMAP sink \(app .* at 127\.0\.0\.1:\d+\): the server refused the app's token \(a login to a@acme\.example \(probe=\): AUTHENTICATIONFAILED/);
    const log = (await dovecotLog()).slice(before);
    t.regex(log, /Local validation failed: client_id not found in aud field/);
    t.regex(log, /Local validation failed: Bad signature/);
    t.deepEqual(await fetchFolder(dovecot.port, 'a@acme.example', 'INBOX/Audience'), []);
  });

  test('xoauth2: a run that outlives its tokens (4 s) keeps delivering, renewing them before they expire', async (t) => {
    t.timeout(60_000);
    const issued = shortLived.issued(APP);
    // pool=1: each mailbox in turn is a new login, with the token of that moment.
    const sink = createImapSink(spec('folder=INBOX/Renewed&pool=1', dovecot.port, shortLived), { env: { ...env(), NODE_EXTRA_CA_CERTS: shortLived.caFile } });
    await sink.open();
    const before = (await dovecotLog()).length;
    const mailboxes = ['user0@acme.example', 'user1@acme.example', 'user2@acme.example'];
    for (let round = 0; round < 4; round++) {
      const stored = await Promise.all(mailboxes.map((m) => sink.write(delivery(round, m))));
      t.deepEqual(stored.map((s) => s.outcome), ['delivered', 'delivered', 'delivered']);
      await new Promise((resolve) => setTimeout(resolve, 2500));
    }
    await sink.close();
    t.true(shortLived.issued(APP) - issued >= 4, `tokens renewed: ${shortLived.issued(APP) - issued}`);
    t.notRegex((await dovecotLog()).slice(before), /oauth2\(user[0-2]@acme\.example,[^\n]*Token has expired/);
    for (const m of mailboxes) t.is((await fetchFolder(dovecot.port, m, 'INBOX/Renewed')).length, 4);
  });

  test("xoauth2: the app's secret revoked in the middle of a run fails what the sink holds and every later write, with Entra's reason", async (t) => {
    t.timeout(60_000);
    const sink = createImapSink(spec('folder=INBOX/Revoked&pool=1', dovecot.port, shortLived).replace(APP, REVOKED_APP), { env: { ...env(), NODE_EXTRA_CA_CERTS: shortLived.caFile } });
    await sink.open();
    t.is((await sink.write(delivery(1, 'user3@acme.example'))).outcome, 'delivered');
    revoked.secrets = [];
    // The 4 s token is renewed after 2 s, and kept while it has a quarter of its life left if the
    // service will not renew it: past 3 s the next login needs a new one, which the service refuses.
    await new Promise((resolve) => setTimeout(resolve, 3500));
    const err = await t.throwsAsync(sink.write(delivery(2, 'omar@acme.example')), { code: ErrorCode.SINK_WRITE });
    t.regex(err!.message, /^mailbox omar@acme\.example: the identity service refused the app's credentials in the middle of the run \(.*AADSTS7000215/);
    t.false(err!.message.includes(SECRET));
    const started = Date.now();
    await t.throwsAsync(sink.write(delivery(3, 'user3@acme.example')), { code: ErrorCode.SINK_WRITE, message: /refused the app's credentials in the middle of the run/ });
    t.true(Date.now() - started < 100);
    await sink.close();
    t.deepEqual(await fetchFolder(dovecot.port, 'omar@acme.example', 'INBOX/Revoked'), []);
  });

  async function sampleExport(t: ExecutionContext) {
    const work = await tempDir(t);
    const archive = join(work, 'export.zip');
    await generateSample(archive, { events: 200, seed: 12, edgeCases: false });
    const entries = readJsonEntriesIndependently(archive);
    const users = entries['users.json'] as { id: string; email?: string | null }[];
    const files = Object.keys(entries).filter((n) => n.startsWith('messages/')).sort().map((n) => entries[n] as unknown[]);
    const mailboxes = [...new Set(users.flatMap((u) => (canonicalMailbox(u.email) ? [u.email!.toLowerCase()] : [])))];
    return { work, archive, mailboxes, expected: expectedPairs(users, entries['conversations.json'] as ReferenceConversations, files) };
  }

  /** Every (mailbox, item) pair a server holds in INBOX/Pivot, read with a client of the test's own and parsed by mailparser. */
  async function readBack(server: Dovecot, mailboxes: string[]): Promise<string[]> {
    const found: { mailbox: string; itemId: string }[] = [];
    for (const mailbox of mailboxes) {
      for (const m of await fetchFolder(server.port, mailbox)) found.push({ mailbox, itemId: String((await simpleParser(m.source)).headers.get('x-pivot-item-id')) });
    }
    return pairs(found);
  }

  test('xoauth2 end to end (CLI): every permitted mailbox holds its items, verify finds them intact, a re-run creates nothing; a mailbox the app may not open fails its items (exit 1) with the reason recorded', async (t) => {
    t.timeout(300_000);
    const ex = await sampleExport(t);
    t.true(ex.mailboxes.length >= 4, `mailboxes: ${ex.mailboxes.join(' ')}`);
    const [refused, ...allowed] = ex.mailboxes;
    // A server of this test's own: the export's mailboxes, all but the first open to the app.
    const server = await startDovecot(ex.mailboxes, { oauth2: { keys: [endpoint], audience: AUDIENCE, issuer: `https://sts.windows.net/${TENANT}/`, appMailboxes: allowed } });
    t.teardown(() => removeDovecot(server));
    const childEnv = { PIVOT_IMAP_CLIENT_SECRET: SECRET, NODE_EXTRA_CA_CERTS: endpoint.caFile };
    // batch=5: the refused mailbox's items are several batches, each of which asked Entra ID anew before.
    const sink = `imap://127.0.0.1:${server.port}/?tls=none&auth=xoauth2&tenant=${TENANT}&clientId=${CLI_APP}&authorityHost=${endpoint.authorityHost}&folder=INBOX/Pivot&retryDelay=50&batch=5`;
    const state = join(ex.work, 'state');
    const status = join(ex.work, 'status.jsonl');
    const args = ['run', ex.archive, '--sink', sink, '--state-dir', state, '--status-log', status, '--rejects', join(ex.work, 'rejects')];
    const issued = endpoint.issued(CLI_APP);
    const first = await cli(args, { env: childEnv });
    t.is(first.code, 1, first.stderr);
    t.is(endpoint.issued(CLI_APP) - issued, 2, "one token for open(), one asked for anew when the mailbox refused it");
    const expectedAllowed = ex.expected.filter((p) => !p.startsWith(`${refused} `));
    t.deepEqual(await readBack(server, ex.mailboxes), expectedAllowed);
    const { lines, summary } = await readStatusLog(status);
    const failed = lines.filter((l) => l.outcome === 'failed');
    t.is(failed.length, ex.expected.length - expectedAllowed.length);
    t.true(failed.length > 10, `the refused mailbox's items: ${failed.length}`);
    t.true(failed.every((l) => l.mailbox === refused && /the server refused the app's token for this mailbox .*Add-MailboxPermission/.test(String(l.detail))), JSON.stringify(failed[0]));
    t.is(summary.delivered, expectedAllowed.length);
    for (const out of [first.stdout, first.stderr, await readFile(status, 'utf8')]) t.false(out.includes(SECRET) || out.includes(encodeURIComponent(SECRET)));

    // The administrator grants the app that mailbox too: the re-run delivers only what was missing.
    await setAppMailboxes(server, ex.mailboxes);
    const again = await cli(args, { env: childEnv });
    t.is(again.code, 0, again.stderr);
    t.like((await readStatusLog(status)).summary, { delivered: ex.expected.length - expectedAllowed.length, failed: 0 });
    // A run with no state of its own: every item offered again, every one found and skipped.
    const fresh = args.map((a) => (a === state ? join(ex.work, 'state-fresh') : a));
    const third = await cli(fresh, { env: childEnv });
    t.is(third.code, 0, third.stderr);
    t.like((await readStatusLog(status)).summary, { delivered: 0, skipped: ex.expected.length, failed: 0 });
    t.deepEqual(await readBack(server, ex.mailboxes), ex.expected);

    const verify = await cli(['verify', '--state-dir', state, '--sink', sink, '--json'], { env: childEnv });
    t.is(verify.code, 0, verify.stderr);
    const store = (JSON.parse(verify.stdout) as { store: { intact: number; unexpected: unknown[] } }).store;
    t.is(Number(store.intact), ex.expected.length);
    t.deepEqual(store.unexpected, []);
  });

  test("xoauth2 (CLI): a managed identity (App Service) gets the tokens; the host's identity header is nowhere in the output", async (t) => {
    t.timeout(120_000);
    const work = await tempDir(t);
    const archive = join(work, 'x.zip');
    await generateSample(archive, { events: 30, seed: 5, edgeCases: false });
    const users = readJsonEntriesIndependently(archive)['users.json'] as { email?: string | null }[];
    const mailboxes = [...new Set(users.flatMap((u) => (canonicalMailbox(u.email) ? [u.email!.toLowerCase()] : [])))];
    const server = await startDovecot(mailboxes, { oauth2: { keys: [endpoint], audience: AUDIENCE, issuer: `https://sts.windows.net/${TENANT}/`, appMailboxes: mailboxes } });
    t.teardown(() => removeDovecot(server));
    const status = join(work, 'status.jsonl');
    const issued = endpoint.issued(MANAGED_IDENTITY);
    const sink = `imap://127.0.0.1:${server.port}/?tls=none&auth=xoauth2&credential=managedIdentity&clientId=${MANAGED_IDENTITY}`;
    const result = await cli(['run', archive, '--sink', sink, '--status-log', status, '--rejects', join(work, 'rejects')], { env: { ...endpoint.managedIdentityEnv, NODE_EXTRA_CA_CERTS: endpoint.caFile } });
    t.is(result.code, 0, result.stderr);
    const { summary } = await readStatusLog(status);
    t.true(summary.delivered > 30, `delivered ${summary.delivered}`);
    t.is(summary.failed, 0);
    t.true(endpoint.issued(MANAGED_IDENTITY) > issued);
    const held = (await Promise.all(mailboxes.map((m) => fetchFolder(server.port, m)))).flat();
    t.is(held.length, summary.delivered);
    const header = endpoint.managedIdentityEnv.IDENTITY_HEADER!;
    for (const out of [result.stdout, result.stderr, await readFile(status, 'utf8')]) t.false(out.includes(header));
  });

  test('xoauth2 (CLI): a wrong client secret stops the run before any delivery (exit 2), and the secret is nowhere in its output', async (t) => {
    t.timeout(120_000);
    const work = await tempDir(t);
    const archive = join(work, 'x.zip');
    await generateSample(archive, { events: 20, seed: 4, edgeCases: false });
    const status = join(work, 'status.jsonl');
    const wrong = 'Wr0ng~Cli/Secret?x=1';
    const result = await cli(['run', archive, '--sink', spec(''), '--status-log', status], { env: { PIVOT_IMAP_CLIENT_SECRET: wrong, NODE_EXTRA_CA_CERTS: endpoint.caFile } });
    t.is(result.code, 2, result.stderr);
    t.regex(result.log, /E_SINK_UNAVAILABLE: IMAP sink for 127\.0\.0\.1:\d+: no access token .*AADSTS7000215/);
    const text = await readFile(status, 'utf8').catch(() => '');
    t.false(text.includes('"outcome"'), 'no item reached the sink');
    for (const out of [result.stdout, result.stderr, text]) t.false(out.includes(wrong) || out.includes(encodeURIComponent(wrong)));
  });
});
