// A password written into a sink URL must never reach an error message, a log line or a status
// line, whatever characters it holds: the IMAP spec parser refuses it without quoting it, and
// redactSecrets masks it in any text that still carries one.
import test from 'ava';
import { redactSecrets } from '../src/redact.js';
import { createSink } from '../src/sinks/index.js';
import { parseAzureBlobSpec } from '../src/sinks/azblob/config.js';
import { parseImapSpec } from '../src/sinks/imap/config.js';
import { createImapSink } from '../src/sinks/imap/index.js';
import { createGraphSink } from '../src/sinks/graph/index.js';

/** Each holds a character that cuts a URL's authority short, or confuses a pattern that looks for one. */
const HOSTILE = [
  'Pw/x',
  'p w',
  'p@ss',
  '100%',
  '100%25',
  'a#b',
  'q?r=s',
  'a:b:c',
  'x@y.z/w?v#u',
  'pw@mail.acme.example',
  'pw@127.0.0.1:993/',
  '12/34',
  '//',
  'a://b@c',
  'quo"te',
  "apo'strophe",
  'back\\slash',
  'üñî©ødé',
  'tab\there',
  ' lead and trail ',
  '@',
  ':',
  '@@//??##',
  'semi;colon&amp=1',
  '<angle>',
  '{brace}[bracket]',
].map((p) => `S3cr${p}Z9t`);

/**
 * The forms a password can take in text: as typed, percent-encoded (as URL serializers write it),
 * JSON-escaped; and its first and last characters alone, which show when a pattern cuts it in two.
 */
function forms(password: string): string[] {
  return [...new Set([password, encodeURIComponent(password), JSON.stringify(password).slice(1, -1), 'S3cr', 'Z9t'])];
}

function urls(password: string): string[] {
  return [
    `imap://archiver:${password}@mail.acme.example/?folder=INBOX/Pivot`,
    `imap://archiver:${password}@mail.acme.example:993/?folder=INBOX/Pivot&probe=jane@acme.example`,
    `imaps://archiver@acme.example:${password}@mail.acme.example`,
    `imap://archiver:${encodeURIComponent(password)}@mail.acme.example/`,
    `imap://archiver:${password}@[::1]:143/?tls=none`,
    `azblob://user:${password}@pivot-staging/acme`,
    `https://user:${password}@acme.blob.core.windows.net/c?sv=1`,
  ];
}

test('redactSecrets: no userinfo password survives, whatever it holds, in plain text or a JSON line', (t) => {
  for (const password of HOSTILE) {
    for (const url of urls(password)) {
      const texts = [
        url,
        `IMAP sink ${url}: unknown option "bogus"`,
        `unknown sink ${JSON.stringify(url)}: expected one of maildir:..., imap:...`,
        `failed (${url}) for mailbox jane@acme.example: login refused`,
        JSON.stringify({ record: 'failure', sink: url, error: `cannot open ${url}`, detail: 'mailbox jane@acme.example: login refused' }),
      ];
      for (const text of texts) {
        const out = redactSecrets(text);
        for (const form of forms(password)) t.false(out.includes(form), `${JSON.stringify(form)} shows in ${out}`);
        if (text.startsWith('{')) {
          // A status line stays a JSON object with the same fields; only the password is gone.
          const parsed = JSON.parse(out) as Record<string, string>;
          t.deepEqual(Object.keys(parsed), ['record', 'sink', 'error', 'detail']);
          t.is(parsed.detail, 'mailbox jane@acme.example: login refused');
        }
      }
    }
  }
});

test('redactSecrets: text with no password in it is left alone', (t) => {
  for (const text of [
    'imap://archiver@127.0.0.1:1430/INBOX/Pivot',
    'export e1 -> imap://archiver@mail.acme.example:993/INBOX/Pivot: 10 delivered',
    'mailbox jane@acme.example: login refused for this mailbox: AUTHORIZATIONFAILED Authorization failed',
    'maildir:/srv/mail',
    'https://acme.blob.core.windows.net/staging/acme/batch-1.zip',
    JSON.stringify({ record: 'outcome', mailbox: 'jane@acme.example', sink: 'imap://archiver@h:993/INBOX/Pivot' }),
  ]) {
    t.is(redactSecrets(text), text);
  }
  t.is(redactSecrets('imap://u:pw@h/?token=abc&folder=x'), 'imap://u:***@h/?token=***&folder=x');
  t.is(redactSecrets('imap://u:Pw/x@host failed'), 'imap://u:***@host failed');
  t.is(redactSecrets('see imap://u:p w@host'), 'see imap://u:***@host');
});

test('IMAP spec: a password in the URL is refused, and the error never quotes it', (t) => {
  for (const password of HOSTILE) {
    for (const url of urls(password).filter((u) => u.startsWith('imap'))) {
      const err = t.throws(() => parseImapSpec(url), { code: 'E_SINK_CONFIG' }, url);
      for (const form of forms(password)) t.false(err!.message.includes(form), `${JSON.stringify(form)} shows in ${err!.message}`);
      t.regex(err!.message, /must not carry a password|not of the form/, url);
      // The factory (what the command line calls) says the same before it looks at the environment.
      const again = t.throws(() => createImapSink(url, { env: { PIVOT_IMAP_PASSWORD: 'x' } }));
      for (const form of forms(password)) t.false(again!.message.includes(form));
    }
  }
  // A user that forgot the host: the text after the `:` is most likely the password.
  t.false(t.throws(() => parseImapSpec('imap://archiver:S3cret'))!.message.includes('S3cret'));
});

test('IMAP spec: the URL is split by hand, as a URL parser would, where no password can be', (t) => {
  t.like(parseImapSpec('imap://archiver@mail.acme.example/?folder=INBOX/Pivot'), { user: 'archiver', host: 'mail.acme.example', port: 993, folder: 'INBOX/Pivot' });
  t.like(parseImapSpec('imap://archiver@acme.example@Mail.Acme.Example:1993'), { user: 'archiver@acme.example', host: 'mail.acme.example', port: 1993 });
  t.like(parseImapSpec('imap://archiver%40acme.example@mail.acme.example/'), { user: 'archiver@acme.example' });
  t.like(parseImapSpec('imap://a@[::1]:1430/?tls=none'), { host: '::1', port: 1430, tls: 'none' });
  t.like(parseImapSpec('imap://a@127.0.0.1:1430/?tls=none&probe=jane@acme.example'), { host: '127.0.0.1', probe: 'jane@acme.example' });
  t.like(parseImapSpec('imap://a@bücher.example/'), { host: 'xn--bcher-kva.example' });
  t.throws(() => parseImapSpec('imap://a@mail.acme.example/INBOX'), { message: /not a path/ });
  t.throws(() => parseImapSpec('imap://mail.acme.example/'), { message: /names no admin user/ });
  t.throws(() => parseImapSpec('imap://a@mail.acme.example/?probe='), { message: /probe must name a mailbox/ });
  t.throws(() => parseImapSpec('imap://a%zz@mail.acme.example/'), { code: 'E_SINK_CONFIG' });
  t.throws(() => parseImapSpec('imap://a@[zz]/'), { message: /not a valid host/ });
});

test('Azure Blob spec: credentials written into the URL are never quoted in its errors', (t) => {
  for (const password of HOSTILE) {
    for (const spec of [`azblob://user:${password}@pivot-staging/acme`, `azblob://user:${password}@pivot-staging?bogus=1`, `azblob://pivot-staging:${password}@x/acme`]) {
      const err = t.throws(() => parseAzureBlobSpec(spec), { code: 'E_SINK_CONFIG' }, spec);
      for (const form of forms(password)) t.false(err!.message.includes(form), `${JSON.stringify(form)} shows in ${err!.message}`);
    }
  }
  t.throws(() => parseAzureBlobSpec('azblob://Pivot_Staging'), { message: /container "Pivot_Staging"/ });
});

// src/sinks/index.ts (lead-owned): the unknown-sink error quotes the spec up to its first `?`,
// which cuts a password holding `?` in two, so redactSecrets finds no `@` and the part before the
// `?` showed; it names the scheme alone.
test('createSink: an unknown sink scheme is named without quoting a password', async (t) => {
  for (const password of HOSTILE) {
    const err = await t.throwsAsync(createSink(`imapx://archiver:${password}@mail.acme.example/`, { cwd: '.' }), { code: 'E_SINK_CONFIG' });
    for (const form of forms(password)) t.false(err!.message.includes(form), `${JSON.stringify(form)} shows in ${err!.message}`);
  }
});

test('a secret pasted where a variable\'s name goes (secretEnv=, passwordEnv=) is never repeated in the error; the default name is', (t) => {
  const pasted = t.throws(() => createGraphSink('graph://00000000-0000-0000-0000-000000000001/?clientId=00000000-0000-0000-0000-000000000002&secretEnv=Adm1nPassw0rd', { env: {} }), { code: 'E_SINK_CONFIG' });
  t.false(pasted!.message.includes('Adm1nPassw0rd'), pasted!.message);
  t.regex(pasted!.message, /the environment variable secretEnv= names/);
  const unset = t.throws(() => createGraphSink('graph://00000000-0000-0000-0000-000000000001/?clientId=00000000-0000-0000-0000-000000000002', { env: {} }));
  t.regex(unset!.message, /PIVOT_GRAPH_CLIENT_SECRET/);
  const imapPassword = t.throws(() => createImapSink('imap://archiver@127.0.0.1/?tls=none&passwordEnv=Adm1nPassw0rd', { env: {} }), { code: 'E_SINK_CONFIG' });
  t.false(imapPassword!.message.includes('Adm1nPassw0rd'), imapPassword!.message);
  t.regex(imapPassword!.message, /the environment variable passwordEnv= names/);
  const imapSecret = t.throws(() => createImapSink('imaps://outlook.office365.com/?auth=xoauth2&tenant=00000000-0000-0000-0000-000000000001&clientId=00000000-0000-0000-0000-000000000002&secretEnv=S3cretValue_x', { env: {} }), { code: 'E_SINK_CONFIG' });
  t.false(imapSecret!.message.includes('S3cretValue_x'), imapSecret!.message);
  t.regex(t.throws(() => createImapSink('imap://archiver@127.0.0.1/?tls=none', { env: {} }))!.message, /PIVOT_IMAP_PASSWORD/);
});

// A sink's description (no secret in it) quoted in an error, and later in the same text a mailbox:
// no userinfo, so nothing to mask. Masked as a password, the `:` after the description ran to the
// mailbox's `@` and the reason was lost (`graph://…/?clientId=X&folder=Inbox:***@acme.invalid`).
test('redactSecrets: a sink description followed later by an e-mail address is left whole, the reason with it', (t) => {
  for (const text of [
    'Graph sink graph://00000000-0000-0000-0000-000000000001/?clientId=X&folder=Inbox: mailbox jane@acme.invalid: 403 ErrorAccessDenied',
    'graph://TENANT/?folder=Archive/Pivot&mode=importMime: jane@acme.invalid: the mailbox is not licensed',
    'cannot deliver to graph://TENANT/?clientId=X&folder=Inbox; see https://learn.microsoft.com/graph/errors for bob@acme.invalid',
    'graph://TENANT/?folder=Inbox#x: jane@acme.invalid refused',
    // The IMAP sink's description: a port, then the folder.
    'IMAP sink imap://archiver@mail.acme.example:993/INBOX/Pivot: mailbox jane@acme.invalid: login refused',
    'imap://outlook.office365.com:993/INBOX/Pivot: mailbox jane@acme.invalid: AUTHENTICATE failed',
    'imap://archiver@mail.acme.example:993?x: mailbox jane@acme.invalid: refused',
    'imap://archiver@mail.acme.example/?folder=INBOX: login refused for jane@acme.invalid',
    'azblob://pivot-staging/acme: export e1: jane@acme.invalid: batch not stored',
  ]) {
    t.is(redactSecrets(text), text);
    // As a status line's field: the same.
    const line = JSON.stringify({ record: 'failure', code: 'E_SINK_UNAVAILABLE', error: text });
    t.is(redactSecrets(line), line);
  }
});

test('redactSecrets: real userinfo is still masked when a sink description or an e-mail address follows', (t) => {
  t.is(redactSecrets('imap://u:S3cret@mail.acme.example:993/INBOX: mailbox jane@acme.invalid'), 'imap://u:***@acme.invalid');
  t.is(redactSecrets('imap://archiver@acme.example:S3cret@mail.acme.example failed; graph://T/?folder=Inbox: jane@acme.invalid'), 'imap://archiver@acme.example:***@acme.invalid');
  t.is(redactSecrets('imap://u:S3cr/t@h failed, graph://T/?folder=Inbox: jane@acme.invalid'), 'imap://u:***@acme.invalid');
  // After a description that has no userinfo, a URL that has one.
  t.is(redactSecrets('graph://T/?folder=Inbox: then imap://u:S3cret@h/ for jane@acme.invalid'), 'graph://T/?folder=Inbox: then imap://u:***@acme.invalid');
  t.is(redactSecrets('imap://a@h:993/?x=b@c'), 'imap://a@h:***@c');
  // A password that starts like a port and holds a space is still a password (helper-99), and a user a path cuts in two still has one.
  t.is(redactSecrets('imap://user:2024/Summer Rain@mail.example.com:993/INBOX'), 'imap://user:***@mail.example.com:993/INBOX');
  t.is(redactSecrets('imap://user:1#x y@host'), 'imap://user:***@host');
  t.is(redactSecrets('imap://CORP/jdoe:Secr3t@host'), 'imap://CORP/jdoe:***@host');
});

// Masking a description's query as userinfo hid these too, when an address followed; alone they showed.
test('redactSecrets: client secrets, refresh tokens and assertions in a query string are masked', (t) => {
  for (const [text, masked] of [
    ['graph://T/?clientId=X&clientSecret=S3cret~x&folder=Inbox: jane@acme.invalid', 'graph://T/?clientId=X&clientSecret=***&folder=Inbox: jane@acme.invalid'],
    ['https://login.example/t/oauth2/v2.0/token?client_id=X&client_secret=S3cret~x&scope=y', 'https://login.example/t/oauth2/v2.0/token?client_id=X&client_secret=***&scope=y'],
    ['https://h/?refresh_token=S3cret.x&x=1', 'https://h/?refresh_token=***&x=1'],
    ['https://h/?client_assertion=eyJS3cret.x', 'https://h/?client_assertion=***'],
    ['azblob://pivot-staging/acme?sv=2024&sp=rlcw&sig=S3cret%2B', 'azblob://pivot-staging/acme?sv=2024&sp=rlcw&sig=***'],
  ] as const) {
    t.is(redactSecrets(text), masked);
    t.false(redactSecrets(JSON.stringify({ error: text })).includes('S3cret'));
  }
  // The name of the variable that holds the secret is not one: it stays, for the person who sets it.
  t.is(redactSecrets('graph://T/?clientId=X&secretEnv=MY_GRAPH_SECRET'), 'graph://T/?clientId=X&secretEnv=MY_GRAPH_SECRET');
});
