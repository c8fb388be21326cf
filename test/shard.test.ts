import test, { type ExecutionContext } from 'ava';
import { simpleParser } from 'mailparser';
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { canonicalMailbox } from '../src/formats/address/index.js';
import { generateSample } from '../src/sample/generate.js';
import { StateDir } from '../src/state/index.js';
import type { RunSummary } from '../src/status-log.js';
import { mailboxHash, parseShard, shardFilter, shardOfMailbox } from '../src/transforms/shard/index.js';
import { cli, readStatusLog, startCli } from './helpers/cli.js';
import { AZURITE_BLOB, azuriteMissingMessage, startAzurite } from './helpers/azurite.js';
import { ADMIN_PASSWORD, DOVECOT_BINARY, dovecotMissingMessage, fetchFolder, removeDovecot, startDovecot } from './helpers/dovecot.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { withServer } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';
import { readJsonEntriesIndependently } from './helpers/unzip-python.js';

const SHARDS = [1, 2, 3];
const EXPORT_ID = 'acme-2026-11-23';

// ---------------------------------------------------------------------------------------------
// The hash and the option

test('the shard hash is the first 8 bytes of sha256(mailbox key): pinned values, the same for every form of one mailbox', (t) => {
  const pinned: [string, string, number, number][] = [
    ['anna@acme.example', 'cf9794e832c05b7a', 3, 3],
    ['user0@acme.example', '278f34267eb158cb', 3, 4],
    ['jane.doe@bank.example', '997080a1cd2f223f', 1, 8],
    ['anna@xn--bcher-kva.example', 'b32e4ad2124aefbe', 2, 7],
  ];
  for (const [mailbox, hex, of3, of8] of pinned) {
    t.is(mailboxHash(mailbox).toString(16).padStart(16, '0'), hex, mailbox);
    // Independently: sha256 of the lower-case address, first 16 hex digits, mod N, counted from 1.
    const independent = BigInt(`0x${createHash('sha256').update(mailbox).digest('hex').slice(0, 16)}`);
    t.is(mailboxHash(mailbox), independent, mailbox);
    t.is(shardOfMailbox(mailbox, 3), of3, `${mailbox} of 3`);
    t.is(shardOfMailbox(mailbox, 8), of8, `${mailbox} of 8`);
    t.is(Number(independent % 3n) + 1, of3);
  }
  // One mailbox, whatever form the export or the user map writes it in.
  t.is(mailboxHash('Anna@ACME.Example'), mailboxHash('anna@acme.example'));
  t.is(mailboxHash('anna@Bücher.example'), mailboxHash('anna@xn--bcher-kva.example'));
  t.is(shardOfMailbox('x@acme.example', 1), 1, 'one shard holds everything');
});

test('2,000 generated mailboxes spread roughly evenly over 3 and over 8 shards, each in exactly one', (t) => {
  const mailboxes = Array.from({ length: 2000 }, (_, i) => `${['anna', 'trader', 'ops'][i % 3]}.${i}@${['acme.example', 'bank.example'][i % 2]}`);
  for (const n of [3, 8]) {
    const counts = new Array<number>(n).fill(0);
    const filters = Array.from({ length: n }, (_, k) => shardFilter({ index: k + 1, count: n }));
    for (const m of mailboxes) {
      counts[shardOfMailbox(m, n) - 1]!++;
      t.is(filters.filter((mine) => mine(m)).length, 1, `${m} is in exactly one of ${n} shards`);
    }
    const even = mailboxes.length / n;
    for (const [k, c] of counts.entries()) t.true(Math.abs(c - even) < even * 0.2, `shard ${k + 1}/${n} has ${c} of 2000 mailboxes (even: ${even.toFixed(0)}): ${counts.join(', ')}`);
  }
});

test('parseShard: K/N from 1/N to N/N; 0/3, 4/3, 1/0 and a/b refused with what is wrong', (t) => {
  t.deepEqual(parseShard('2/3'), { index: 2, count: 3 });
  t.deepEqual(parseShard(' 1 / 1 '), { index: 1, count: 1 });
  t.regex(parseShard('0/3') as string, /K is counted from 1 \(1\/3 to 3\/3\).*JOB_COMPLETION_INDEX is shard INDEX\+1/);
  t.regex(parseShard('4/3') as string, /K must be from 1 to 3/);
  t.regex(parseShard('1/0') as string, /N \(the number of shards\) must be 1 or more/);
  t.regex(parseShard('a/b') as string, /"a\/b" is not a shard K\/N such as 2\/3/);
  t.regex(parseShard('2') as string, /is not a shard K\/N/);
  t.regex(parseShard('-1/3') as string, /is not a shard K\/N/);
  t.regex(parseShard('') as string, /^empty: give a shard K\/N such as 2\/3/);
  t.regex(parseShard(' ') as string, /^empty: give a shard K\/N/);
});

test('--shard and PIVOT_ARCHIVE_SHARD: a bad value stops run and import before anything is read (exit 2, the error names it)', async (t) => {
  const dir = await tempDir(t);
  const run = ['run', '--sample', '--sink', `maildir:${join(dir, 'm')}`, '--domain', 'acme.example', '--rejects', join(dir, 'r')];
  for (const [value, message] of [
    ['0/3', /--shard: "0\/3": K is counted from 1/],
    ['4/3', /--shard: "4\/3": K must be from 1 to 3/],
    ['1/0', /--shard: "1\/0": N \(the number of shards\) must be 1 or more/],
    ['a/b', /--shard: "a\/b" is not a shard K\/N such as 2\/3/],
  ] as const) {
    const r = await cli([...run, '--shard', value]);
    t.is(r.code, 2, value);
    t.regex(r.log, message, value);
  }
  const fromEnv = await cli(['import', '--from', 'azblob://c', '--sink', `maildir:${join(dir, 'm')}`], { env: { PIVOT_ARCHIVE_SHARD: '4/3' } });
  t.is(fromEnv.code, 2);
  t.regex(fromEnv.log, /PIVOT_ARCHIVE_SHARD: "4\/3": K must be from 1 to 3/);
  t.deepEqual(await readdir(dir), [], 'nothing written');
});

test('a state dir stays its shard\'s: another shard, or an unsharded run, is refused before delivering (its checkpoints would skip others\' items)', async (t) => {
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  const base = ['run', '--sample', '--sink', `maildir:${join(dir, 'm')}`, '--domain', 'acme.example', '--rejects', join(dir, 'r'), '--state-dir', state, '--quiet'];
  t.is((await cli([...base, '--shard', '2/3'])).code, 0);
  t.is((await readFile(join(state, 'shard'), 'utf8')).trim(), '2/3');
  for (const other of [['--shard', '1/3'], ['--shard', '2/4'], []]) {
    const r = await cli([...base, ...other]);
    t.is(r.code, 2, other.join(' '));
    t.regex(r.log, /belongs to shard 2\/3.*needs its own --state-dir/, other.join(' '));
  }
  // Each refusal is in the ledger too, not only in its run log.
  const ledger = (await readFile(join(state, 'ledger.jsonl'), 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { record: string; code?: string });
  t.is(ledger.filter((r) => r.record === 'failure' && r.code === 'E_CONFIG').length, 3);
  t.is((await cli([...base, '--shard', '2/3'])).code, 0, 'the same shard again');
});

test('the drop folder with --shard: each shard records completion in its own state dir and leaves the archive in place for the others (--keep implied)', async (t) => {
  const dir = await tempDir(t);
  const inbox = join(dir, 'inbox');
  await mkdir(inbox);
  await generateSample(join(inbox, 'export.zip'), { events: 200, seed: 3 });
  for (const k of [1, 2]) {
    const r = await cli(['run', '--inbox', inbox, '--settle', '0', '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet', '--max-rejected', '100%', '--shard', `${k}/2`, '--state-dir', join(dir, `state-${k}`)]);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stdout, /inbox: 1 archive\(s\) handled/);
    t.deepEqual(await readdir(inbox), ['export.zip'], `still there for the other shard after shard ${k}/2`);
    t.is((await readdir(join(dir, `state-${k}`, 'completed'))).length, 1, `shard ${k}/2 recorded it completed`);
  }
  const again = await cli(['run', '--inbox', inbox, '--settle', '0', '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects'), '--quiet', '--shard', '2/2', '--state-dir', join(dir, 'state-2')]);
  t.regex(again.log, /already completed/);
  t.deepEqual(await readdir(inbox), ['export.zip']);
});

test('a lock left under this host name by this very pid is an earlier life\'s (a retried Indexed Job pod keeps its host name; node is often pid 1): taken over', async (t) => {
  const dir = await tempDir(t);
  await writeFile(join(dir, 'lock'), JSON.stringify({ pid: process.pid, host: hostname(), startedAt: '2026-11-23T04:00:00Z' }));
  const release = await new StateDir(dir).lock();
  t.is(JSON.parse(await readFile(join(dir, 'lock'), 'utf8')).startedAt === '2026-11-23T04:00:00Z', false, 'the lock is ours now');
  await release();
  // Another live pid on this host still holds it.
  await writeFile(join(dir, 'lock'), JSON.stringify({ pid: process.ppid, host: hostname(), startedAt: '2026-11-23T04:00:00Z' }));
  await t.throwsAsync(new StateDir(dir).lock(), { message: /another run holds/ });
});

// ---------------------------------------------------------------------------------------------
// Three shards at once, one Maildir or one Dovecot: the union is one unsharded run's, exactly

interface Export {
  archive: string;
  /** Every mailbox a run with --domain acme.example targets (for the IMAP server). */
  mailboxes: string[];
}

async function makeExport(dir: string): Promise<Export> {
  const archive = join(dir, 'export.zip');
  // About 10 mailboxes of acme.example, every edge case (bad, oversize, unmapped items).
  await generateSample(archive, { events: 3000, seed: 7, messageFiles: 2 });
  const users = readJsonEntriesIndependently(archive)['users.json'] as { email?: string | null }[];
  const mailboxes = [...new Set(users.flatMap((u) => (canonicalMailbox(u.email) ? [canonicalMailbox(u.email)!] : [])))].filter((m) => m.endsWith('@acme.example'));
  return { archive, mailboxes };
}

/** What each shard wrote: its status log's outcomes and its summary. */
interface ShardRun {
  shard: number;
  summary: RunSummary;
  outcomes: Record<string, unknown>[];
}

function shardArgs(dir: string, ex: Export, sink: string, shard: number): string[] {
  return [
    'run', ex.archive, '--sink', sink, '--domain', 'acme.example', '--quiet', '--max-rejected', '100%',
    '--shard', `${shard}/3`, '--state-dir', join(dir, `state-${shard}`), '--status-log', join(dir, `status-${shard}.jsonl`),
    // One rejects folder for all: shard 1 alone writes to it.
    '--rejects', join(dir, 'rejects'),
  ];
}

async function shardRun(dir: string, shard: number): Promise<ShardRun> {
  const { lines, summary } = await readStatusLog(join(dir, `status-${shard}.jsonl`));
  return { shard, summary, outcomes: lines.filter((l) => l.record === 'outcome') };
}

/** Runs the three shards at once (the real CLI, three processes); each must exit 0. */
async function runShards(t: ExecutionContext, dir: string, ex: Export, sink: string, env: Record<string, string> = {}): Promise<ShardRun[]> {
  const results = await Promise.all(SHARDS.map((k) => cli(shardArgs(dir, ex, sink, k), { env })));
  for (const [i, r] of results.entries()) t.is(r.code, 0, `shard ${i + 1}/3: ${r.stderr}`);
  return Promise.all(SHARDS.map((k) => shardRun(dir, k)));
}

/** The unsharded reference: one run of the same archive into its own Maildir. */
async function reference(t: ExecutionContext, dir: string, ex: Export): Promise<{ pairs: string[]; summary: RunSummary; rejects: string[] }> {
  const out = join(dir, 'reference');
  const status = join(dir, 'reference.jsonl');
  const r = await cli(['run', ex.archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--quiet', '--max-rejected', '100%', '--status-log', status, '--rejects', join(dir, 'reference-rejects')]);
  t.is(r.code, 0, r.stderr);
  return { pairs: pairs(await readMaildir(out)), summary: (await readStatusLog(status)).summary, rejects: (await readdir(join(dir, 'reference-rejects'), { recursive: true })).sort() };
}

/** The per-shard account: balanced, only its own mailboxes, rejected items kept by shard 1 alone. */
function checkShardAccounts(t: ExecutionContext, runs: ShardRun[], ref: RunSummary): void {
  const writers = new Map<string, Set<number>>();
  for (const { shard, summary: s, outcomes } of runs) {
    t.true(s.balanced, `shard ${shard}/3: counters add up`);
    t.is(s.shard, `${shard}/3`);
    t.is(s.itemsFromSource, ref.itemsFromSource, `shard ${shard}/3 reads every item`);
    t.true(s.delivered > 0, `shard ${shard}/3 has mailboxes of its own in this export`);
    t.true((s.itemsForOtherShards ?? 0) > 0, `shard ${shard}/3 leaves items to others`);
    // The balanced equation, spelled out.
    const rejected = s.rejectedTotal + (s.rejectedByShard1 ?? 0);
    t.is(s.itemsFromSource + s.itemsAddedByPlugins, s.itemsDoneEarlier + rejected + s.itemsRouted + (s.itemsForOtherShards ?? 0), `shard ${shard}/3 items`);
    t.is(s.itemsAvailableForImport, s.delivered + s.skipped + s.failed, `shard ${shard}/3 pairs`);
    if (shard === 1) {
      t.deepEqual(s.rejected, ref.rejected, 'shard 1 keeps and records every rejected item');
      t.is(s.rejectedByShard1, undefined);
    } else {
      t.deepEqual(s.rejected, {}, `shard ${shard}/3 keeps no rejected item`);
      t.is(s.rejectedByShard1, ref.rejectedTotal, `shard ${shard}/3 counts them as rejected by shard 1`);
    }
    for (const o of outcomes) {
      if (o.mailbox === null) {
        t.is(shard, 1, `a rejected item recorded by shard ${shard}`);
        continue;
      }
      const mailbox = String(o.mailbox);
      t.is(shardOfMailbox(mailbox, 3), shard, `${mailbox} belongs to shard ${shardOfMailbox(mailbox, 3)}, written by ${shard}`);
      writers.set(mailbox, (writers.get(mailbox) ?? new Set()).add(shard));
    }
  }
  for (const [mailbox, by] of writers) t.is(by.size, 1, `${mailbox} written by shards ${[...by].join(', ')}`);
  // Across the shards: every item's pair once, every rejected item once.
  const sum = (f: (s: RunSummary) => number) => runs.reduce((n, r) => n + f(r.summary), 0);
  t.is(sum((s) => s.itemsAvailableForImport), ref.itemsAvailableForImport, 'pairs across the shards = the unsharded run\'s');
  t.is(sum((s) => s.rejectedTotal), ref.rejectedTotal);
}

/** `status` of the three state dirs as one export: complete, items and pairs the unsharded run's. */
async function checkCombinedStatus(t: ExecutionContext, dir: string, ref: RunSummary): Promise<void> {
  const dirs = SHARDS.flatMap((k) => ['--state-dir', join(dir, `state-${k}`)]);
  const status = await cli(['status', ...dirs, '--export', EXPORT_ID, '--json']);
  t.is(status.code, 0, status.stderr);
  const combined = JSON.parse(status.stdout) as { account: { complete: boolean; balanced: boolean; items: Record<string, number>; pairs: { total: number } }; problems: string[]; shards: { shard: string }[] };
  t.deepEqual(combined.problems, []);
  t.true(combined.account.complete);
  t.true(combined.account.balanced);
  t.is(combined.account.items.routed, ref.itemsRouted);
  t.is(combined.account.items.rejectedKept, ref.rejectedTotal);
  t.is(combined.account.items.notYetRead, 0);
  t.is(combined.account.pairs.total, ref.itemsAvailableForImport);
  t.deepEqual(combined.shards.map((s) => s.shard), ['1/3', '2/3', '3/3']);
  // Two of three: said, and not complete.
  const partial = await cli(['status', '--state-dir', join(dir, 'state-1'), '--state-dir', join(dir, 'state-3'), '--export', EXPORT_ID]);
  t.regex(partial.stdout, /PROBLEM: shard 2\/3 missing/);
  t.regex(partial.stdout, /INCOMPLETE/);
  t.is(partial.code, 1, 'an incomplete export is not a success');
}

/**
 * Counts the outcome lines of a status log a run is still writing, reading only what was added
 * since the last call: read whole every 5 ms, the log cost the run a core.
 */
function outcomeCounter(path: string): () => Promise<number> {
  let read = 0;
  let count = 0;
  let partial = '';
  return async () => {
    const file = await open(path, 'r').catch(() => undefined);
    if (!file) return count;
    try {
      const { size } = await file.stat();
      if (size > read) {
        const added = Buffer.alloc(size - read);
        const { bytesRead } = await file.read(added, 0, added.length, read);
        read += bytesRead;
        const lines = (partial + added.toString('latin1', 0, bytesRead)).split('\n');
        partial = lines.pop()!;
        count += lines.filter((l) => l.includes('"record":"outcome"')).length;
      }
    } finally {
      await file.close();
    }
    return count;
  };
}

/** Starts shard `shard` and kills it with SIGKILL once its status log holds `after` outcomes; resolves to how many it had. */
async function killShardMidRun(dir: string, ex: Export, sink: string, shard: number, after: number, env: Record<string, string> = {}): Promise<number> {
  const log = join(dir, `status-${shard}.jsonl`);
  const outcomesSoFar = outcomeCounter(log);
  const before = await outcomesSoFar();
  const { child, exited } = startCli(shardArgs(dir, ex, sink, shard), { env });
  let running = true;
  void exited.then(() => (running = false));
  while (running && (await outcomesSoFar()) - before < after) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  await exited;
  return (await outcomesSoFar()) - before;
}

test('Maildir: shards 1/3, 2/3 and 3/3 at once deliver exactly what one unsharded run does, no pair twice, each mailbox by one shard; a shard killed with SIGKILL and re-run leaves the union exact', async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const ex = await makeExport(dir);
  const ref = await reference(t, dir, ex);
  const out = join(dir, 'mail');
  const sink = `maildir:${out}`;

  const runs = await runShards(t, dir, ex, sink);
  const got = pairs(await readMaildir(out));
  t.is(new Set(got).size, got.length, 'no (mailbox, item) twice');
  t.deepEqual(got, ref.pairs, 'the union is the unsharded run');
  checkShardAccounts(t, runs, ref.summary);
  t.deepEqual((await readdir(join(dir, 'rejects'), { recursive: true })).sort(), ref.rejects, 'rejected items kept once, by shard 1, as the unsharded run keeps them');
  await checkCombinedStatus(t, dir, ref.summary);
  const verify = await cli(['verify', ...SHARDS.flatMap((k) => ['--state-dir', join(dir, `state-${k}`)]), '--sink', sink]);
  t.is(verify.code, 0, verify.stdout);
  t.is(verify.stdout.match(/intact \d+, missing 0, altered 0, unexpected 0/g)?.length, 3, verify.stdout);

  // Again into an empty Maildir, shard 2 killed part-way first, then all three at once (2 resuming).
  const dir2 = join(dir, 'killed');
  const out2 = join(dir2, 'mail');
  const shard2Pairs = ref.pairs.filter((p) => shardOfMailbox(p.split(' ')[0]!, 3) === 2).length;
  // Few deliveries in flight, so the files cannot all be durable before a quarter of the outcomes are recorded (the kill comes then).
  const cut = await killShardMidRun(dir2, ex, `maildir:${out2}?concurrency=16`, 2, Math.floor(shard2Pairs / 4));
  t.true(cut > 0 && cut < shard2Pairs, `killed mid-run: ${cut} of ${shard2Pairs} outcomes recorded`);
  const before = pairs(await readMaildir(out2));
  t.true(before.length < shard2Pairs, 'the killed shard had not finished');
  const again = await runShards(t, dir2, ex, `maildir:${out2}`);
  const after = pairs(await readMaildir(out2));
  t.is(new Set(after).size, after.length, 'no (mailbox, item) twice after the kill');
  t.deepEqual(after, ref.pairs, 'the union is still exact');
  for (const r of again) t.true(r.summary.balanced, `shard ${r.shard}/3 balanced after the kill`);
  await checkCombinedStatus(t, dir2, ref.summary);

  // A state dir of another N (and of another archive under the same export id) is said, and the union is not complete.
  const other = join(dir, 'other-n');
  t.is((await cli(['run', '--sample', '--sink', `maildir:${join(dir, 'other-mail')}`, '--domain', 'acme.example', '--rejects', join(dir, 'other-rejects'), '--quiet', '--max-rejected', '100%', '--shard', '2/4', '--state-dir', other])).code, 0);
  const mixed = await cli(['status', ...SHARDS.flatMap((k) => ['--state-dir', join(dir, `state-${k}`)]), '--state-dir', other, '--export', EXPORT_ID, '--json']);
  const problems = (JSON.parse(mixed.stdout) as { problems: string[]; account: { complete: boolean } });
  t.false(problems.account.complete);
  t.is(mixed.code, 1);
  t.true(problems.problems.some((p) => /the shards disagree on N: 3, 4/.test(p)), problems.problems.join('\n'));
  t.true(problems.problems.some((p) => /different archives under one export id/.test(p)), problems.problems.join('\n'));
});

test('shards run with different outcome options (shard 1 with another --max-item-size): status of the union names the difference and is not complete', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const ex = await makeExport(dir);
  const sink = `maildir:${join(dir, 'mail')}`;
  const results = await Promise.all(SHARDS.map((k) => cli([...shardArgs(dir, ex, sink, k), ...(k === 1 ? ['--max-item-size', '20MiB'] : [])])));
  for (const r of results) t.is(r.code, 0, r.stderr);
  const status = await cli(['status', ...SHARDS.flatMap((k) => ['--state-dir', join(dir, `state-${k}`)]), '--export', EXPORT_ID, '--json']);
  const union = JSON.parse(status.stdout) as { problems: string[]; account: { complete: boolean } };
  t.false(union.account.complete);
  t.true(union.problems.some((p) => /the shards' runs differ in maxItemSize \(shard 1\/3: 20971520; shard 2\/3, shard 3\/3: 10485760\)/.test(p)), union.problems.join('\n'));
  t.is(union.problems.length, 1, union.problems.join('\n'));
  const text = await cli(['status', ...SHARDS.flatMap((k) => ['--state-dir', join(dir, `state-${k}`)]), '--export', EXPORT_ID]);
  t.regex(text.stdout, /PROBLEM: the shards' runs differ in maxItemSize/);
  t.regex(text.stdout, /INCOMPLETE/);
  t.is(text.code, 1, 'an incomplete export is not a success');
  t.is(status.code, 1);
});

withServer('Dovecot (sharded IMAP)', DOVECOT_BINARY ? undefined : dovecotMissingMessage(), () => {
  test('IMAP: three shards at once into one Dovecot hold exactly the unsharded run\'s pairs, each mailbox written by one shard; one shard killed with SIGKILL and re-run: still exact', async (t) => {
    t.timeout(600_000);
    const dir = await tempDir(t);
    const ex = await makeExport(dir);
    const ref = await reference(t, dir, ex);
    const dovecot = await startDovecot(ex.mailboxes);
    t.teardown(() => removeDovecot(dovecot));
    const sink = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Pivot`;
    const env = { PIVOT_IMAP_PASSWORD: ADMIN_PASSWORD };

    const runs = await runShards(t, dir, ex, sink, env);
    const readBack: { mailbox: string; itemId: string }[] = [];
    for (const mailbox of ex.mailboxes) {
      for (const m of await fetchFolder(dovecot.port, mailbox)) readBack.push({ mailbox, itemId: String((await simpleParser(m.source)).headers.get('x-pivot-item-id')) });
    }
    const got = pairs(readBack);
    t.is(new Set(got).size, got.length, 'no (mailbox, item) twice');
    t.deepEqual(got, ref.pairs);
    checkShardAccounts(t, runs, ref.summary);
    await checkCombinedStatus(t, dir, ref.summary);

    // Into another folder of the same server: shard 3 killed part-way first, then all three at once (3 resuming).
    const dir2 = join(dir, 'killed');
    const sink2 = `imap://archiver@127.0.0.1:${dovecot.port}/?tls=none&folder=INBOX/Resumed`;
    const shard3Pairs = ref.pairs.filter((p) => shardOfMailbox(p.split(' ')[0]!, 3) === 3).length;
    const cut = await killShardMidRun(dir2, ex, sink2, 3, Math.floor(shard3Pairs / 4), env);
    t.true(cut > 0 && cut < shard3Pairs, `killed mid-run: ${cut} of ${shard3Pairs} outcomes recorded`);
    const again = await runShards(t, dir2, ex, sink2, env);
    const readAgain: { mailbox: string; itemId: string }[] = [];
    for (const mailbox of ex.mailboxes) {
      for (const m of await fetchFolder(dovecot.port, mailbox, 'INBOX/Resumed')) readAgain.push({ mailbox, itemId: String((await simpleParser(m.source)).headers.get('x-pivot-item-id')) });
    }
    const after = pairs(readAgain);
    t.is(new Set(after).size, after.length, 'no (mailbox, item) twice after the kill');
    t.deepEqual(after, ref.pairs, 'the union is still exact');
    for (const r of again) t.true(r.summary.balanced, `shard ${r.shard}/3 balanced after the kill`);
    await checkCombinedStatus(t, dir2, ref.summary);
  });
});

withServer('Azurite (sharded import from Blob staging)', AZURITE_BLOB ? undefined : azuriteMissingMessage(), () => {
  test('Blob staging as the boundary: one host stages the whole export, three shards import it at once: the union is the unsharded run, each batch marked per shard, a second import of each shard reads nothing', async (t) => {
    t.timeout(600_000);
    const azurite = await startAzurite();
    t.teardown(() => azurite.dispose());
    const env = azurite.env as Record<string, string>;
    const dir = await tempDir(t);
    const ex = await makeExport(dir);
    const ref = await reference(t, dir, ex);

    const staging = 'azblob://pivot-staging/acme?messages=200';
    const stage = await cli(['run', ex.archive, '--sink', staging, '--domain', 'acme.example', '--quiet', '--max-rejected', '100%', '--rejects', join(dir, 'rejects')], { env });
    t.is(stage.code, 0, stage.stderr);
    const refused = await cli(['run', ex.archive, '--sink', staging, '--domain', 'acme.example', '--shard', '1/2', '--rejects', join(dir, 'rejects')], { env });
    t.is(refused.code, 2);
    t.regex(refused.log, /stage the whole export from one host.*shard the importers/);

    const out = join(dir, 'mail');
    const importArgs = (k: number) => ['import', '--from', 'azblob://pivot-staging/acme', '--sink', `maildir:${out}`, '--shard', `${k}/3`, '--state-dir', join(dir, `import-${k}`), '--status-log', join(dir, `import-${k}.jsonl`)];
    const imports = await Promise.all(SHARDS.map((k) => cli(importArgs(k), { env })));
    for (const [i, r] of imports.entries()) t.is(r.code, 0, `import shard ${i + 1}/3: ${r.stderr}`);
    const got = pairs(await readMaildir(out));
    t.is(new Set(got).size, got.length, 'no (mailbox, item) twice');
    t.deepEqual(got, ref.pairs, 'the union of the sharded imports is the unsharded run');
    let delivered = 0;
    const writers = new Map<string, number>();
    for (const k of SHARDS) {
      const { lines, summary } = await readStatusLog(join(dir, `import-${k}.jsonl`));
      t.true(summary.balanced, `import shard ${k}/3 balanced`);
      t.is(summary.shard, `${k}/3`);
      t.is(summary.itemsFromSource, summary.itemsRouted + (summary.itemsForOtherShards ?? 0), `import shard ${k}/3: every staged message is this shard's or another's`);
      t.true(summary.delivered > 0 && (summary.itemsForOtherShards ?? 0) > 0);
      t.is(summary.batchesFailed, 0);
      delivered += summary.delivered;
      for (const o of lines.filter((l) => l.record === 'outcome')) {
        const mailbox = String(o.mailbox);
        t.is(shardOfMailbox(mailbox, 3), k);
        const before = writers.get(mailbox);
        t.true(before === undefined || before === k, `${mailbox} written by shards ${before} and ${k}`);
        writers.set(mailbox, k);
      }
    }
    t.is(delivered, ref.pairs.length);
    // The documented night: status of the three importers' state dirs reads the export COMPLETE (exit 0).
    const status = await cli(['status', ...SHARDS.flatMap((k) => ['--state-dir', join(dir, `import-${k}`)]), '--export', EXPORT_ID, '--json']);
    t.is(status.code, 0, status.stdout);
    const union = JSON.parse(status.stdout) as { account: { complete: boolean; pairs: { total: number; delivered: number } }; problems: string[]; shards: { shard: string }[] };
    t.deepEqual(union.problems, []);
    t.true(union.account.complete);
    t.is(union.account.pairs.delivered, ref.pairs.length);
    t.deepEqual(union.shards.map((x) => x.shard), ['1/3', '2/3', '3/3']);
    // Two of the three: not complete.
    const partial = await cli(['status', '--state-dir', join(dir, 'import-1'), '--state-dir', join(dir, 'import-2'), '--export', EXPORT_ID]);
    t.is(partial.code, 1);
    t.regex(partial.stdout, /PROBLEM: shard 3\/3 missing/);
    // Each shard marked the batches for itself: a second import of a shard reads none; an unsharded import still sees them all.
    for (const k of SHARDS) {
      const again = await cli([...importArgs(k), '--json'], { env });
      t.is(again.code, 0, again.stderr);
      const summary = JSON.parse(again.stdout) as RunSummary;
      t.is(summary.batchesImported, 0, `shard ${k}/3 again: nothing left to import`);
      t.is(summary.itemsFromSource, 0);
    }
    const whole = await cli(['import', '--from', 'azblob://pivot-staging/acme', '--sink', `maildir:${out}`, '--json'], { env });
    t.is(whole.code, 0, whole.stderr);
    const wholeSummary = JSON.parse(whole.stdout) as RunSummary;
    t.deepEqual([wholeSummary.delivered, wholeSummary.skipped], [0, ref.pairs.length], 'an unsharded import finds every message there');
  });
});
