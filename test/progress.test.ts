import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../src/logger.js';
import { describeProgress, progressReporter } from '../src/progress.js';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const halfway = { eventsRead: 500, eventsTotal: 1000, bytesRead: 3 * 1024 * 1024, bytesTotal: 6 * 1024 * 1024, delivered: 1200, skipped: 3, rejected: 2, failed: 1, elapsedMs: 10_000 };

test('progress says items, bytes of the messages read, deliveries, rate and ETA', (t) => {
  t.is(describeProgress(halfway), 'items 500/1000 (3.0/6.0 MB), delivered 1200, skipped 3, rejected 2, failed 1, 50 items/s, ETA 0m10s');
});

test('on a TTY the bar is redrawn in place; --quiet turns reporting off', (t) => {
  let written = '';
  const stream = { write: (s: string) => ((written += s), true) } as unknown as NodeJS.WriteStream;
  const logger = createLogger({ level: 'error', json: false });
  const bar = progressReporter(logger, { quiet: false, tty: true, stream });
  bar.report!(halfway);
  t.true(written.startsWith('\r[############............] items 500/1000'));
  bar.report!({ ...halfway, eventsRead: 1000 });
  t.true(written.endsWith('\n'));
  t.is(progressReporter(logger, { quiet: true, tty: true, stream }).report, undefined);
});

test('off a TTY a run logs progress lines, and --quiet keeps them out', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 'x.zip');
  await generateSample(archive, { events: 100, seed: 5, edgeCases: false });
  const logFile = join(dir, 'run.log');
  const loud = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'a')}`, '--log-file', logFile]);
  t.regex(loud.log, /progress: items 100\/100 \((\d+\.\d)\/\1 MB\), delivered \d+/);
  // Off a terminal the log on stderr is JSON lines.
  t.true(loud.stderr.trim().split('\n').every((l) => typeof (JSON.parse(l) as { message: string }).message === 'string'));
  // The log file gets the same lines as JSON.
  const logged = (await readFile(logFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { level: string; message: string });
  t.true(logged.some((l) => l.level === 'info' && /^progress: items 100\/100/.test(l.message)));
  const quiet = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'b')}`, '--quiet']);
  t.is(quiet.code, 0);
  t.notRegex(quiet.log, /progress:/);
});
