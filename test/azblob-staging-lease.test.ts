// One staging writer per export folder at a time (src/sinks/azblob/SPEC.md), against a real
// Azurite: each staging run reads what an export already holds once, so two runs staging one export
// at once used to stage about a third of it twice (and `verify` of either then failed for ever).
// A run takes a lease on `<prefix>/<exportId>/staging.lock` before it reads the export; a run that
// finds it held by a live run waits one lease duration, then fails the export (exit 1, naming the
// other run); a killed run's lease is taken once it has expired; a lease lost mid-run fails the
// export's remaining writes. Staged copies are counted with Python's zipfile, not our reader.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlobLeaseClient } from '@azure/storage-blob';
import { generateSample } from '../src/sample/generate.js';
import { createAzureBlobSink, LEASE_SECONDS_ENV } from '../src/sinks/azblob/index.js';
import { STAGING_LOCK } from '../src/formats/staged-batch/staging-run.js';
import { AZURITE_BLOB, azuriteMissingMessage, startAzurite, type Azurite } from './helpers/azurite.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { delivery } from './helpers/sink-conformance.js';

const EXPORT_ID = 'acme-2026-11-23';
const CONTAINER = 'lease-staging';
let azurite: Azurite;
let archive: string;
let workDir: string;
let env: Record<string, string>;
let prefixes = 0;

test.before(async () => {
  if (!AZURITE_BLOB) throw new Error(azuriteMissingMessage());
  azurite = await startAzurite();
  // The shortest lease Azure allows: a run waits 15 s + 5 s for a lease another run holds.
  env = { ...(azurite.env as Record<string, string>), [LEASE_SECONDS_ENV]: '15' };
  workDir = await mkdtemp(join(tmpdir(), 'pivot-archive-lease-'));
  archive = join(workDir, 'export.zip');
  await generateSample(archive, { events: 1500, messageFiles: 2, seed: 69 });
  await azurite.container(CONTAINER).createIfNotExists();
});
test.after.always(async () => {
  await azurite?.dispose();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

/** Every batch under a prefix downloaded, and its manifests counted by Python's zipfile: (mailbox, Message-ID) -> copies. */
async function stagedCopies(prefix: string): Promise<{ batches: number; messages: number; distinct: number; twice: number; names: string[] }> {
  const client = azurite.container(CONTAINER);
  const dir = await mkdtemp(join(workDir, 'blobs-'));
  const names: string[] = [];
  let batches = 0;
  for await (const blob of client.listBlobsFlat({ prefix: `${prefix}/` })) {
    names.push(blob.name);
    if (!blob.name.endsWith('.zip')) continue;
    await writeFile(join(dir, `b${batches++}.zip`), await client.getBlockBlobClient(blob.name).downloadToBuffer());
  }
  const script = [
    'import collections, glob, json, sys, zipfile',
    'c = collections.Counter()',
    'for f in glob.glob(sys.argv[1] + "/*.zip"):',
    '    for e in json.loads(zipfile.ZipFile(f).read("manifest.json"))["entries"]: c[(e["mailbox"], e["messageId"])] += 1',
    'print(json.dumps({"messages": sum(c.values()), "distinct": len(c), "twice": sum(1 for v in c.values() if v > 1)}))',
  ].join('\n');
  const counted = JSON.parse(execFileSync('python3', ['-c', script, dir]).toString()) as { messages: number; distinct: number; twice: number };
  return { batches, ...counted, names };
}

function stage(prefix: string, state: string, extra: Record<string, string> = {}) {
  const name = state.split('/').pop()!;
  return cli(['run', archive, '--sink', `azblob://${CONTAINER}/${prefix}?messages=100`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(workDir, 'rejects'), '--status-log', join(workDir, `${name}.jsonl`)], {
    env: { ...env, ...extra },
  });
}

function verify(prefix: string, state: string) {
  return cli(['verify', '--state-dir', state, '--sink', `azblob://${CONTAINER}/${prefix}`], { env });
}

/** Holds the lease on an export's lock as another staging run would (renewed while `hold` runs). */
async function holdLock(prefix: string, seconds: number): Promise<{ lease: BlobLeaseClient; stop(): Promise<void> }> {
  const blob = azurite.container(CONTAINER).getBlockBlobClient(`${prefix}/${EXPORT_ID}/${STAGING_LOCK}`);
  await blob.upload('', 0);
  const lease = blob.getBlobLeaseClient();
  await lease.acquireLease(seconds);
  await blob.setMetadata({ holder: encodeURIComponent('otherhost pid 4242'), since: '2026-11-24T01:00:00.000Z' }, { conditions: { leaseId: lease.leaseId } });
  const timer = setInterval(() => void lease.renewLease().catch(() => undefined), 4000);
  return {
    lease,
    async stop() {
      clearInterval(timer);
      await lease.releaseLease().catch(() => undefined);
    },
  };
}

test.serial('two staging runs of one export at once: nothing staged twice, each run either stages or skips what the other staged, or fails naming it; a re-run completes and verify finds both intact', async (t) => {
  t.timeout(240_000);
  const prefix = `two${++prefixes}`;
  const [st1, st2] = [join(workDir, `two-st1`), join(workDir, `two-st2`)];
  const [r1, r2] = await Promise.all([stage(prefix, st1), stage(prefix, st2)]);
  t.log(`exit codes ${r1.code}, ${r2.code}`);
  const copies = await stagedCopies(prefix);
  t.is(copies.twice, 0, JSON.stringify(copies));
  t.is(copies.messages, copies.distinct);
  t.true(copies.distinct > 1000, `${copies.distinct} staged`);
  t.false(copies.names.some((n) => n.endsWith(STAGING_LOCK)), 'both runs ended: no lock left');
  for (const [state, result] of [
    [st1, r1],
    [st2, r2],
  ] as const) {
    if (result.code !== 0) {
      // The one that lost waited one lease duration, then failed the export, naming the other run.
      t.is(result.code, 1, result.stderr);
      t.regex(result.log, /another staging run \(\S+ pid \d+, since [^)]+\) is staging this export/);
      t.regex(result.log, /run again once that run has ended/);
      const again = await stage(prefix, state);
      t.is(again.code, 0, again.stderr);
    }
    const verified = await verify(prefix, state);
    t.is(verified.code, 0, `${state}: ${verified.stdout}${verified.stderr}`);
  }
  t.deepEqual(await stagedCopies(prefix).then((c) => c.twice), 0);
});

test.serial('a run finding the export staged by a live run (its lease renewed) waits one lease duration, then fails it: exit 1, the other run named, nothing staged, every item recorded failed; a re-run after it ended completes', async (t) => {
  t.timeout(240_000);
  const prefix = `live${++prefixes}`;
  const state = join(workDir, 'live-st');
  const other = await holdLock(prefix, 15);
  const started = Date.now();
  const result = await stage(prefix, state).finally(() => other.stop());
  t.is(result.code, 1, result.stderr);
  t.true(Date.now() - started >= 20_000, 'it waited the lease duration and more');
  t.regex(result.log, new RegExp(`export ${EXPORT_ID}: another staging run \\(otherhost pid 4242, since 2026-11-24T01:00:00.000Z\\) is staging this export into this prefix now`));
  t.regex(result.log, /E_SINK_WRITE|run again once that run has ended/);
  const summary = (await readStatusLog(join(workDir, 'live-st.jsonl'))).summary;
  t.is(summary.delivered, 0);
  t.true(summary.failed > 1000, `${summary.failed} failed`);
  t.true(summary.balanced);
  const none = await stagedCopies(prefix);
  t.is(none.batches, 0, none.names.join(' '));
  t.false(none.names.some((n) => /\/index-/.test(n)), 'no index left by the failed run');

  const again = await stage(prefix, state);
  t.is(again.code, 0, again.stderr);
  const copies = await stagedCopies(prefix);
  t.is(copies.twice, 0);
  t.is(copies.distinct, summary.failed);
  t.is((await verify(prefix, state)).code, 0);
});

test.serial("a lock left by a killed run (its lease never renewed nor released) is taken once the lease expired, and the run completes", async (t) => {
  t.timeout(240_000);
  const prefix = `killed${++prefixes}`;
  const state = join(workDir, 'killed-st');
  const blob = azurite.container(CONTAINER).getBlockBlobClient(`${prefix}/${EXPORT_ID}/${STAGING_LOCK}`);
  await blob.upload('', 0);
  await blob.getBlobLeaseClient().acquireLease(15);
  const started = Date.now();
  const result = await stage(prefix, state);
  t.is(result.code, 0, result.stderr);
  t.log(`took ${Date.now() - started} ms`);
  const copies = await stagedCopies(prefix);
  t.is(copies.twice, 0);
  t.true(copies.distinct > 1000);
  t.false(await blob.exists(), 'the run deleted the lock at its end');
  t.is((await verify(prefix, state)).code, 0);
  // The import passes over a lock left in a folder (here, one made by hand beside the batches).
  await blob.upload('', 0);
  const imported = await cli(['import', '--from', `azblob://${CONTAINER}/${prefix}`, '--sink', `maildir:${join(workDir, 'killed-mail')}`], { env });
  t.is(imported.code, 0, imported.stderr);
  const verifiedWithLock = await verify(prefix, state);
  t.is(verifiedWithLock.code, 0, verifiedWithLock.stdout);
});

test.serial('a lease lost mid-run (another run took it) fails the export\'s remaining writes instead of staging on', async (t) => {
  t.timeout(120_000);
  const prefix = `lost${++prefixes}`;
  // A long linger keeps the first batch open (the sink busy, its lease kept) while the lease is taken from it.
  const sink = createAzureBlobSink(`azblob://${CONTAINER}/${prefix}?messages=1&linger=20000`, { env });
  await sink.open();
  const d1 = { ...delivery(1), exportId: EXPORT_ID };
  const d2 = { ...delivery(2), exportId: EXPORT_ID };
  const first = sink.write(d1);
  first.catch(() => undefined);
  const blob = azurite.container(CONTAINER).getBlockBlobClient(`${prefix}/${EXPORT_ID}/${STAGING_LOCK}`);
  // The window is read when the batch is sealed: a second write seals the first batch.
  const second = sink.write(d2);
  second.catch(() => undefined);
  const stopped = await first.then(
    (s) => s,
    (e: unknown) => e as Error,
  );
  t.like(stopped, { outcome: 'delivered' }, 'the first batch was staged under the lease');
  t.is((await blob.getProperties()).leaseState, 'leased');
  // Another run breaks the lease and takes its own; the sink's next renewal (every 5 s) finds it lost.
  const lease = blob.getBlobLeaseClient();
  await lease.breakLease(0);
  await lease.acquireLease(15);
  await new Promise((r) => setTimeout(r, 6500));
  const failed = [second, sink.write({ ...delivery(3), exportId: EXPORT_ID })];
  await sink.close();
  for (const write of failed) await t.throwsAsync(write, { code: 'E_SINK_WRITE', message: /staging lease on .* was lost .*this run stages none of it any more/ });
  const copies = await stagedCopies(prefix);
  t.is(copies.distinct, 1, 'only what was staged under the lease');
  t.true(await blob.exists(), 'the other run\'s lock is left alone');
  await lease.releaseLease();
});
