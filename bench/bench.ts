// npm run bench: generates sample archives and measures each stage in its own process.
// Usage: npm run bench [-- --events 100000,1000000 --users 1500 --conversations 4000
//   --stages source,naive-json-parse,mime,floor,floor-group,maildir,naive-maildir,maildir-ledger,verify
//   --imap-events 6000 --imap-users 2000 --imap-window 50000 --staging-events 20000
//   --graph-events 6000 --graph-users 200 --graph-latency 100 --graph-mailboxes 16]
// floor is the maildir sink's file operations alone from Node's thread pool (an fsync per file,
// as the sink did them before its file worker), floor-group the same through the sink's file
// worker (groups, one syncfs each); naive-maildir a quick non-durable script
// (bench/maildir-baselines.ts); the maildir row's ratio to each is printed under the table.
// The IMAP rows deliver into a throwaway local Dovecot, the staging row into a local Azurite (in
// memory), both started as the tests start them, on smaller archives. IMAP: a first run into
// empty mailboxes, a re-run of the same archive (everything present), and a resume: a first run
// into a second server stopped once half the first run's messages are stored (the items in flight
// fail), the server started again on the same mail, then the archive run again. Each IMAP row also
// prints the CPU Dovecot used, and the re-run's and resume's pace against the first run. The graph rows deliver into the Graph stand-in
// (test/helpers/graph-standin.ts, in this process) with Outlook's limits (4 requests in flight
// per mailbox) and a fixed delay on every request; their ratio to the most those limits allow
// (mailboxes worked at once x 4 / delay) is printed under the table (the target is 0.8 or more).
import { execFileSync, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { generateSample } from '../src/sample/generate.js';
import { LAUNCH_ENVIRONMENT, NODE_FLAGS } from '../src/launch.js';
import { serverCpuSeconds } from './server-cpu.js';

const STAGES = ['source', 'naive-json-parse', 'mime', 'floor', 'floor-group', 'maildir', 'naive-maildir', 'maildir-ledger', 'verify'];
/** The options read so far (by `option`): any other on the command line is a typo. */
const known = new Set<string>();

function option(name: string, fallback: string): string {
  known.add(name);
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const sizes = option('events', '100000,1000000').split(',').filter(Boolean).map(Number);
// verify reads back what maildir-ledger delivered, so it follows it.
const stages = option('stages', STAGES.join(',')).split(',').filter(Boolean);
const unknownStage = stages.find((s) => !STAGES.includes(s));
if (unknownStage !== undefined) throw new Error(`bench: unknown stage ${JSON.stringify(unknownStage)}; the stages are ${STAGES.join(', ')}`);
// The main archives' shape; the generator's defaults when not given.
const shape = { users: option('users', ''), conversations: option('conversations', '') };
const imapEvents = Number(option('imap-events', '6000'));
// A bank's day reaches 2,000+ mailboxes whatever its size: the IMAP archive has that many users.
const imapUsers = Number(option('imap-users', '2000'));
// The sink's `window=` (deliveries held at once; the sink's default when not given): a login carries about window / mailboxes.
const imapWindow = option('imap-window', '');
const stagingEvents = Number(option('staging-events', '20000'));
const graphEvents = Number(option('graph-events', '6000'));
const graphUsers = Number(option('graph-users', '200'));
const graphLatencyMs = Number(option('graph-latency', '100'));
// The sink's `mailboxes=`: how many mailboxes' requests are in flight at once (its default is 16).
const graphMailboxes = Number(option('graph-mailboxes', '16'));
// A typo must not cost a long run its last row: every option and stage is checked before any work.
for (const [i, arg] of process.argv.slice(2).entries()) {
  if (i % 2 === 0 && !(arg.startsWith('--') && known.has(arg.slice(2)))) throw new Error(`bench: unknown option ${JSON.stringify(arg)}; the options are --${[...known].join(', --')}, each with a value`);
}
const work = join(tmpdir(), 'pivot-archive-bench');
await mkdir(work, { recursive: true });
/** Messages in every mailbox's folders under a Maildir++ root (`ROOT/USER/.FOLDER/{new,cur}`), as a local Dovecot keeps them. */
function storedMessages(root: string): number {
  // A folder (or the root) Dovecot is making at this moment counts once it is there.
  const list = (path: string) => {
    try {
      return readdirSync(path, { withFileTypes: true });
    } catch {
      return [];
    }
  };
  let count = 0;
  for (const user of list(root)) {
    for (const folder of list(join(root, user.name))) {
      if (folder.isDirectory() && folder.name.startsWith('.')) for (const sub of ['new', 'cur']) count += list(join(root, user.name, folder.name, sub)).length;
    }
  }
  return count;
}
const stageScript = fileURLToPath(new URL('./stage.js', import.meta.url));

interface Row {
  stage: string;
  events: number;
  deliveries: number;
  messageBytes: number;
  seconds: number;
  userCpu: number;
  systemCpu: number;
  peakRssMB: number;
  /** The IMAP rows: CPU seconds the local Dovecot used meanwhile (all its processes). */
  serverCpu?: number;
}

const rows: { size: number; archiveMB: number; row: Row }[] = [];

async function archiveOf(size: number, users?: number, conversations?: number): Promise<{ archive: string; archiveMB: number }> {
  const archive = join(work, `sample-${size}${users === undefined ? '' : `-${users}users`}${conversations === undefined ? '' : `-${conversations}conversations`}.zip`);
  if (!existsSync(archive)) {
    process.stderr.write(`generating ${archive} ...\n`);
    await generateSample(archive, { events: size, seed: 42, edgeCases: false, level: 6, ...(users === undefined ? {} : { users }), ...(conversations === undefined ? {} : { conversations }) });
  }
  return { archive, archiveMB: (await stat(archive)).size / 1024 / 1024 };
}

/**
 * A stage run in the background (the IMAP resume row stops the server under it): its one error
 * line per failed item is dropped, its summary line kept.
 */
function startStage(stage: string, archive: string, out: string, env: Record<string, string>): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...NODE_FLAGS, stageScript, stage, archive, out], { env: { ...process.env, ...LAUNCH_ENVIRONMENT, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    createInterface({ input: child.stderr }).on('line', (line) => {
      if (line.startsWith('  imap:')) process.stderr.write(`${line}\n`);
    });
    child.on('close', (code) => {
      // Its summary line above carries the CLI's exit code; a non-zero here is the script failing.
      if (code !== 0) process.stderr.write(`  (the interrupted run's stage script failed: exit code ${code})\n`);
      resolve();
    });
  });
}

/** A stage's JSON line, run in the background: for a stage whose server runs in this process (the Graph stand-in). */
function runStageAsync(stage: string, archive: string, env: Record<string, string>): Promise<Row> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...NODE_FLAGS, stageScript, stage, archive, ''], { env: { ...process.env, ...LAUNCH_ENVIRONMENT, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(stdout) as Row) : reject(new Error(`stage ${stage} exited ${code}`))));
  });
}

function runStage(stage: string, archive: string, out: string, env: Record<string, string> = {}): Row {
  // Started as the CLI starts (src/launch.ts): its flags and malloc setting decide the memory.
  const line = execFileSync(process.execPath, [...NODE_FLAGS, stageScript, stage, archive, out], {
    env: { ...process.env, ...LAUNCH_ENVIRONMENT, ...env },
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 20,
  }).toString();
  return JSON.parse(line) as Row;
}

/**
 * Every stage's output is kept until the size is done, then removed, and the next stage that
 * creates files waits 36 s: for that long after a mass delete, ext4 scans the recently freed
 * inodes on every file it creates (recently_deleted() in its inode allocator). Measured here on
 * 2026-11-28: a maildir row run at once after removing the previous row's files took 27.9 s with
 * 30.1 s of system CPU; 45 s later, 17.2 s with 11.4 s.
 */
const outputs = join(work, 'out');
/** When a bench last removed many files, kept in a file: a bench run just after another's end waits too. */
const removalMark = join(work, 'last-removal');
async function removed(): Promise<void> {
  await writeFile(removalMark, String(Date.now()));
}
async function removeOutputs(): Promise<void> {
  if (!existsSync(outputs)) return;
  await rm(outputs, { recursive: true, force: true });
  await removed();
}
async function settled(): Promise<void> {
  const lastRemoval = Number(await readFile(removalMark, 'utf8').catch(() => '0')) || 0;
  const wait = lastRemoval + 36_000 - Date.now();
  if (wait > 0) {
    process.stderr.write(`  (waiting ${Math.ceil(wait / 1000)} s for the file system to settle after a removal)\n`);
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

await removeOutputs();
for (const size of sizes) {
  const { archive, archiveMB } = await archiveOf(size, shape.users ? Number(shape.users) : undefined, shape.conversations ? Number(shape.conversations) : undefined);
  for (const stage of stages) {
    // Each delivering stage writes to an empty folder of its own; verify reads what maildir-ledger left.
    const out = join(outputs, `${size}-${stage === 'verify' ? 'maildir-ledger' : stage}`);
    await settled();
    process.stderr.write(`${size} events: ${stage} ...\n`);
    rows.push({ size, archiveMB, row: runStage(stage, archive, out) });
  }
  await removeOutputs();
}

if (imapEvents > 0) {
  await settled();
  const { archive, archiveMB } = await archiveOf(imapEvents, imapUsers);
  const users = (JSON.parse(execFileSync('python3', ['-c', 'import sys,zipfile;print(zipfile.ZipFile(sys.argv[1]).read("users.json").decode())', archive]).toString()) as { email?: string }[])
    .flatMap((u) => (u.email ? [u.email.toLowerCase()] : []));
  const { startDovecot, removeDovecot, ADMIN_PASSWORD } = await import('../test/helpers/dovecot.js');
  // probe=: open() proves the credentials with a real login (no 2 s failed-login delay in every row).
  const specOf = (port: number, extra = '') => `imap://archiver@127.0.0.1:${port}/?tls=none&probe=${users[0]}${imapWindow ? `&window=${imapWindow}` : ''}${extra}`;
  const imapRow = (label: string, server: { port: number; dir: string }, extra = '') => {
    process.stderr.write(`${imapEvents} events, ${users.length} mailboxes: ${label} (local Dovecot) ...\n`);
    const cpuBefore = serverCpuSeconds(join(server.dir, 'run'));
    const row = runStage('imap', archive, '', { PIVOT_BENCH_SINK: specOf(server.port, extra), PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD });
    const serverCpu = serverCpuSeconds(join(server.dir, 'run')) - cpuBefore;
    rows.push({ size: imapEvents, archiveMB, row: { ...row, stage: label, serverCpu } });
    return row;
  };
  let firstDeliveries = 0;
  // Both servers' mail is kept until the last IMAP row: removing one's 21,000 files slows every
  // file the other creates for about 36 s (ext4's recently_deleted(), see `settled`). Measured
  // 2026-12-03 outside the bench: a resume right after the first server's removal took 36.7-39.9 s
  // with Dovecot using 49-54 s of CPU; with nothing removed, 17.3-23.0 s with 18-28 s.
  const dovecot = await startDovecot(users);
  let restarted: Awaited<ReturnType<typeof startDovecot>> | undefined;
  try {
    firstDeliveries = imapRow('imap first run', dovecot).deliveries;
    imapRow('imap re-run (all present)', dovecot);
    await dovecot.stop();
    restarted = await startDovecot(users);
    process.stderr.write(`${imapEvents} events: imap run stopped halfway: the server stopped ...\n`);
    // retries=0: the items in flight when the server goes fail at once, and that run ends.
    let ended = false;
    const interrupted = startStage('imap', archive, '', { PIVOT_BENCH_SINK: specOf(restarted.port, '&retries=0'), PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD }).finally(() => (ended = true));
    // Stopped once half the first run's messages are stored, whatever this machine's pace.
    // (Or once that run has ended, whatever it stored: no wait forever on a run that failed early.)
    while (!ended && storedMessages(restarted.mailRoot) < firstDeliveries / 2) await new Promise((resolve) => setTimeout(resolve, 100));
    const storedAtStop = storedMessages(restarted.mailRoot);
    const endedEarly = ended;
    process.stderr.write(`  (stopped with ${storedAtStop} of ${firstDeliveries} messages stored${endedEarly ? ': the run had ended before half, so the resume row is not a resume from halfway' : ''})\n`);
    // A graceful stop (what a restart does): after a kill (SIGKILL) Dovecot 2.3 met a stale lock
    // of a mailbox's index on restart and held that mailbox for 166 s (2026-11-28), which
    // measures Dovecot's recovery, not the sink. The outage tests kill it (test/e2e-imap.test.ts).
    await restarted.stop();
    await interrupted;
    await restarted.start();
    imapRow(endedEarly ? 'imap resume (NOT halfway: the run stopped early)' : 'imap resume after server restart', restarted);
  } finally {
    if (restarted) await removeDovecot(restarted);
    await removeDovecot(dovecot);
    await removed();
  }
}

if (stagingEvents > 0) {
  await settled();
  const { archive, archiveMB } = await archiveOf(stagingEvents);
  const { startAzurite } = await import('../test/helpers/azurite.js');
  const azurite = await startAzurite();
  try {
    process.stderr.write(`${stagingEvents} events: azblob (local Azurite) ...\n`);
    const env = { PIVOT_BENCH_SINK: 'azblob://bench/staging', AZURE_STORAGE_CONNECTION_STRING: azurite.connectionString };
    rows.push({ size: stagingEvents, archiveMB, row: runStage('azblob', archive, '', env) });
  } finally {
    await azurite.dispose();
  }
}

let graphFloor: { mailboxes: number; perSecond: number } | undefined;
/** Deliveries/s of the bare creates (the `graph floor` row). */
let graphBare: number | undefined;
/** The most creates one mailbox took in the first run: its 4 slots bound the whole run. */
let graphHeaviest = 0;
if (graphEvents > 0) {
  await settled();
  const { archive, archiveMB } = await archiveOf(graphEvents, graphUsers);
  const { startGraphStandin } = await import('../test/helpers/graph-standin.js');
  const { startIdentityEndpoint } = await import('../test/helpers/identity-endpoint.js');
  const tenant = '11111111-2222-3333-4444-555555555555';
  const standin = await startGraphStandin({ tenant, everyUser: true, latencyMs: graphLatencyMs });
  const identity = await startIdentityEndpoint({ audience: 'resource', tenant, roles: ['Mail.ReadWrite'] });
  // 4 requests per mailbox (the sink's default and Outlook's limit), `--graph-mailboxes` mailboxes at once.
  const parallel = graphMailboxes;
  graphFloor = { mailboxes: Math.min(parallel, graphUsers), perSecond: (Math.min(parallel, graphUsers) * 4) / (graphLatencyMs / 1000) };
  const env = { ...identity.env, PIVOT_BENCH_SINK: `graph://${tenant}/?credential=managedIdentity&graphEndpoint=${standin.url}&mailboxes=${parallel}` };
  try {
    for (const label of ['graph first run', 'graph re-run (all present)']) {
      process.stderr.write(`${graphEvents} events, ${graphUsers} users: ${label} (Graph stand-in, ${graphLatencyMs} ms a request) ...\n`);
      // In the background: the stand-in answers from this process.
      const row = await runStageAsync('graph', archive, env);
      rows.push({ size: graphEvents, archiveMB, row: { ...row, stage: label } });
      if (label === 'graph first run') {
        // Creates per mailbox, as the stand-in counted them (alone or in a batch).
        const creates = [...standin.stats.byMailbox].filter(([key]) => /^\S+ POST \/mailFolders\/\S+\/messages$/.test(key)).map(([, n]) => n);
        graphHeaviest = Math.max(0, ...creates);
      }
    }
    // The floor: the same number of creates, bare, with the same concurrency, to the same stand-in.
    const first = rows.find((r) => r.row.stage === 'graph first run')!.row;
    process.stderr.write(`${graphEvents} events: graph floor (${first.deliveries} bare creates, ${parallel} mailboxes x 4 at once) ...\n`);
    const floor = await runStageAsync('graph-floor', archive, { ...env, PIVOT_BENCH_GRAPH_URL: standin.url, PIVOT_BENCH_FLOOR_REQUESTS: String(first.deliveries), PIVOT_BENCH_FLOOR_MAILBOXES: String(Math.min(parallel, graphUsers)) });
    rows.push({ size: graphEvents, archiveMB, row: { ...floor, stage: 'graph floor (bare creates)' } });
    graphBare = floor.deliveries! / floor.seconds;
    if (standin.stats.overConcurrency > 0) throw new Error(`the Graph stand-in saw ${standin.stats.overConcurrency} requests over 4 at once for a mailbox`);
  } finally {
    await standin.close();
    await identity.close();
  }
}

const header = ['events', 'archive MB', 'stage', 'seconds', 'events/s', 'deliveries/s', 'message MB/s', 'user CPU s', 'system CPU s', 'peak RSS MB'];
const table = rows.map(({ size, archiveMB, row }) => [
  String(size),
  archiveMB.toFixed(0),
  row.stage,
  row.seconds.toFixed(1),
  Math.round(row.events / row.seconds).toLocaleString('en'),
  row.deliveries ? Math.round(row.deliveries / row.seconds).toLocaleString('en') : '-',
  row.messageBytes ? (row.messageBytes / 1024 / 1024 / row.seconds).toFixed(1) : '-',
  row.userCpu.toFixed(1),
  row.systemCpu.toFixed(1),
  row.peakRssMB.toFixed(0),
]);
const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
console.log(line(header));
console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
for (const r of table) console.log(line(r));
// The maildir row against its yardsticks, measured in this same run: the floor's time over ours
// (1 = as fast as the bare file operations; the target is 0.8 or more), and the naive script's
// time over ours (how many times faster than it we are while durable; the target is 2 or more).
for (const size of sizes) {
  const seconds = (stage: string) => rows.find((r) => r.size === size && r.row.stage === stage)?.row.seconds;
  const ours = seconds('maildir');
  if (ours === undefined) continue;
  const naive = seconds('naive-maildir');
  for (const [stage, what] of [['floor', 'the floor (thread pool, fsync per file)'], ['floor-group', 'the group floor (worker, syncfs per group)']] as const) {
    const floor = seconds(stage);
    if (floor !== undefined) console.log(`${size} events: maildir keeps ${(floor / ours).toFixed(2)} of ${what}'s speed (${stage} ${floor.toFixed(1)} s, maildir ${ours.toFixed(1)} s)`);
  }
  if (naive !== undefined) console.log(`${size} events: maildir is ${(naive / ours).toFixed(2)}x the naive script's speed (naive ${naive.toFixed(1)} s, not durable; maildir ${ours.toFixed(1)} s)`);
}
// The streaming source against whole-file JSON.parse (which holds a whole messages file at once).
for (const size of sizes) {
  const source = rows.find((r) => r.size === size && r.row.stage === 'source')?.row.seconds;
  const parse = rows.find((r) => r.size === size && r.row.stage === 'naive-json-parse')?.row.seconds;
  if (source !== undefined && parse !== undefined) console.log(`${size} events: the source reads at ${(parse / source).toFixed(2)} of whole-file JSON.parse's speed`);
}
// The IMAP rows: the re-run and the resume against the first run (settled deliveries a second:
// a skip is settled too), and what the local Dovecot spent beside the sink on this machine's two cores.
const imapFirst = rows.find((r) => r.row.stage === 'imap first run')?.row;
for (const { row } of rows) {
  if (row.serverCpu === undefined) continue;
  const pace = imapFirst && row !== imapFirst ? `, ${(row.deliveries / row.seconds / (imapFirst.deliveries / imapFirst.seconds)).toFixed(2)}x the first run's deliveries/s` : '';
  console.log(`${row.stage}: Dovecot used ${row.serverCpu.toFixed(1)} s of CPU beside the sink's ${(row.userCpu + row.systemCpu).toFixed(1)} s${pace}`);
}
// Memory as the day grows: each stage's peak at the largest size over its peak at the smallest.
if (sizes.length > 1) {
  const [small, large] = [Math.min(...sizes), Math.max(...sizes)];
  for (const stage of stages) {
    const peak = (size: number) => rows.find((r) => r.size === size && r.row.stage === stage)?.row.peakRssMB;
    const [a, b] = [peak(small), peak(large)];
    if (a !== undefined && b !== undefined) console.log(`${stage}: peak RSS ${a.toFixed(0)} MB at ${small} events, ${b.toFixed(0)} MB at ${large} (${(b / a).toFixed(2)}x)`);
  }
}
// The graph first run against the most Outlook's limits allow: the mailboxes worked at once, each
// with 4 requests in flight taking the stand-in's fixed delay, one request per delivery; and for
// every mailbox of the export at once, where 10,000 requests per 10 minutes per mailbox bind too.
const graphFirst = rows.find((r) => r.row.stage === 'graph first run')?.row;
if (graphFirst && graphFloor) {
  const perSecond = graphFirst.deliveries / graphFirst.seconds;
  const everyMailbox = graphUsers * Math.min(4 / (graphLatencyMs / 1000), 10_000 / 600);
  console.log(
    `graph: ${Math.round(perSecond)} deliveries/s = ${(perSecond / graphFloor.perSecond).toFixed(2)} of the limits' most for ${graphFloor.mailboxes} mailboxes at once (x 4 requests / ${graphLatencyMs} ms = ${Math.round(graphFloor.perSecond)}/s), ${(perSecond / everyMailbox).toFixed(2)} of their most with all ${graphUsers} at once (${Math.round(everyMailbox)}/s)`,
  );
  // What this machine and the stand-in answer at all, measured in this run: the bare creates.
  // Skew: the limits bind per mailbox, so the mailbox with the most creates takes at least
  // creates x latency / 4 however idle the others are; a run of this archive cannot beat that.
  if (graphHeaviest > 0) {
    const heaviestSeconds = (graphHeaviest * graphLatencyMs) / 1000 / 4;
    const mostForArchive = graphFirst.deliveries / heaviestSeconds;
    console.log(`graph: the busiest mailbox took ${graphHeaviest} creates, at least ${heaviestSeconds.toFixed(1)} s at 4 at once x ${graphLatencyMs} ms: no run of this archive passes ${Math.round(mostForArchive)}/s; ${Math.round(perSecond)}/s is ${(perSecond / mostForArchive).toFixed(2)} of it`);
  }
  if (graphBare !== undefined) console.log(`graph: ${Math.round(perSecond)} deliveries/s = ${(perSecond / graphBare).toFixed(2)} of the bare creates' ${Math.round(graphBare)}/s (the same number, ${graphFloor.mailboxes} mailboxes x 4 at once, bodies built beforehand: this machine's floor)`);
}
