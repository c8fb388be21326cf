// SinkOptions.stop (aborted on SIGINT/SIGTERM): the IMAP sink stops waiting between retries and
// stops connecting, and rejects what it still holds at once, so a signal during a server outage
// ends the run within seconds (it took 5 min 14 s).
import test from 'ava';
import { createServer, type Socket } from 'node:net';
import { ErrorCode } from '../src/errors.js';
import { parseImapSpec } from '../src/sinks/imap/config.js';
import { createImapSink, ImapSink } from '../src/sinks/imap/index.js';
import { ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, removeDovecot, startDovecot } from './helpers/dovecot.js';
import { delivery, withServer } from './helpers/sink-conformance.js';

const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const STOPPED = /^mailbox \S+: stopped by a signal before it was stored \(a re-run delivers it\)$/;

/** A server that takes connections and never says a word: a login to it waits for its greeting. */
async function silentServer(t: { teardown(fn: () => void | Promise<void>): void }): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return (server.address() as { port: number }).port;
}

/** How each write ended: the outcome, or the error. */
function settle<T>(p: Promise<T>): Promise<T | Error> {
  return p.then(
    (v) => v,
    (e: Error) => e,
  );
}

test('imap stop: a write waiting for a server that does not answer is rejected at once, as stopped', async (t) => {
  const port = await silentServer(t);
  const stop = new AbortController();
  const config = parseImapSpec(`imap://archiver@127.0.0.1:${port}/?tls=none&retries=5&retryDelay=10000`);
  // No credential check in open(): the login under test is the write's own.
  const sink = new ImapSink(config, ADMIN_PASSWORD, { stop: stop.signal, proveCredentials: false });
  await sink.open();
  const write = settle(sink.write(delivery(1)));
  await sleep(500);
  const signalled = Date.now();
  stop.abort();
  const result = await write;
  t.true(Date.now() - signalled < 2_000, `rejected ${Date.now() - signalled} ms after the signal`);
  t.like(result, { code: ErrorCode.SINK_WRITE });
  t.regex((result as Error).message, STOPPED);
  const closing = Date.now();
  await sink.close();
  t.true(Date.now() - closing < 2_000);
});

test('imap stop: a signal while open() waits for the server ends open() at once; every write is then rejected as stopped', async (t) => {
  const port = await silentServer(t);
  const stop = new AbortController();
  const sink = createImapSink(`imap://archiver@127.0.0.1:${port}/?tls=none&retries=0`, { env, stop: stop.signal });
  const opening = sink.open();
  await sleep(500);
  const signalled = Date.now();
  stop.abort();
  await opening;
  t.true(Date.now() - signalled < 2_000);
  const started = Date.now();
  const err = await t.throwsAsync(sink.write(delivery(1)), { code: ErrorCode.SINK_WRITE });
  t.regex(err!.message, STOPPED);
  t.true(Date.now() - started < 100);
  await sink.close();
});

test('imap stop: an already aborted signal: open() makes no login and writes are rejected as stopped', async (t) => {
  const port = await silentServer(t);
  const sink = createImapSink(`imap://archiver@127.0.0.1:${port}/?tls=none`, { env, stop: AbortSignal.abort() });
  const started = Date.now();
  await sink.open();
  await t.throwsAsync(sink.write(delivery(1)), { message: STOPPED });
  await sink.close();
  t.true(Date.now() - started < 500);
});

withServer('Dovecot (IMAP stop)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test('imap stop: Dovecot stopped mid-run, batches waiting to retry are rejected within ~2 s of the signal, as stopped', async (t) => {
    const dovecot = await startDovecot(['jane@acme.example', 'omar@acme.example', 'b@acme.example']);
    t.teardown(() => removeDovecot(dovecot));
    const stop = new AbortController();
    const sink = createImapSink(`imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&retries=5&retryDelay=10000`, { env, stop: stop.signal });
    await sink.open();
    t.is((await sink.write(delivery(1))).outcome, 'delivered');
    await dovecot.stop();
    // Mailboxes with no session left from before the stop (jane's may outlive the server a moment).
    const writes = [delivery(2, 'b@acme.example'), delivery(3, 'omar@acme.example'), delivery(4, 'omar@acme.example')].map((d) => settle(sink.write(d)));
    // Both mailboxes' batches have failed to connect by now, and wait 10 s to retry.
    await sleep(1_500);
    const signalled = Date.now();
    stop.abort();
    const results = await Promise.all(writes);
    t.true(Date.now() - signalled < 2_000, `rejected ${Date.now() - signalled} ms after the signal`);
    for (const result of results) {
      t.like(result, { code: ErrorCode.SINK_WRITE });
      t.regex((result as Error).message, STOPPED);
    }
    // Later writes are rejected the same way, without waiting; close() does not wait either.
    await t.throwsAsync(sink.write(delivery(5)), { message: STOPPED });
    const closing = Date.now();
    await sink.close();
    t.true(Date.now() - closing < 2_000);
  });
});
