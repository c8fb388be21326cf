// Option values a hostile hunt typed, each reproduced through the command line: a value that
// means two things, one with no bound, an empty one, a repeated flag, a path taken where it
// should not be. Each must be refused naming what was typed (exit 2), or taken as documented.
import test from 'ava';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { resolveConfig } from '../src/options/index.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const RUN_SINK = 'imap://archiver@mail.acme.example/';

test('--max-rejected: a bare whole number (a count? a percentage? a fraction?) is refused, naming what to write; 10%, 0.1, 0 and 100% are taken (was: 1 was taken as 100%)', async (t) => {
  const dir = await tempDir(t);
  const mail = join(dir, 'mail');
  for (const value of ['1', '5', '1.0']) {
    const result = await cli(['run', '--sample', '--sink', `maildir:${mail}`, '--all-domains', '--max-rejected', value, '--dry-run'], { cwd: dir });
    t.is(result.code, 2, `${value}: ${result.stderr}`);
    t.regex(result.stderr, new RegExp(`E_USAGE: --max-rejected: "${value.replace('.', '\\.')}" is ambiguous .*write a percentage such as ${value === '5' ? '5' : '1'}% or 100%, or a fraction below 1 such as 0\\.1`), value);
  }
  // In the config file too (a JSON number).
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ maxRejected: 1 }));
  const fromFile = await cli(['run', '--sample', '--sink', `maildir:${mail}`, '--all-domains', '--config', config, '--dry-run'], { cwd: dir });
  t.is(fromFile.code, 2, fromFile.stderr);
  t.regex(fromFile.stderr, /E_CONFIG: .*config\.json: maxRejected: 1 is ambiguous/);
  t.false(existsSync(mail));
  for (const [value, share] of [['10%', 0.1], ['0.1', 0.1], ['0.05', 0.05], ['0', 0], ['0%', 0], ['100%', 1], ['0.5%', 0.005]] as const) {
    t.is((await resolveConfig('run', { archive: 'x.zip', sink: RUN_SINK, 'max-rejected': value }, {})).maxRejected, share, value);
  }
  // The help says so.
  t.regex((await cli(['run', '--help'])).stdout.replace(/\s+/g, ' '), /--max-rejected share of the items .*\(a percentage such as 10%, or a fraction below 1 such as 0\.1\)/);
});
