// A secret's bare value, wherever it turns up: an IMAP server that echoes the LOGIN command or the
// SASL blob (PLAIN: base64 of "authzid\0user\0password"; XOAUTH2: base64 of "user=..\x01auth=Bearer
// TOKEN\x01\x01") in its NO answer, a plugin's error that quotes the password. No pattern names
// such a value (no `NAME=`, no URL): the secrets the run reads are registered with the redactor,
// with the forms they are sent in, and masked wherever they appear. Was: the echo reached stderr,
// the status log, the run log and the ledger.
import test, { type ExecutionContext } from 'ava';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { registerSecret, redactSecrets, redactedJson } from '../src/redact.js';
import { cli, type CliResult } from './helpers/cli.js';
import { startEntraEndpoint } from './helpers/entra-endpoint.js';
import { tempDir } from './helpers/tmp.js';

/** What the server was sent: every command line (a literal's bytes joined in), and every SASL answer line. */
interface Heard {
  lines: string[];
}

/**
 * An IMAP server that refuses every login, quoting what it was sent: `TAG NO
 * [AUTHENTICATIONFAILED] you said: <the whole command>` (and, for AUTHENTICATE without SASL-IR,
 * the client's answer line too).
 */
async function echoingServer(t: ExecutionContext, capabilities = 'IMAP4rev1 SASL-IR AUTH=PLAIN AUTH=XOAUTH2'): Promise<{ port: number; heard: Heard }> {
  const heard: Heard = { lines: [] };
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.write(`* OK [CAPABILITY ${capabilities}] echo ready\r\n`);
    let buffer = Buffer.alloc(0);
    // A command waiting for its literal (`{n}`) or its SASL answer.
    let pending: { tag: string; text: string; literal?: number; sasl?: boolean } | undefined;
    const answer = (tag: string, command: string, text: string) => {
      const verb = command.toUpperCase();
      if (verb === 'LOGIN' || verb === 'AUTHENTICATE') {
        heard.lines.push(text);
        socket.write(`${tag} NO [AUTHENTICATIONFAILED] you said: ${text.replace(/[\r\n]/g, ' ')}\r\n`);
      } else if (verb === 'CAPABILITY') socket.write(`* CAPABILITY ${capabilities}\r\n${tag} OK done\r\n`);
      else if (verb === 'ID') socket.write(`* ID NIL\r\n${tag} OK done\r\n`);
      else if (verb === 'LOGOUT') socket.end(`* BYE bye\r\n${tag} OK done\r\n`);
      else socket.write(`${tag} OK done\r\n`);
    };
    socket.on('data', (data: Buffer) => {
      buffer = Buffer.concat([buffer, data]);
      for (;;) {
        if (pending?.literal !== undefined) {
          if (buffer.length < pending.literal) return;
          pending.text += buffer.subarray(0, pending.literal).toString('latin1');
          buffer = buffer.subarray(pending.literal);
          pending.literal = undefined;
        }
        const end = buffer.indexOf('\r\n');
        if (end < 0) return;
        const line = buffer.subarray(0, end).toString('latin1');
        buffer = buffer.subarray(end + 2);
        if (pending?.sasl) {
          const { tag, text } = pending;
          pending = undefined;
          answer(tag, 'AUTHENTICATE', `${text} / ${line}`);
          continue;
        }
        const text = (pending?.text ?? '') + line;
        const literal = /\{(\d+)(\+?)\}$/.exec(line);
        const [tag = '*', command = ''] = text.split(' ');
        if (literal) {
          pending = { tag, text, literal: Number(literal[1]) };
          if (!literal[2]) socket.write('+ go ahead\r\n');
          continue;
        }
        pending = undefined;
        if (command.toUpperCase() === 'AUTHENTICATE' && text.split(' ').length === 3) {
          pending = { tag, text, sasl: true };
          socket.write('+ \r\n');
          continue;
        }
        answer(tag, command, text);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return { port: (server.address() as { port: number }).port, heard };
}

/** The base64 text that only `secret`'s own bytes make, at each of the three offsets it can start at in a longer blob. */
function base64Cores(secret: string): string[] {
  const bytes = Buffer.from(secret);
  return [0, 1, 2].map((skip) => {
    const whole = bytes.subarray(skip, skip + Math.floor((bytes.length - skip) / 3) * 3);
    return whole.toString('base64');
  });
}

/** Every text the run left: stdout, stderr, the log file, the status log, the run logs and the ledger. */
async function everyRecord(result: CliResult, work: string): Promise<Map<string, string>> {
  const texts = new Map([
    ['stdout', result.stdout],
    ['stderr', result.stderr],
    ['log file', await readFile(join(work, 'log.jsonl'), 'utf8')],
    ['status log', await readFile(join(work, 'status.jsonl'), 'utf8')],
    ['ledger', await readFile(join(work, 'state', 'ledger.jsonl'), 'utf8')],
  ]);
  for (const name of await readdir(join(work, 'state', 'runs'))) texts.set(`run log ${name}`, await readFile(join(work, 'state', 'runs', name), 'utf8'));
  return texts;
}

/** None of `texts` holds any of `secrets` (the raw value, or the base64 of any blob the server was sent, or a core of its base64). */
function holdsNone(t: ExecutionContext, texts: Map<string, string>, secrets: Record<string, string>): void {
  for (const [where, text] of texts) {
    for (const [what, secret] of Object.entries(secrets)) t.false(text.includes(secret), `${where} holds ${what} (${secret}):\n${text}`);
  }
}

/** What the refusal says still reads: the server's answer, with the secret masked. */
function refusalSaid(t: ExecutionContext, result: CliResult, verb: RegExp): void {
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, /AUTHENTICATIONFAILED/);
  t.regex(result.stderr, verb);
  t.regex(result.stderr, /\*\*\*/);
}

const PASSWORD = 'Tr0ub4dor-Horse-Staple';

for (const mode of ['master', 'authzid'] as const) {
  test(`cli: an IMAP server that echoes the admin's ${mode === 'master' ? 'LOGIN command' : 'SASL PLAIN blob'} in its refusal: the password and its base64 forms reach no output, log or record`, async (t) => {
    t.timeout(60_000);
    const work = await tempDir(t);
    // No AUTH=PLAIN offered: a master-user login is a LOGIN command, with the password as it is.
    const { port, heard } = await echoingServer(t, mode === 'master' ? 'IMAP4rev1' : undefined);
    const sink = `imap://archiver@127.0.0.1:${port}/?tls=none&auth=${mode}&retries=0&retryDelay=10`;
    const result = await cli(
      ['run', '--sample', '--sink', sink, '--all-domains', '--state-dir', join(work, 'state'), '--status-log', join(work, 'status.jsonl'), '--log-file', join(work, 'log.jsonl'), '--rejects', join(work, 'rejects')],
      { env: { PIVOT_IMAP_PASSWORD: PASSWORD } },
    );
    t.true(heard.lines.length > 0, 'the server was asked to log in');
    refusalSaid(t, result, mode === 'master' ? /you said: \S+ LOGIN/ : /you said: \S+ AUTHENTICATE PLAIN/);
    const blobs = Object.fromEntries(heard.lines.flatMap((line) => line.split(' ').filter((word) => word.length >= 12 && /^[A-Za-z0-9+/]+=*$/.test(word) && Buffer.from(word, 'base64').toString('latin1').includes(PASSWORD)).map((word) => [`the blob ${Buffer.from(word, 'base64').toString('latin1')}`, word])));
    if (mode === 'authzid') t.true(Object.keys(blobs).length > 0, `the server was sent a SASL PLAIN blob: ${heard.lines.join(' | ')}`);
    else t.true(heard.lines.some((line) => line.includes(PASSWORD)), `the server was sent the password: ${heard.lines.join(' | ')}`);
    const cores = Object.fromEntries(base64Cores(PASSWORD).map((core, i) => [`the password's base64 at offset ${i}`, core]));
    holdsNone(t, await everyRecord(result, work), { password: PASSWORD, 'the password percent-encoded': encodeURIComponent(PASSWORD), ...blobs, ...cores });
  });
}

test("cli: an IMAP server that echoes the XOAUTH2 blob in its refusal: neither the app's access token nor its client secret, in any form, reaches an output, log or record", async (t) => {
  t.timeout(90_000);
  const work = await tempDir(t);
  const tenant = '72f988bf-86f1-41af-91ab-2d7cd011db47';
  const app = '2b3c4d5e-6f70-4182-93a4-b5c6d7e8f901';
  const secret = 'Xo~8Q~s3cr3t.Val/ue?#@%';
  const entra = await startEntraEndpoint({ tenant, apps: [{ clientId: app, secrets: [secret], roles: ['IMAP.AccessAsApp'] }] });
  t.teardown(() => entra.close());
  const { port, heard } = await echoingServer(t);
  const sink = `imap://127.0.0.1:${port}/?tls=none&auth=xoauth2&tenant=${tenant}&clientId=${app}&authorityHost=${entra.authorityHost}&retries=0&retryDelay=10&probe=jane@acme.example`;
  const result = await cli(
    ['run', '--sample', '--sink', sink, '--all-domains', '--state-dir', join(work, 'state'), '--status-log', join(work, 'status.jsonl'), '--log-file', join(work, 'log.jsonl'), '--rejects', join(work, 'rejects')],
    { env: { PIVOT_IMAP_CLIENT_SECRET: secret, NODE_EXTRA_CA_CERTS: entra.caFile } },
  );
  refusalSaid(t, result, /you said: \S+ AUTHENTICATE XOAUTH2/);
  // The blob the server was sent, and the token in it.
  const blob = heard.lines.flatMap((line) => line.split(' ')).find((word) => Buffer.from(word, 'base64').toString('latin1').includes('auth=Bearer '));
  t.truthy(blob, heard.lines.join(' | '));
  const token = /auth=Bearer ([^\x01]+)/.exec(Buffer.from(blob!, 'base64').toString('latin1'))![1]!;
  const cores = Object.fromEntries(base64Cores(token).map((core, i) => [`the token's base64 at offset ${i}`, core]));
  holdsNone(t, await everyRecord(result, work), { 'the XOAUTH2 blob': blob!, 'the access token': token, 'the client secret': secret, 'the client secret percent-encoded': encodeURIComponent(secret), ...cores });
});

test('registerSecret: a registered value is masked wherever it appears, in every form it is sent in; values too short to mask blindly are not', (t) => {
  const secret = 'pl4in-Pass"word\\x';
  registerSecret(secret);
  const plain = Buffer.from(`\0jane@acme.example\0archiver\0${secret}`).toString('base64');
  const cases = [
    `plugin p: cannot reach the vault with ${secret} (refused)`,
    `NO [AUTHENTICATIONFAILED] you said: a AUTHENTICATE PLAIN ${plain}`,
    `url ${encodeURIComponent(secret)} given`,
    `form ${new URLSearchParams({ p: secret }).toString().slice(2)} given`,
    `a LOGIN "archiver" ${JSON.stringify(secret)}`,
    ...[0, 1, 2].map((pad) => `blob ${Buffer.from(`${'x'.repeat(pad)}${secret}`).toString('base64')} end`),
    ...[0, 1, 2].map((pad) => `blob ${Buffer.from(`${'x'.repeat(pad)}${secret}\x01\x01`).toString('base64')} end`),
  ];
  for (const text of cases) {
    const out = redactSecrets(text);
    t.true(out.includes('***'), `${text} -> ${out}`);
    for (const core of [secret, ...base64Cores(secret)]) t.false(out.includes(core), `${text} -> ${out}`);
  }
  // In a record (a status line): masked too, the archive's own fields kept as they are.
  const line = JSON.parse(redactedJson({ record: 'outcome', mailbox: 'jane@acme.example', detail: `plugin p: ${secret}` })) as Record<string, string>;
  t.deepEqual(line, { record: 'outcome', mailbox: 'jane@acme.example', detail: 'plugin p: ***' });
  // Too short to mask blindly: every "abc" of every text would go.
  registerSecret('abc');
  t.is(redactSecrets('abc def'), 'abc def');
});

/** A storage account stand-in that refuses every request 403 with a message quoting `echo(request)` (as a confused proxy or a debug build might). */
async function echoingStorage(t: ExecutionContext, echo: (url: string, headers: Record<string, unknown>) => string): Promise<number> {
  const server = createHttpServer((req, res) => {
    const body = `<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request: ${echo(req.url ?? '', req.headers)}</Message></Error>`;
    res.writeHead(403, { 'content-type': 'application/xml', 'x-ms-error-code': 'AuthenticationFailed' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as { port: number }).port;
}

test("cli: a storage service that quotes the SAS's signature or the account key bare in its refusal: neither reaches an output, log or record", async (t) => {
  t.timeout(60_000);
  const sig = 'q1w2E3r4T5y6U7i8O9p0+AbCdEfGh/IjKlMnOp=';
  const key = 'Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5d2FsZG8xMjM0NTY3OA==';
  for (const [name, env, secrets] of [
    ['a SAS', (port: number) => ({ AZURE_STORAGE_ACCOUNT_URL: `http://127.0.0.1:${port}/devstoreaccount1`, AZURE_STORAGE_SAS_TOKEN: `sv=2024-05-04&ss=b&srt=co&sp=rlcwd&se=2099-01-01T00:00:00Z&sig=${encodeURIComponent(sig)}` }), { 'the signature': sig, 'the signature percent-encoded': encodeURIComponent(sig) }],
    ['an account key', (port: number) => ({ AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=${key};BlobEndpoint=http://127.0.0.1:${port}/devstoreaccount1;` }), { 'the account key': key }],
  ] as const) {
    const work = await tempDir(t);
    // The refusal quotes the signature decoded, or the key, with nothing around it to name it.
    const port = await echoingStorage(t, (url) => `the signature ${decodeURIComponent(/[?&]sig=([^&]*)/.exec(url)?.[1] ?? '')} or the key ${key} is not the one expected`);
    const result = await cli(
      ['run', '--sample', '--sink', 'azblob://pivot-staging/acme?retries=0', '--state-dir', join(work, 'state'), '--status-log', join(work, 'status.jsonl'), '--log-file', join(work, 'log.jsonl'), '--rejects', join(work, 'rejects')],
      { env: env(port) },
    );
    t.is(result.code, 2, `${name}: ${result.stderr}`);
    t.regex(result.stderr, /AuthenticationFailed|Server failed to authenticate/, name);
    holdsNone(t, await everyRecord(result, work), secrets);
  }
});

test('cli: a Graph tenant written with a secret after it (graph://TENANT:SECRET/, graph://SECRET@TENANT/) is refused without quoting it (was: quoted in stderr and the status log)', async (t) => {
  const work = await tempDir(t);
  const secret = 'Sup3r-S3cret-Valu3';
  for (const tenant of [`contoso.onmicrosoft.com:${secret}`, `${secret}@contoso.onmicrosoft.com`, `contoso:${secret}`]) {
    const status = join(work, 'status.jsonl');
    const result = await cli(['run', '--sample', '--all-domains', '--sink', `graph://${tenant}/?clientId=3c9d6a4e-1b2f-4a8e-9f0d-5e6b7c8d9e0f`, '--status-log', status], { env: { PIVOT_GRAPH_CLIENT_SECRET: 'not-this-one' } });
    t.is(result.code, 2, result.stderr);
    t.regex(result.log, /E_SINK_CONFIG: Graph sink: the tenant \(not repeated here: it holds characters no tenant has, perhaps a secret\) must be a tenant id \(GUID\) or a domain such as contoso\.onmicrosoft\.com/);
    for (const text of [result.stdout, result.stderr, await readFile(status, 'utf8')]) t.false(text.includes(secret), text);
  }
  // A tenant that only looks wrong is named, to be corrected.
  const typo = await cli(['run', '--sample', '--all-domains', '--sink', 'graph://contoso/?clientId=3c9d6a4e-1b2f-4a8e-9f0d-5e6b7c8d9e0f'], { env: { PIVOT_GRAPH_CLIENT_SECRET: 'not-this-one' } });
  t.regex(typo.log, /Graph sink graph:\/\/contoso: the tenant must be a tenant id/);
});

test("cli: a plugin's error that quotes the IMAP admin's password bare (no NAME= before it) is masked on stderr and stdout (a dry run: the sink reads its secret, nothing is delivered)", async (t) => {
  const work = await tempDir(t);
  const password = 'B4re-Passw0rd-In-Plugin';
  const plugin = join(work, 'leaky.mjs');
  await writeFile(plugin, "export default { name: 'leaky', hostApi: '^1.0.0', transform(item) { if (item.id === 'm_2') throw new Error(`the vault refused ${process.env.PIVOT_IMAP_PASSWORD} for this item`); return item; } };\n");
  const result = await cli(['run', '--sample', '--dry-run', '--all-domains', '--sink', 'imap://archiver@127.0.0.1:9/?tls=none', '--max-rejected', '100%', '--plugin', plugin], { cwd: work, env: { PIVOT_IMAP_PASSWORD: password } });
  t.is(result.code, 0, result.stderr);
  t.regex(result.log, /plugin leaky failed on item m_2: the vault refused \*\*\* for this item/);
  for (const text of [result.stdout, result.stderr]) t.false(text.includes(password), text);
});
