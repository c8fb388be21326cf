// The Graph client's kept-alive connections: one the server said it keeps for N seconds
// (`Keep-Alive: timeout=N`) is closed by the client before then, so a request is never sent on a
// connection the server is closing (a create then fails as a network error and must be looked up).
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import { GraphClient } from '../src/sinks/graph/client.js';

test('graph client: an idle connection is closed before the server\'s Keep-Alive timeout; the next request opens a new one', async (t) => {
  const connections: number[] = [];
  const server = createServer((_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end('{"value":[]}');
  });
  // Node's server announces `Keep-Alive: timeout=2` and closes an idle connection after 2 s.
  server.keepAliveTimeout = 2000;
  server.on('connection', () => connections.push(Date.now()));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => server.close());
  const client = new GraphClient({
    endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    concurrency: 4,
    mailboxes: 1,
    retries: 0,
    retryDelayMs: 10,
    tokens: { get: async () => 'token', forget: () => undefined },
  });
  t.teardown(() => client.close());
  await client.send('user0@acme.example', { method: 'GET', path: '/v1.0/users/user0@acme.example/mailFolders' });
  t.is(connections.length, 1);
  // Half a second before the server would close it, after the client should have (1 s before the server).
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await client.send('user0@acme.example', { method: 'GET', path: '/v1.0/users/user0@acme.example/mailFolders' });
  t.is(connections.length, 2, 'the idle connection was not kept past the server\'s hint less a second');
  t.is(client.stats.retried, 0);
});
