// Every run writes its `start` record before it delivers anything: a status log or a state dir
// that cannot take it (a full disk) stops the run before the sink is opened or fed (exit 2,
// nothing delivered), with the failure recorded wherever a record can still be written.
// Was: the records were buffered, their ENOSPC surfaced only after the sink had its whole window
// in flight; a state dir and status log on a full 4k tmpfs let a day of 4,485 IMAP appends go out
// recorded nowhere (exit 1, every record file 0 bytes).
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateSample } from '../src/sample/generate.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { needing } from './helpers/needing.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);
const FULL = '/dev/full';
const noFull = existsSync(FULL) ? undefined : `no ${FULL} on this machine`;

needing(noFull, 'a --status-log that cannot take the start record (ENOSPC) stops the run before any delivery (exit 2); the state dir records the start and the failure', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 21, edgeCases: false });
  const state = join(dir, 'state');
  const mail = join(dir, 'mail');
  const result = await cli(['run', archive, '--all-domains', '--sink', `maildir:${mail}?concurrency=8`, '--state-dir', state, '--status-log', FULL, '--rejects', join(dir, 'rejects'), '--json']);
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /E_STATUS_LOG: cannot write status log \/dev\/full: ENOSPC.*before any delivery/);
  t.is((await readMaildir(mail)).length, 0, 'nothing was delivered');
  const [runName] = await readdir(join(state, 'runs'));
  const runLog = (await readStatusLog(join(state, 'runs', runName!))).lines;
  t.deepEqual(
    runLog.map((l) => l.record),
    ['start', 'failure'],
  );
  t.like(runLog[1], { code: 'E_STATUS_LOG', exitCode: 2 });
  const ledger = (await readStatusLog(join(state, 'ledger.jsonl'))).lines;
  t.deepEqual(
    ledger.map((l) => l.record),
    ['start', 'failure', 'checkpoint'],
  );
});

test('a --status-log that cannot be opened (its folder cannot be made): the state dir records the start and the failure once, with the archive\'s identity, and the ledger too (was: two failures, archive "", none in the ledger)', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 100, seed: 23, edgeCases: false });
  const state = join(dir, 'state');
  const result = await cli(['run', archive, '--all-domains', '--sink', `maildir:${join(dir, 'mail')}`, '--state-dir', state, '--status-log', '/proc/nope/status.jsonl']);
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /E_STATUS_LOG: cannot open status log \/proc\/nope\/status\.jsonl/);
  const [runName] = await readdir(join(state, 'runs'));
  const runLog = (await readStatusLog(join(state, 'runs', runName!))).lines;
  t.deepEqual(runLog.map((l) => l.record), ['start', 'failure']);
  t.like(runLog[1], { code: 'E_STATUS_LOG', exitCode: 2, archive });
  t.regex(String(runLog[1]!.sha256), /^[0-9a-f]{64}$/);
  const ledger = (await readStatusLog(join(state, 'ledger.jsonl'))).lines;
  t.deepEqual(ledger.map((l) => l.record), ['start', 'failure', 'checkpoint']);
});

needing(process.getuid?.() === 0 ? undefined : 'root, to mount a small tmpfs', 'a state dir and status log on a full file system: no delivery at all (exit 2), not a whole day delivered with every record file empty', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 22, edgeCases: false });
  const fs = join(dir, 'fs');
  await mkdir(fs);
  // One page: the state dir's folders and files can be made, not one byte written to them.
  await run('mount', ['-t', 'tmpfs', '-o', 'size=4k', 'tmpfs', fs]);
  t.teardown(() => run('umount', [fs]).then(() => undefined));
  const mail = join(dir, 'mail');
  const result = await cli(['run', archive, '--all-domains', '--sink', `maildir:${mail}`, '--state-dir', join(fs, 'state'), '--status-log', join(fs, 'status.jsonl'), '--rejects', join(dir, 'rejects'), '--json']);
  t.is(result.code, 2, result.stderr);
  t.regex(result.log, /E_(STATUS_LOG|LEDGER): .*ENOSPC/);
  t.regex(result.stdout, /"record":"failure"/);
  t.is((await readMaildir(mail)).length, 0, 'nothing was delivered');
  t.is((await stat(join(fs, 'status.jsonl'))).size, 0);
  // Asked about the export, status does not stop at "no run": the state dir holds one cut short.
  const status = await cli(['status', '--state-dir', join(fs, 'state'), '--export', 'acme-2026-11-23']);
  t.is(status.code, 2, status.stderr);
  t.regex(status.stderr, /records no run of export "acme-2026-11-23"|no ledger in/);
  t.regex(status.stderr, /1 of the last 1 run\(s\) in .* did not record an end .*(killed, or it could not write its records|failed \(exit 2\)).*run the export again/);
});
