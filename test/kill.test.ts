import test, { type ExecutionContext } from 'ava';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { mailboxFolderName } from '../src/sinks/maildir/index.js';
import { checkpointsResuming, cli, readStatusLog, startCli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

/** A seeded PRNG, so a failing kill point can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => ((a = (a * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

/** Messages in the Pivot folders so far (a readdir of every mailbox: callers look every 40 ms, not more, as it costs CPU the run needs). */
async function delivered(out: string): Promise<number> {
  let n = 0;
  for (const mailbox of await readdir(out).catch(() => [] as string[])) {
    n += (await readdir(join(out, mailbox, '.INBOX.Pivot', 'cur')).catch(() => [])).length;
  }
  return n;
}

/** A 3,000-event sample run into `dir/mail` with a status log, started; `signal` is sent once `after` messages are delivered. */
async function signalMidRun(dir: string, seed: number, signal: NodeJS.Signals, after: number, extra: string[] = []) {
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 3000, seed });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  // These samples (seeded) have up to 12% unmapped items: not what these tests are about.
  const args = ['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects'), ...extra];
  const { child, exited } = startCli(args);
  while ((await delivered(out)) < after) await new Promise((r) => setTimeout(r, 40));
  return { args, out, status, exited, signal: () => child.kill(signal) };
}

/** A sample archive of `events` events in `dir`, and what a plain run of it puts in a Maildir. */
async function archiveWithReference(t: ExecutionContext, dir: string, events: number, seed: number) {
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events, seed });
  const reference = join(dir, 'reference');
  t.is((await cli(['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${reference}`, '--rejects', join(dir, 'rejects')])).code, 0);
  return { archive, expected: await readMaildir(reference) };
}

/** Kills the run with SIGKILL once `after` messages are delivered (0: as soon as it starts). */
async function runAndKill(args: string[], out: string, after: number): Promise<void> {
  const { child, exited } = startCli(args);
  let running = true;
  void exited.then(() => (running = false));
  while (running && (await delivered(out)) < after) await new Promise((r) => setTimeout(r, 40));
  child.kill('SIGKILL');
  await exited;
}

test('killed with SIGKILL at random points, a re-run leaves every mailbox with each item exactly once, byte for byte', async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const { archive, expected: stored } = await archiveWithReference(t, dir, 1500, 31);
  const expected = new Map(stored.map((m) => [`${m.mailbox}/${m.file}`, m.raw]));

  let cutMidway = 0;
  for (const seed of [1, 2, 3, 4, 5]) {
    const out = join(dir, `killed-${seed}`);
    // With a state dir, so the re-run resumes from whatever checkpoint the killed run left.
    const args = ['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--rejects', join(dir, 'rejects'), '--state-dir', join(dir, `state-${seed}`)];
    // Seed 1 kills during start-up (archive still being checked); the others during delivery.
    const at = seed === 1 ? 0 : Math.floor(random(seed)() * expected.size * 0.9);
    await runAndKill(args, out, at);
    const before = (await readMaildir(out)).length;
    if (before > 0 && before < expected.size) cutMidway++;
    const resumed = await cli(args);
    t.is(resumed.code, 0, `seed ${seed}, killed after ${at} messages: ${resumed.stderr}`);
    const got = await readMaildir(out);
    t.is(got.length, expected.size, `seed ${seed}: killed after ${at} messages`);
    t.true(got.every((m) => expected.get(`${m.mailbox}/${m.file}`)?.equals(m.raw)), `seed ${seed}: a message differs or is extra`);
    for (const mailbox of await readdir(out)) t.deepEqual(await readdir(join(out, mailbox, '.INBOX.Pivot', 'tmp')), [], `seed ${seed}: ${mailbox}/tmp left behind`);
  }
  t.true(cutMidway >= 3, `only ${cutMidway} of 5 kills landed in the middle of delivery`);
});

/**
 * A run with --state-dir killed once it saved a checkpoint keeping some folders; that checkpoint's
 * path and folders. 2 ms an item (in every run of it: a checkpoint is resumed only under the same
 * options), so the run lasts long enough for checkpoints to be saved (about every second).
 */
async function killedWithFolders(t: ExecutionContext, seed: number, events = 2500) {
  const dir = await tempDir(t);
  const { archive, expected } = await archiveWithReference(t, dir, events, seed);
  const out = join(dir, 'mail');
  const state = join(dir, 'state');
  const slow = join(dir, 'slow.mjs');
  await writeFile(slow, "export default { name: 'slow', version: '1.0.0', hostApi: '^1.0.0', async transform(item) { await new Promise((r) => setTimeout(r, 2)); return item; } };\n");
  const args = ['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--state-dir', state, '--rejects', join(dir, 'rejects'), '--plugin', slow];
  const { child, exited } = startCli(args);
  let ended = false;
  void exited.then(() => (ended = true));
  const checkpoints = join(state, 'checkpoints');
  const saved = async () => {
    for (const name of (await readdir(checkpoints).catch(() => [] as string[])).filter((n) => n.endsWith('.json'))) {
      const folders = await readFile(join(checkpoints, name), 'utf8').then((text) => (JSON.parse(text) as { folders?: Record<string, number> }).folders, () => undefined);
      if (folders && Object.keys(folders).length > 0) return { path: join(checkpoints, name), folders };
    }
    return undefined;
  };
  while ((await saved()) === undefined) {
    if (ended) throw new Error('the run ended before a checkpoint with folders was saved');
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await exited;
  return { args, out, state, checkpoints, expected, checkpoint: (await saved())! };
}

/** The Maildir holds exactly what a plain run of the archive put in the reference, byte for byte. */
async function assertAsReference(t: ExecutionContext, out: string, expected: Awaited<ReturnType<typeof readMaildir>>) {
  const got = await readMaildir(out);
  t.deepEqual(got.map((m) => `${m.mailbox}/${m.file}`), expected.map((m) => `${m.mailbox}/${m.file}`));
  t.true(got.every((m, i) => m.raw.equals(expected[i]!.raw)));
}

test('SIGTERM stops cleanly: items in flight finish, the summary says interrupted (exit 4), a re-run finishes the set', async (t) => {
  t.timeout(300_000);
  const { args, out, status, exited, signal } = await signalMidRun(await tempDir(t), 32, 'SIGTERM', 500);
  signal();
  t.is(await exited, 4);
  const { summary, lines } = await readStatusLog(status);
  t.true(summary.interrupted);
  t.true(summary.balanced);
  t.true(summary.itemsFromSource < 3007);
  // Everything the log calls delivered is on disk, and nothing else is.
  t.is(await delivered(out), summary.delivered);
  t.is(lines.filter((l) => l.outcome === 'delivered').length, summary.delivered);

  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  const again = (await readStatusLog(status)).summary;
  t.false(again.interrupted);
  t.is(again.skipped, summary.delivered);
  t.is(await delivered(out), again.itemsAvailableForImport);
});

test('SIGHUP reopens --log-file (logrotate moves it away first): the run goes on, later lines go to the new file', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const log = join(dir, 'run.log');
  const { out, status, exited, signal } = await signalMidRun(dir, 34, 'SIGHUP', 300, ['--log-file', log]);
  await rename(log, `${log}.1`);
  signal();
  t.is(await exited, 0);
  const messages = async (path: string) => (await readFile(path, 'utf8')).trim().split('\n').map((line) => String((JSON.parse(line) as { message: unknown }).message));
  const rotated = await messages(`${log}.1`);
  const current = await messages(log);
  t.regex(rotated[0]!, /^export acme-2026-11-23/);
  t.false(rotated.some((m) => m.startsWith('SIGHUP')));
  t.regex(current[0]!, /^SIGHUP: log file .* reopened$/);
  const { summary } = await readStatusLog(status);
  t.false(summary.interrupted);
  t.true(summary.balanced);
  t.is(summary.delivered, await delivered(out));
  t.true(summary.delivered > 300);
});

test('with --state-dir a killed run resumes from its checkpoint; the run logs together account for every delivery', async (t) => {
  t.timeout(600_000);
  const { args, out, state, expected } = await killedWithFolders(t, 33, 4000);
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  t.regex(resumed.log, /resuming acme-2026-11-23 from an earlier run's checkpoint/);
  const runs = (await readdir(join(state, 'runs'))).sort();
  t.is(runs.length, 2);
  const summary = (await readStatusLog(join(state, 'runs', runs[1]!))).summary;
  t.true(summary.itemsDoneEarlier > 0);
  t.true(summary.balanced);
  const got = await readMaildir(out);
  t.deepEqual(got.map((m) => `${m.mailbox}/${m.file}`), expected.map((m) => `${m.mailbox}/${m.file}`));
  t.true(got.every((m, i) => m.raw.equals(expected[i]!.raw)));
  // Audit: every (mailbox, item) on disk is in one of the two run logs.
  const logged = new Set<string>();
  for (const run of runs) {
    const text = await readFile(join(state, 'runs', run), 'utf8');
    for (const line of text.split('\n').filter(Boolean)) {
      try {
        const l = JSON.parse(line) as { outcome?: string; mailbox?: string; itemId?: string };
        if (l.outcome === 'delivered' || l.outcome === 'skipped') logged.add(`${l.mailbox} ${l.itemId}`);
      } catch {
        // the killed run's last line may be cut
      }
    }
  }
  t.true(got.every((m) => logged.has(`${m.mailbox} ${m.itemId}`)), 'a delivery is missing from the run logs');
  t.deepEqual((await readdir(join(state, 'checkpoints'))).filter((n) => n.endsWith('.json')), [], 'removed once the archive completed');
});

test('with --state-dir, a folder removed between a killed run and its resume is found: the resumed run fails as storage lost (exit 1, no checkpoint kept) and the next one delivers what went with it', async (t) => {
  t.timeout(600_000);
  const { args, out, state, expected, checkpoint } = await killedWithFolders(t, 34);
  // A mailbox the killed run wrote to, before its checkpoint: its folder removed, with what it held.
  const mailbox = Object.keys(checkpoint.folders).sort()[0]!;
  const folder = join(out, mailboxFolderName(mailbox), '.INBOX.Pivot');
  t.true((await readdir(join(folder, 'cur'))).length > 0, 'the folder removed held messages');
  await rm(folder, { recursive: true, force: true });

  const resumed = await cli(args);
  t.is(resumed.code, 1, resumed.stderr);
  t.regex(resumed.log, /resuming acme-2026-11-23 from an earlier run's checkpoint/);
  t.regex(resumed.log, /earlier run this one resumes/);
  t.true(resumed.log.includes(mailbox), 'the error names the mailbox');
  // Found by the look (never written again: storageLost) or by a write there (failed as storage lost).
  const runs = (await readdir(join(state, 'runs'))).sort();
  const { summary } = await readStatusLog(join(state, 'runs', runs.at(-1)!));
  t.true(summary.storageLost === true || summary.failed > 0, JSON.stringify(summary));
  t.deepEqual(await checkpointsResuming(state), [], 'no checkpoint resumes past an item: the next run reads the export from the start');
  // What went with the folder is not counted as there (was: COMPLETE, exit 0, when a write found the loss).
  const exportStatus = async () => {
    const status = await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23', '--json']);
    return { code: status.code, account: (JSON.parse(status.stdout) as { account: { complete: boolean; pairs: { failed: number } } }).account };
  };
  const lost = await exportStatus();
  t.is(lost.code, 1);
  t.false(lost.account.complete);
  const verified = await cli(['verify', '--state-dir', state, '--json']);
  t.is(verified.code, 1, verified.stdout);

  const again = await cli(args);
  t.is(again.code, 0, again.stderr);
  await assertAsReference(t, out, expected);
  const whole = await exportStatus();
  t.is(whole.code, 0);
  t.true(whole.account.complete);
  t.is(whole.account.pairs.failed, 0);
});

test('with --state-dir, a checkpoint whose folders the sink cannot take (edited by hand) is not resumed: the run reads the export from the start, and delivers everything', async (t) => {
  t.timeout(600_000);
  const { args, out, expected, checkpoint } = await killedWithFolders(t, 35);
  const text = JSON.parse(await readFile(checkpoint.path, 'utf8')) as Record<string, unknown>;
  await writeFile(checkpoint.path, JSON.stringify({ ...text, folders: { 'not an address': 'nor an identity' } }));
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  t.regex(resumed.log, /an earlier run's checkpoint of acme-2026-11-23 keeps folders the sink cannot take: read from the start/);
  t.notRegex(resumed.log, /resuming acme-2026-11-23/);
  await assertAsReference(t, out, expected);
});
