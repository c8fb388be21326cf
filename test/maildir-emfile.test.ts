// A shortage of file descriptors (a low `ulimit -n`) is a passing limit of the host, never a
// message that failed: the Maildir sink keeps what it holds open within the soft limit, and a
// delivery that still meets EMFILE waits and tries again. Any user may lower its own soft limit.
import test from 'ava';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { descriptorBudget, openFileLimit } from '../src/sinks/maildir/descriptors.js';
import { generateSample } from '../src/sample/generate.js';
import { BIN, cli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

test('the soft open-file limit is read from /proc/self/limits, and the sink holds open at most what it leaves room for', (t) => {
  const limits = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes\n`;
  t.is(openFileLimit(limits), 1024);
  t.is(openFileLimit(limits.replace('1024     ', 'unlimited')), undefined);
  t.is(openFileLimit(''), undefined);
  if (process.platform === 'linux') t.true((openFileLimit() ?? 0) > 0);
  for (const limit of [64, 256, 1024, 4096, 65536]) {
    const { reads, group } = descriptorBudget(limit, 4096);
    t.true(reads >= 1 && group >= 1);
    if (limit >= 256) t.true(reads + group <= limit - 64, `${limit}: ${reads} + ${group}`);
  }
  t.deepEqual(descriptorBudget(undefined, 4096).group, 4096);
});

test('a re-run of a delivered export under ulimit -n 256 with the default concurrency (4,096): nothing fails EMFILE, every pair is found (exit 0)', async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 1500, seed: 8, edgeCases: false });
  const mail = join(dir, 'mail');
  const args = ['run', archive, '--all-domains', '--sink', `maildir:${mail}`, '--rejects', join(dir, 'rejects'), '--json'];
  for (const run of ['first', 'again']) {
    const result = await cli(args, { shell: 'ulimit -n 256' });
    t.is(result.code, 0, `${run}: ${result.stderr.slice(0, 2000)}`);
    const summary = JSON.parse(result.stdout) as { delivered: number; skipped: number; failed: number; itemsAvailableForImport: number };
    t.is(summary.failed, 0, run);
    t.is(summary.delivered + summary.skipped, summary.itemsAvailableForImport, run);
    if (run === 'again') t.is(summary.skipped, summary.itemsAvailableForImport);
    t.notRegex(result.stderr, /EMFILE/);
  }
  const stored = await readMaildir(mail);
  t.is(new Set(stored.map((m) => `${m.mailbox} ${m.itemId}`)).size, stored.length, 'nothing twice');
});

test('the sink given no budget (a limit it does not know) still fails nothing under ulimit -n 64: a delivery that meets EMFILE waits and tries again', async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const sinkModule = fileURLToPath(new URL('../src/sinks/maildir/index.js', import.meta.url));
  const script = join(dir, 'deliver.mjs');
  // 600 deliveries at once, to 30 mailboxes, twice (the second time each one is compared with the file it finds).
  await writeFile(
    script,
    `import { MaildirSink } from ${JSON.stringify(sinkModule)};
const root = process.argv[2];
const results = [];
for (let pass = 0; pass < 2; pass++) {
  const sink = new MaildirSink({ root, folder: '.INBOX.Pivot', concurrency: 4096, links: true }, 1e9);
  await sink.open();
  const writes = Array.from({ length: 600 }, (_, n) => {
    const messageId = '<m' + n + '@test.invalid>';
    const message = Buffer.from('Message-ID: ' + messageId + '\\r\\nSubject: ' + n + '\\r\\n\\r\\n' + 'x'.repeat(200) + '\\r\\n');
    return sink.write({ mailbox: 'user' + (n % 30) + '@acme.example', exportId: 'e', position: { file: 0, index: n }, itemId: 'm' + n, conversationId: 'c', messageId, internalDate: 1795394107000 + n * 1000, message }).then((s) => s.outcome, (e) => 'failed ' + e.code);
  });
  const outcomes = await Promise.all(writes);
  await sink.close();
  const count = {};
  for (const o of outcomes) count[o] = (count[o] ?? 0) + 1;
  results.push(count);
}
console.log(JSON.stringify(results));
`,
  );
  const out = await new Promise<string>((resolve, reject) =>
    execFile('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, script, join(dir, 'mail')], { timeout: 150_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
  );
  t.deepEqual(JSON.parse(out), [{ delivered: 600 }, { skipped: 600 }]);
});

test('the file worker started while every descriptor is taken waits for one, as a delivery does, and then works (CI, 2026-12-02: its module read met EMFILE and all 600 deliveries failed)', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const groupCommit = fileURLToPath(new URL('../src/sinks/maildir/group-commit.js', import.meta.url));
  const script = join(dir, 'start.mjs');
  await mkdir(join(dir, 'folder', 'tmp'), { recursive: true });
  await writeFile(
    script,
    `import { openSync, closeSync, readFileSync, statSync } from 'node:fs';
import { GroupCommit } from ${JSON.stringify(groupCommit)};
const folder = process.argv[2];
const held = [];
try { for (;;) held.push(openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
const starting = GroupCommit.start({ count: 16, bytes: 1 << 20 });
setTimeout(() => { for (const fd of held) closeSync(fd); }, 500);
const files = await starting;
await files.write({ folder, dev: statSync(folder).dev }, folder + '/tmp/one', Buffer.from('kept'), Date.now());
await files.close();
console.log(JSON.stringify({ held: held.length, written: readFileSync(folder + '/tmp/one', 'utf8') }));
`,
  );
  const out = await new Promise<string>((resolve, reject) =>
    execFile('sh', ['-c', 'ulimit -n 64 && exec "$0" "$@"', process.execPath, script, join(dir, 'folder')], { timeout: 50_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout))),
  );
  const { held, written } = JSON.parse(out) as { held: number; written: string };
  t.true(held > 0, 'descriptors were all taken');
  t.is(written, 'kept');
});

test('the command line that cannot load for a reason other than a missing module (EMFILE) says so, not "not built ... npm install"', async (t) => {
  const dir = await tempDir(t);
  // A copy of bin/ beside a dist/ whose cli.js fails to load as a low `ulimit -n` makes it fail.
  await mkdir(join(dir, 'bin'));
  await copyFile(BIN, join(dir, 'bin', 'pivot-archive.js'));
  const run = () =>
    new Promise<{ code: number | null; stderr: string }>((resolve) =>
      execFile(process.execPath, [join(dir, 'bin', 'pivot-archive.js'), '--version'], (err, _stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? null) : 0, stderr })),
    );
  const missing = await run();
  t.is(missing.code, 2);
  t.regex(missing.stderr, /not built .*npm install/);
  await mkdir(join(dir, 'dist', 'src'), { recursive: true });
  await writeFile(join(dir, 'dist', 'src', 'cli.js'), "throw Object.assign(new Error(\"EMFILE: too many open files, open '/x/dist/src/errors.js'\"), { code: 'EMFILE', errno: -24 });\n");
  const emfile = await run();
  t.is(emfile.code, 2);
  t.notRegex(emfile.stderr, /not built|npm install/);
  t.regex(emfile.stderr, /cannot start: EMFILE: too many open files/);
});
