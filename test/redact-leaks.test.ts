// Secrets a review found passing redactSecrets unmasked: in an Authorization header, in a JSON
// body an error quotes, in a query string or a variable assignment written some other way than
// the common one. And text built to make the scan slow: it must stay linear in the text's length.
import test, { type ExecutionContext } from 'ava';
import { redactSecrets, redactedJson } from '../src/redact.js';

const SECRET = 'S3cr+t/Z9.x-y_z~w';

/** `text` with its secret masked, checked the same way inside a JSON line (a status line): the line stays JSON, the field comes back masked alike. */
function masked(t: ExecutionContext, text: string, expected: string): void {
  t.is(redactSecrets(text), expected, text);
  const line = JSON.stringify({ record: 'failure', error: text, detail: 'mailbox jane@acme.example' });
  const out = redactSecrets(line);
  t.false(out.includes('S3cr'), out);
  const parsed = JSON.parse(out) as { error: string; detail: string };
  t.is(parsed.error, expected, line);
  t.is(parsed.detail, 'mailbox jane@acme.example');
}

test('redactSecrets: the credentials of an Authorization header or a Bearer token are masked, whatever the case or the scheme', (t) => {
  masked(t, `Authorization: Bearer ${SECRET}`, 'Authorization: Bearer ***');
  masked(t, `request refused: Bearer ${SECRET} is expired`, 'request refused: Bearer *** is expired');
  masked(t, `authorization: Basic ${Buffer.from(`archiver:${SECRET}`).toString('base64')}`, 'authorization: Basic ***');
  masked(t, `AUTHORIZATION: bearer ${SECRET}`, 'AUTHORIZATION: bearer ***');
  masked(t, `headers: { authorization: 'Bearer ${SECRET}', accept: '*/*' }`, "headers: { authorization: 'Bearer ***', accept: '*/*' }");
  masked(t, `Authorization: SharedKey acme:${SECRET}`, 'Authorization: SharedKey ***');
  masked(t, `{"Authorization":"Basic ${SECRET}"}`, '{"Authorization":"Basic ***"}');
  // Not a header: the words stay.
  for (const text of ['mailbox jane@acme.example: login refused: AUTHORIZATIONFAILED Authorization failed', 'the basic plan: no token given', '{"token_type":"Bearer"}']) t.is(redactSecrets(text), text);
});

test('redactSecrets: secret fields of a JSON body quoted in an error are masked, escaped or not, and a JSON text stays JSON', (t) => {
  const body = { token_type: 'Bearer', access_token: `eyJ${SECRET}`, refresh_token: SECRET, id_token: SECRET, expires_in: 3599 };
  const quoted = `POST https://login.example/t/oauth2/v2.0/token: 400 ${JSON.stringify(body)}`;
  masked(t, quoted, 'POST https://login.example/t/oauth2/v2.0/token: 400 {"token_type":"Bearer","access_token":"***","refresh_token":"***","id_token":"***","expires_in":3599}');
  masked(t, `body {"client_secret" : "${SECRET}", "password":"${SECRET}", "client_assertion":"${SECRET}"}`, 'body {"client_secret" : "***", "password":"***", "client_assertion":"***"}');
  // Pretty-printed, camelCase, holding a quote or a backslash of its own, cut short by the error.
  masked(t, `{\n  "clientSecret": "${SECRET}",\n  "accessToken": "${SECRET}"\n}`, '{\n  "clientSecret": "***",\n  "accessToken": "***"\n}');
  masked(t, JSON.stringify({ password: `pa"ss\\${SECRET}` }), '{"password":"***"}');
  masked(t, `answer: {"access_token":"${SECRET}`, 'answer: {"access_token":"***');
  // A JSON text inside a JSON string inside a JSON line (the error's body, quoted by a plugin's message).
  const nested = JSON.stringify({ record: 'outcome', detail: `plugin p: ${JSON.stringify({ error: JSON.stringify({ password: `a"b\\${SECRET}` }) })}` });
  const out = redactSecrets(nested);
  t.false(out.includes('S3cr'), out);
  t.is((JSON.parse(out) as { detail: string }).detail, 'plugin p: {"error":"{\\"password\\":\\"***\\"}"}');
  // Fields that hold no secret stay.
  for (const text of ['{"token_type":"Bearer","expires_in":3599}', '{"error":{"code":"ErrorAccessDenied","message":"Access is denied."}}', '{"secretEnv":"PIVOT_GRAPH_CLIENT_SECRET"}']) t.is(redactSecrets(text), text);
});

test('redactSecrets: a query-style secret is masked wherever it starts, not only after ? or &', (t) => {
  masked(t, `sig=${SECRET}`, 'sig=***');
  masked(t, `sv=2024-05-04&sp=rl sig=${SECRET}&se=2030`, 'sv=2024-05-04&sp=rl sig=***');
  masked(t, `token rejected: client_secret=${SECRET}`, 'token rejected: client_secret=***');
  masked(t, `https://app.example/cb#access_token=${SECRET}&token_type=Bearer`, 'https://app.example/cb#access_token=***&token_type=Bearer');
  masked(t, `Server=db;User Id=u;password=${SECRET};Database=d`, 'Server=db;User Id=u;password=***;Database=d');
  masked(t, `--password=${SECRET} given`, '--password=*** given');
  // A password may hold `)`: the value runs to white space, whatever it holds.
  masked(t, `(access_token=${SECRET})`, '(access_token=***');
  // After a value that holds no secret, in the same word.
  masked(t, `DB_HOST=db;DB_PASSWORD=${SECRET}`, 'DB_HOST=db;DB_PASSWORD=***');
  masked(t, `PIVOT_SHARD=1,API_TOKEN=${SECRET}`, 'PIVOT_SHARD=1,API_TOKEN=***');
});

test('redactSecrets: a secret variable set in lower or mixed case is masked; a name that names a variable stays', (t) => {
  masked(t, `client_secret=${SECRET}`, 'client_secret=***');
  masked(t, `export azure_client_secret='a ${SECRET}' then`, "export azure_client_secret='***' then");
  masked(t, `Pivot_Imap_Password=${SECRET}`, 'Pivot_Imap_Password=***');
  masked(t, `db_pass="${SECRET} x" api_key=${SECRET} apiKey=${SECRET}`, 'db_pass="***" api_key=*** apiKey=***');
  // A backslash in the value is part of it.
  masked(t, `PASSWORD=ab\\${SECRET}`, 'PASSWORD=***');
  for (const text of ['secretEnv=PIVOT_GRAPH_CLIENT_SECRET passwordEnv=MY_PW passwordless=yes', 'graph://T/?clientId=X&credential=managedIdentity&secretEnv=MY_SECRET', 'keyId=k1 tokenType=x']) t.is(redactSecrets(text), text);
});

test('redactedJson: new patterns are not skipped by the quick check; archive data fields are kept exactly', (t) => {
  const record = { record: 'outcome', itemId: `Bearer ${SECRET}`, messageId: `<password=${SECRET}@acme.example>`, detail: `refused: Bearer ${SECRET}`, error: `{"access_token":"${SECRET}"}` };
  const out = JSON.parse(redactedJson(record)) as typeof record;
  t.is(out.itemId, record.itemId);
  t.is(out.messageId, record.messageId);
  t.is(out.detail, 'refused: Bearer ***');
  t.is(out.error, '{"access_token":"***"}');
  const delivered = { record: 'outcome', runId: 'r1', at: '2026-11-23T09:00:00Z', itemId: 'm_1', mailbox: 'jane@acme.example', sink: 'maildir:/srv/mail', outcome: 'delivered' };
  t.is(redactedJson(delivered), JSON.stringify(delivered));
});

/** Texts built to make a scan go back over what it has read: each 64 KB. */
function hostileTexts(size: number): Map<string, string> {
  const run = (unit: string, n = size) => unit.repeat(Math.ceil(n / unit.length)).slice(0, n);
  const half = size / 2;
  return new Map([
    ['=', run('=')],
    ['/', run('/')],
    ['@', run('@')],
    [':', run(':')],
    ['letters', `x=${run('a')}`],
    ['UPPER', `X=${run('A')}`],
    ['a=a=', run('a=')],
    ['//a:b', run('//a:b')],
    ['//a:b@', run('//a:b@')],
    ['//@', run('//@')],
    ['unicode letters', `//a:b@${run('é')}`],
    ['unicode and @', `//a:${run('é@')}`],
    ['many //a: then many @!', run('//a:', half) + run('@!', half)],
    ['//a:@!', run('//a:@!')],
    ['// then one @', `${run('//', size - 1)}@`],
    ['//x/ then one @', `${run('//x/', size - 1)}@`],
    ['many //a: then one long host', `${run('//a:', half)}@${run('a-', half)}-`],
    ['escaped quotes in a JSON line', `{"a":"${run('//a:\\"@!')}"}`],
    ['a port before spaces', `${run('//a.b:1/', half)}${run('1', half)}/@ @h`],
    ['pasted userinfo', run('//x/a:@!')],
    ['lines', run('//a:b@!\n')],
    ['backslashes', `PASSWORD=${run('\\')}`],
    ['quotes', run('"')],
    ['escaped keys', run('\\"a\\":\\"')],
    ['JSON keys', run('"password":"')],
    ['Bearer', run('Bearer ')],
    ['authorization:', run('authorization: ')],
    ['&sig=', run('&sig=')],
    ['word then =', `${run('a_', size - 1)}=`],
  ]);
}

// Linear code takes a few milliseconds for each; the scans this replaced took seconds for the
// worst. The bound is generous, so a loaded machine does not fail it.
test('redactSecrets: hostile 64 KB texts are each read in linear time', (t) => {
  let slowest = { name: '', ms: 0 };
  for (const [name, text] of hostileTexts(64 * 1024)) {
    const started = performance.now();
    redactSecrets(text);
    redactedJson({ detail: text });
    const ms = performance.now() - started;
    if (ms > slowest.ms) slowest = { name, ms };
    t.true(ms < 2000, `${name}: ${Math.round(ms)} ms`);
  }
  t.log(`slowest: ${slowest.name}, ${Math.round(slowest.ms)} ms`);
});

test("redactSecrets: a signing key's text (keygen's PRIVATE+KEY+NAME+ID+DATA) is masked wherever a message quotes it", (t) => {
  masked(t, `--signing-key /srv/PRIVATE+KEY+acme+7b451412+${SECRET} cannot be read: ENOENT`, '--signing-key /srv/PRIVATE+KEY+*** cannot be read: ENOENT');
  t.is(redactSecrets('a public key acme+7b451412+AAAA'), 'a public key acme+7b451412+AAAA');
});
