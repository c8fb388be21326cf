import test from 'ava';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { LOAD_ONE_AT_A_TIME_BELOW, NODE_FLAGS, launchAssignments, load, loadsOneAtATime, openFileLimit, resolve } from '../src/launch.js';
import { REPO_ROOT } from './helpers/cli.js';

// Every place that starts node on the bin must start it the same way, or a memory or speed
// measured under one would not be what another runs.
const flags = NODE_FLAGS.join(' ');
const assignments = launchAssignments().join(' ');

test('the bin shebang and the start script start node with the launch environment and NODE_FLAGS', async (t) => {
  const shebang = (await readFile(join(REPO_ROOT, 'bin/pivot-archive.js'), 'utf8')).split('\n')[0];
  t.is(shebang, `#!/usr/bin/env -S ${assignments} node ${flags}`);
  const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  t.true(pkg.scripts.start!.startsWith(`${assignments} node ${flags} bin/pivot-archive.js `), pkg.scripts.start);
});

test('every example that runs node on the bin passes NODE_FLAGS and sets the launch environment', async (t) => {
  const files = (await readdir(join(REPO_ROOT, 'examples'), { recursive: true })).map((f) => join(REPO_ROOT, 'examples', f));
  let launches = 0;
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    const unit = file.endsWith('.service');
    for (const m of text.matchAll(/^(.*?)\S*\/node ((?:--\S+ )*)\S*bin\/pivot-archive\.js/gm)) {
      launches++;
      t.is(m[2]!.trim(), flags, `${file}: ${m[0]}`);
      // A systemd unit sets it with Environment=; a shell line before the command.
      if (unit) for (const a of launchAssignments()) t.true(text.includes(`\nEnvironment=${a}\n`), `${file}: Environment=${a}`);
      else t.true(m[1]!.endsWith(`${assignments} `), `${file}: ${m[0]}`);
    }
  }
  t.true(launches >= 3, `examples found launching the bin: ${launches}`);
});

// Under a low open-file limit the bin has modules read one at a time (test/open-file-limit.test.ts runs the command line so).
test('the loader hooks read one module at a time, try again a read that met EMFILE or ENFILE, and let any other error through at once', async (t) => {
  let running = 0;
  let most = 0;
  const next = async (url: string) => {
    running++;
    most = Math.max(most, running);
    await new Promise((r) => setTimeout(r, 2));
    running--;
    return url;
  };
  const urls = Array.from({ length: 20 }, (_, n) => `file:///m${n}.js`);
  t.deepEqual(await Promise.all(urls.map((u, n) => (n % 2 ? load(u, {}, next) : resolve(u, {}, next)))), urls);
  t.is(most, 1);

  let tries = 0;
  const short = async () => {
    if (++tries < 3) throw Object.assign(new Error('EMFILE: too many open files'), { code: tries === 1 ? 'EMFILE' : 'ENFILE' });
    return 'loaded';
  };
  t.is(await load('file:///x.js', {}, short), 'loaded');
  t.is(tries, 3);

  let calls = 0;
  const broken = async () => {
    calls++;
    throw Object.assign(new Error('EACCES'), { code: 'EACCES' });
  };
  await t.throwsAsync(load('file:///y.js', {}, broken), { message: 'EACCES' });
  t.is(calls, 1);
  // A failure does not stop the reads queued after it.
  t.is(await load('file:///z.js', {}, async (u: string) => u), 'file:///z.js');
});

test('modules are read one at a time only under the threshold, and only with room for the loader thread; the limit is read from /proc/self/limits', (t) => {
  t.false(loadsOneAtATime(undefined, 18), 'the limit not known (not Linux)');
  t.false(loadsOneAtATime(LOAD_ONE_AT_A_TIME_BELOW, 18));
  t.false(loadsOneAtATime(65536, 18));
  t.false(loadsOneAtATime(24, 18), 'too few free for the loader thread: it would crash or hang');
  t.false(loadsOneAtATime(100, undefined), 'the descriptors open not known');
  t.true(loadsOneAtATime(26, 18));
  t.true(loadsOneAtATime(LOAD_ONE_AT_A_TIME_BELOW - 1, 18));
  const limits = 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            30                   524288               files\n';
  t.is(openFileLimit(limits), 30);
  t.is(openFileLimit(limits.replace('30  ', 'unlimited')), undefined);
  t.is(openFileLimit(''), undefined);
  if (process.platform === 'linux') t.true((openFileLimit() ?? 0) > 0);
});
