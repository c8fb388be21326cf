import test from 'ava';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE_FLAGS } from '../src/node-flags.js';
import { REPO_ROOT } from './helpers/cli.js';

// Every place that starts node on the bin must pass the same V8 flags, or a memory or speed
// measured under one would not be what another runs.
const flags = NODE_FLAGS.join(' ');

test('the bin shebang and the start script run under NODE_FLAGS', async (t) => {
  const shebang = (await readFile(join(REPO_ROOT, 'bin/pivot-archive.js'), 'utf8')).split('\n')[0];
  t.is(shebang, `#!/usr/bin/env -S node ${flags}`);
  const pkg = JSON.parse(await readFile(join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  t.true(pkg.scripts.start!.startsWith(`node ${flags} bin/pivot-archive.js `), pkg.scripts.start);
});

test('every example that runs node on the bin passes NODE_FLAGS', async (t) => {
  const files = (await readdir(join(REPO_ROOT, 'examples'), { recursive: true })).map((f) => join(REPO_ROOT, 'examples', f));
  let launches = 0;
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    for (const m of text.matchAll(/\/node ((?:--\S+ )*)\S*bin\/pivot-archive\.js/g)) {
      launches++;
      t.is(m[1]!.trim(), flags, `${file}: ${m[0]}`);
    }
  }
  t.true(launches >= 3, `examples found launching the bin: ${launches}`);
});
