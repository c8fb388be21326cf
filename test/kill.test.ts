import test from 'ava';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli, readStatusLog, startCli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

/** A seeded PRNG, so a failing kill point can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => ((a = (a * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

/** Messages in the Pivot folders so far. */
async function delivered(out: string): Promise<number> {
  let n = 0;
  for (const mailbox of await readdir(out).catch(() => [] as string[])) {
    n += (await readdir(join(out, mailbox, '.INBOX.Pivot', 'cur')).catch(() => [])).length;
  }
  return n;
}

/** Kills the run with SIGKILL once `after` messages are delivered (0: as soon as it starts). */
async function runAndKill(args: string[], out: string, after: number): Promise<void> {
  const { child, exited } = startCli(args);
  let running = true;
  void exited.then(() => (running = false));
  while (running && (await delivered(out)) < after) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGKILL');
  await exited;
}

test('killed with SIGKILL at random points, a re-run leaves every mailbox with each item exactly once, byte for byte', async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 1500, seed: 31 });
  const reference = join(dir, 'reference');
  t.is((await cli(['run', archive, '--sink', `maildir:${reference}`, '--rejects', join(dir, 'rejects')])).code, 0);
  const expected = new Map((await readMaildir(reference)).map((m) => [`${m.mailbox}/${m.file}`, m.raw]));

  let cutMidway = 0;
  for (const seed of [1, 2, 3, 4, 5]) {
    const out = join(dir, `killed-${seed}`);
    // Seed 1 kills during start-up (archive still being checked); the others during delivery.
    const at = seed === 1 ? 0 : Math.floor(random(seed)() * expected.size * 0.9);
    await runAndKill(['run', archive, '--sink', `maildir:${out}`, '--rejects', join(dir, 'rejects')], out, at);
    const before = (await readMaildir(out)).length;
    if (before > 0 && before < expected.size) cutMidway++;
    const resumed = await cli(['run', archive, '--sink', `maildir:${out}`, '--rejects', join(dir, 'rejects')]);
    t.is(resumed.code, 0, `seed ${seed}, killed after ${at} messages: ${resumed.stderr}`);
    const got = await readMaildir(out);
    t.is(got.length, expected.size, `seed ${seed}: killed after ${at} messages`);
    t.true(got.every((m) => expected.get(`${m.mailbox}/${m.file}`)?.equals(m.raw)), `seed ${seed}: a message differs or is extra`);
    for (const mailbox of await readdir(out)) t.deepEqual(await readdir(join(out, mailbox, '.INBOX.Pivot', 'tmp')), [], `seed ${seed}: ${mailbox}/tmp left behind`);
  }
  t.true(cutMidway >= 3, `only ${cutMidway} of 5 kills landed in the middle of delivery`);
});

test('SIGTERM stops cleanly: items in flight finish, the summary says interrupted (exit 4), a re-run finishes the set', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 3000, seed: 32 });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const args = ['run', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects')];
  const { child, exited } = startCli(args);
  while ((await delivered(out)) < 500) await new Promise((r) => setTimeout(r, 10));
  child.kill('SIGTERM');
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
