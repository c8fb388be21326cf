// Something other than a regular file under a delivered message's name in a Pivot folder (a FIFO,
// a directory, a symbolic link looping, dangling, or to a copy of the message outside the store):
// `verify` never reads it, never hangs on it, names it and checks every other message (exit 6);
// a re-run never hangs either: that one delivery fails saying what stands there (exit 1), the
// entry is left as it is, and once it is moved away the next run stores the message, once.
// Before, a FIFO hung both for ever, a loop or a directory gave exit 70 with no report, and a link
// out of the store was followed and its target taken for the message.
import test, { type ExecutionContext } from 'ava';
import { execFileSync, spawn } from 'node:child_process';
import { copyFile, lstat, mkdir, readFile, readdir, rm, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { BIN } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

type Json = Record<string, any>;

/** A command that has not ended by then is killed (SIGKILL, `timeout` with it), so a hang fails the test instead of stalling it. */
const KILL_AFTER_S = 120;

/** The command line in a child process, under `timeout -s KILL`. */
function cli(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('timeout', ['-s', 'KILL', String(KILL_AFTER_S), process.execPath, BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

function parsed(stdout: string): Json {
  try {
    return JSON.parse(stdout) as Json;
  } catch {
    return {};
  }
}

/** A run of a small sample into a Maildir, with its state dir; one delivered file of it, kept aside. */
async function delivered(t: ExecutionContext) {
  t.timeout(600_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 80, seed: 11 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const runArgs = ['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--json'];
  const first = await cli(runArgs);
  t.is(first.code, 0, first.stderr);
  const mailbox = (await readdir(mail)).sort()[0]!;
  const cur = join(mail, mailbox, '.INBOX.Pivot', 'cur');
  const name = (await readdir(cur)).sort()[0]!;
  const location = `${mailbox}/.INBOX.Pivot/cur/${name}`;
  const path = join(cur, name);
  const copy = join(dir, 'outside-the-store.eml');
  await copyFile(path, copy);
  const verifyArgs = ['verify', '--state-dir', state, '--sink', `maildir:${mail}`];
  return { dir, mail, cur, name, path, location, copy, runArgs, verifyArgs, deliveries: Number(parsed(first.stdout).delivered) };
}

/** What `lstat` says an entry is, as the messages name it. */
async function kindAt(path: string): Promise<string> {
  const info = await lstat(path);
  return info.isFIFO() ? 'a FIFO' : info.isDirectory() ? 'a directory' : info.isSymbolicLink() ? 'a symbolic link' : info.isFile() ? 'a regular file' : 'other';
}

const cases: { title: string; kind: string; make: (path: string, copy: string) => Promise<void> }[] = [
  { title: 'a FIFO', kind: 'a FIFO', make: async (path) => void execFileSync('mkfifo', [path]) },
  { title: 'a directory', kind: 'a directory', make: (path) => mkdir(path) },
  { title: 'a symbolic link to itself (a loop)', kind: 'a symbolic link', make: (path) => symlink(path, path) },
  { title: 'a dangling symbolic link', kind: 'a symbolic link', make: (path) => symlink(`${path}.gone`, path) },
  // The link's target holds the very bytes delivered: followed, it would pass for the message.
  { title: 'a symbolic link to a copy of the message outside the store', kind: 'a symbolic link', make: (path, copy) => symlink(copy, path) },
];

for (const { title, kind, make } of cases) {
  test.serial(`maildir odd entry: ${title} under a delivered message's name: verify names it (exit 6) and checks the rest; a re-run fails that delivery only (exit 1); moved away, the next run stores it once`, async (t) => {
    const { cur, name, path, location, copy, runArgs, verifyArgs, deliveries } = await delivered(t);
    t.true(deliveries > 20, `a sample with deliveries enough (${deliveries})`);
    await unlink(path);
    await make(path, copy);

    const verified = await cli([...verifyArgs, '--json']);
    t.is(verified.signal, null, `verify hung (killed after ${KILL_AFTER_S} s)`);
    t.is(verified.code, 6, verified.stderr);
    const store = parsed(verified.stdout).store as Json;
    t.is(store.checked, deliveries);
    t.is(store.intact, deliveries - 1, 'every other message is checked, and intact');
    t.is(store.altered.length, 0);
    t.deepEqual(
      store.missing.map((m: Json) => m.location),
      [location],
      'the message it stands for is not there',
    );
    t.deepEqual(
      store.unexpected.map((u: Json) => [u.messageId, u.location]),
      [[`(not a regular file: ${kind})`, location]],
      'the entry is named, with what it is',
    );
    const human = await cli(verifyArgs);
    t.is(human.code, 6, human.stderr);
    t.true(human.stdout.includes(`(not a regular file: ${kind}) at ${location}`), human.stdout);
    t.false(/E_INTERNAL|a bug in pivot-archive/.test(human.stderr), human.stderr);

    const again = await cli(runArgs);
    t.is(again.signal, null, `the re-run hung (killed after ${KILL_AFTER_S} s)`);
    t.is(again.code, 1, again.stderr);
    const summary = parsed(again.stdout);
    t.is(summary.failed, 1);
    t.is(summary.delivered, 0);
    t.is(summary.skipped, deliveries - 1);
    t.true(again.stderr.includes(`${path} is not a regular file but ${kind}`), again.stderr);
    t.is(await kindAt(path), kind, 'left as it was');
    t.true((await readFile(copy)).length > 0, 'a link target outside the store is left as it was');

    await rm(path, { recursive: true });
    const fixed = await cli(runArgs);
    t.is(fixed.code, 0, fixed.stderr);
    t.is(parsed(fixed.stdout).delivered, 1);
    t.is(await kindAt(path), 'a regular file');
    t.true((await readFile(path)).equals(await readFile(copy)), 'the message as delivered first');
    const base = name.replace(/:2,.*$/, '');
    t.deepEqual((await readdir(cur)).filter((n) => n.startsWith(base.replace(/\.pivot-archive$/, ''))), [name], 'stored once');
    const clean = await cli(verifyArgs);
    t.is(clean.code, 0, clean.stdout + clean.stderr);
  });
}
