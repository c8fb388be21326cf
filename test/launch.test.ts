import test from 'ava';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE_FLAGS, launchAssignments } from '../src/launch.js';
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
