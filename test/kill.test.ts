import test from 'ava';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { BIN, REPO_ROOT, cli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

/** A seeded PRNG, so a failing kill point can be replayed. */
function random(seed: number): () => number {
  let a = seed;
  return () => ((a = (a * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
}

function runAndKill(args: string[], afterMs: number): Promise<void> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO_ROOT, stdio: 'ignore' });
    const timer = setTimeout(() => child.kill('SIGKILL'), afterMs);
    child.on('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

test('killed with SIGKILL at random points, a re-run leaves every mailbox with each item exactly once, byte for byte', async (t) => {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 1500, seed: 31 });
  const reference = join(dir, 'reference');
  const started = Date.now();
  t.is((await cli(['run', archive, '--sink', `maildir:${reference}`, '--rejects', join(dir, 'rejects')])).code, 0);
  const fullRunMs = Date.now() - started;
  const expected = new Map((await readMaildir(reference)).map((m) => [`${m.mailbox}/${m.file}`, m.raw]));

  let cutMidway = 0;
  for (const seed of [1, 2, 3, 4, 5]) {
    const out = join(dir, `killed-${seed}`);
    const at = Math.floor(300 + random(seed)() * (fullRunMs - 300));
    await runAndKill(['run', archive, '--sink', `maildir:${out}`, '--rejects', join(dir, 'rejects')], at);
    const before = (await readMaildir(out)).length;
    if (before > 0 && before < expected.size) cutMidway++;
    const resumed = await cli(['run', archive, '--sink', `maildir:${out}`, '--rejects', join(dir, 'rejects')]);
    t.is(resumed.code, 0, `seed ${seed}, killed after ${at} ms: ${resumed.stderr}`);
    const got = await readMaildir(out);
    t.is(got.length, expected.size, `seed ${seed}: killed after ${at} ms`);
    t.true(got.every((m) => expected.get(`${m.mailbox}/${m.file}`)?.equals(m.raw)), `seed ${seed}: a message differs or is extra`);
    for (const mailbox of await readdir(out)) t.deepEqual(await readdir(join(out, mailbox, '.INBOX.Pivot', 'tmp')), [], `seed ${seed}: ${mailbox}/tmp left behind`);
  }
  t.true(cutMidway >= 2, `only ${cutMidway} of 5 kills landed in the middle of delivery`);
});
