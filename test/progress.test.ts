import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createLogger } from '../src/logger.js';
import { barLine, describeProgress, progressReporter, type BarStream } from '../src/progress.js';
import { generateSample } from '../src/sample/generate.js';
import { cli } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const halfway = { eventsRead: 500, eventsTotal: 1000, bytesRead: 3 * 1024 * 1024, bytesTotal: 6 * 1024 * 1024, delivered: 1200, skipped: 3, rejected: 2, failed: 1, elapsedMs: 10_000 };

test('progress says items, bytes of the messages read, deliveries, rate and ETA', (t) => {
  t.is(describeProgress(halfway), 'items 500/1000 (3.0/6.0 MB), delivered 1200, skipped 3, rejected 2, failed 1, 50 items/s, ETA 0m10s');
});

test('a source that cannot know its total (staged batches) is reported without one: items read, no bar, no ETA; its last state is printed at the end', (t) => {
  const { eventsTotal: _unknown, ...unknown } = halfway;
  t.is(describeProgress(unknown), 'items 500 read (of a total not known yet), delivered 1200, skipped 3, rejected 2, failed 1, 50 items/s');
  t.is(barLine(unknown, 200), describeProgress(unknown));
  let written = '';
  const stream = { write: (s: string) => ((written += s), true) } as unknown as NodeJS.WriteStream;
  const bar = progressReporter(createLogger({ level: 'error', json: false }), { quiet: false, tty: true, stream });
  bar.report!(unknown);
  t.false(written.endsWith('\n'), 'not final while reading');
  bar.end();
  t.true(written.endsWith('\n'));
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

/** A terminal `columns` wide that records what is written to it. */
function fakeTerminal(columns: number | undefined, transcript: string[] = []): BarStream & { transcript: string[] } {
  return { columns, isTTY: true, transcript, write: (s: string) => (transcript.push(s), true) } as unknown as BarStream & { transcript: string[] };
}

/** What a terminal shows of a line: text after the last carriage return, without the erase-to-end code. */
const visible = (line: string) => line.slice(line.lastIndexOf('\r') + 1).replace('\u001b[K', '');

test('the bar is redrawn within the terminal width, on one line, and its final state is printed once', (t) => {
  const term = fakeTerminal(40);
  const bar = progressReporter(createLogger({ level: 'error', json: false }), { quiet: false, tty: true, stream: term });
  for (const eventsRead of [100, 200, 300]) bar.report!({ ...halfway, eventsRead });
  t.is(term.transcript.length, 3);
  for (const write of term.transcript) {
    t.true(write.startsWith('\r'), JSON.stringify(write));
    t.false(write.includes('\n'), 'no line is left per redraw');
    t.true(visible(write).length <= 39, `fits 40 columns without wrapping: ${visible(write)}`);
  }
  bar.report!({ ...halfway, eventsRead: 1000 });
  bar.report!({ ...halfway, eventsRead: 1000 });
  bar.end();
  t.is(term.transcript.length, 4, 'the final state once, however often it is reported');
  t.true(term.transcript[3]!.endsWith('\n'));
  t.is(visible(term.transcript[3]!.trimEnd()), barLine({ ...halfway, eventsRead: 1000 }, 40));
  // A wide terminal shows everything; the bar never takes the last column (it would wrap).
  t.true(barLine(halfway, 200).endsWith('ETA 0m10s'));
  t.is(barLine(halfway, 20).length, 19);
});

test.serial('a log line clears the bar first; the next report draws it again; end() leaves its last state once', async (t) => {
  const transcript: string[] = [];
  const term = fakeTerminal(100, transcript);
  const logger = createLogger({ level: 'warn', json: false });
  const bar = progressReporter(logger, { quiet: false, tty: true, stream: term });
  // The logger writes to stderr: record it in the same transcript, in order.
  const stderrWrite = process.stderr.write;
  process.stderr.write = ((s: string) => (transcript.push(`stderr:${s}`), true)) as typeof process.stderr.write;
  try {
    bar.report!(halfway);
    logger.warn('a warning');
    await new Promise((resolve) => setImmediate(resolve));
    bar.report!({ ...halfway, eventsRead: 600 });
    logger.warn('another');
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.stderr.write = stderrWrite;
  }
  t.is(transcript.length, 6, transcript.join(' | '));
  t.regex(transcript[0]!, /^\r\[#+\.+\] items 500\/1000/);
  t.is(transcript[1], '\r\u001b[K', 'cleared before the log line');
  t.regex(transcript[2]!, /^stderr:\d\d:\d\d:\d\d warn a warning\n$/);
  t.regex(transcript[3]!, /^\r\[#+\.+\] items 600\/1000/);
  t.is(transcript[4], '\r\u001b[K');
  t.regex(transcript[5]!, /^stderr:.* warn another\n$/);
  bar.end();
  bar.end();
  t.is(transcript.length, 7);
  t.regex(transcript[6]!, /^\r\[#+\.+\] items 600\/1000.*\n$/, 'the last state stays, on its own line');
  // After end() a log line no longer clears anything.
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    logger.warn('after the end');
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.stderr.write = stderrWrite;
  }
  t.is(transcript.length, 7);
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
