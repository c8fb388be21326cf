// The Graph sink sets V8's heap flags while it is open and puts the CLI's back when the last one
// closes (src/sinks/graph/heap.ts), whatever order opens and closes come in. V8's flags cannot be
// read back, so every setFlagsFromString call is recorded instead (this file's own process).
import test from 'ava';
import v8 from 'node:v8';
import { syncBuiltinESMExports } from 'node:module';
import { startGraphStandin, type GraphStandin } from './helpers/graph-standin.js';
import { startIdentityEndpoint, type IdentityEndpoint } from './helpers/identity-endpoint.js';

const calls: string[] = [];
(v8 as { setFlagsFromString: (flags: string) => void }).setFlagsFromString = (flags) => void calls.push(flags);
syncBuiltinESMExports();
const { createGraphSink } = await import('../src/sinks/graph/index.js');

const TENANT = '11111111-2222-3333-4444-555555555555';
const GRAPH = '--no-optimize-for-size --heap-growing-percent=25';
const LAUNCH = '--optimize-for-size --heap-growing-percent=0';
let standin: GraphStandin;
let identity: IdentityEndpoint;
const launchOptions = process.env.NODE_OPTIONS;

test.before(async () => {
  standin = await startGraphStandin({ tenant: TENANT, latencyMs: 40 });
  identity = await startIdentityEndpoint({ audience: 'resource', tenant: TENANT, roles: ['Mail.ReadWrite'] });
  Object.assign(process.env, identity.env);
});
test.after.always(async () => {
  await standin?.close();
  await identity?.close();
});
test.beforeEach(() => {
  // As the CLI starts node (src/launch.ts); read when a sink opens.
  process.env.NODE_OPTIONS = '--optimize-for-size';
  calls.length = 0;
});
test.afterEach.always(() => {
  if (launchOptions === undefined) delete process.env.NODE_OPTIONS;
  else process.env.NODE_OPTIONS = launchOptions;
});

const sink = () => createGraphSink(`graph://${TENANT}/?credential=managedIdentity&graphEndpoint=${standin.url}&retryDelay=20`);

test.serial('one sink: set when it opens, put back when it closes', async (t) => {
  const a = sink();
  await a.open();
  t.deepEqual(calls, [GRAPH]);
  await a.close();
  t.deepEqual(calls, [GRAPH, LAUNCH]);
});

test.serial('a close while open() still proves access leaves nothing set, and a later sink still puts the flags back', async (t) => {
  const a = sink();
  const opening = a.open();
  await a.close();
  await opening;
  t.deepEqual(calls, []);
  const b = sink();
  await b.open();
  await b.close();
  t.deepEqual(calls, [GRAPH, LAUNCH]);
});

test.serial('open() twice at once on one sink counts it once', async (t) => {
  const a = sink();
  await Promise.all([a.open(), a.open()]);
  await a.close();
  t.deepEqual(calls, [GRAPH, LAUNCH]);
});

test.serial('two sinks: the flags stay until the last closes', async (t) => {
  const a = sink();
  const b = sink();
  await a.open();
  await b.open();
  await a.close();
  t.deepEqual(calls, [GRAPH]);
  await b.close();
  t.deepEqual(calls, [GRAPH, LAUNCH]);
});

test.serial("a heap flag of the user's own (in NODE_OPTIONS) is left alone", async (t) => {
  process.env.NODE_OPTIONS = '--optimize-for-size --heap-growing-percent=50';
  const a = sink();
  await a.open();
  await a.close();
  t.deepEqual(calls, []);
});
