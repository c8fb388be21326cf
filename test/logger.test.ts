// The log at the end of a run: every line a slow transport has not taken yet still reaches it,
// and a transport that fails does not end the process.
import test from 'ava';
import winston from 'winston';
import { createLogger, flushLogger } from '../src/logger.js';

type TransportStream = Parameters<winston.Logger['add']>[0];
/** winston's transport base class (its types name the module, not the class). */
const Transport = (winston as unknown as { Transport: new () => TransportStream }).Transport;

/** A transport that takes a millisecond a line, as a log file on a busy disk does after a burst. */
class SlowTransport extends Transport {
  readonly lines: string[] = [];
  log(info: { message: string }, next: () => void): void {
    setTimeout(() => {
      this.lines.push(info.message);
      next();
    }, 1);
  }
}

test('a burst of lines just before the end reaches a slow transport whole: none lost, no "write after end"', async (t) => {
  const logger = createLogger({ level: 'info', json: true });
  logger.remove(logger.transports[0]!); // stderr stays quiet
  const slow = new SlowTransport();
  logger.add(slow);
  const errors: Error[] = [];
  logger.on('error', (err: Error) => errors.push(err));
  for (let i = 0; i < 300; i++) logger.error(`delivery of item m_${i} failed`);
  await flushLogger(logger);
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.is(slow.lines.length, 300);
  t.is(slow.lines.at(-1), 'delivery of item m_299 failed');
  t.deepEqual(errors.map((e) => e.message), []);
});

test('a line on a terminal escapes control characters: a value holding a line break cannot forge a log line', (t) => {
  const logger = createLogger({ level: 'info', json: false });
  const format = logger.transports[0]!.format!;
  const info = format.transform({ level: 'info', message: 'rejected item "x\nERROR all is lost"', [Symbol.for('level')]: 'info' }) as Record<symbol, string>;
  const line = info[Symbol.for('message')]!;
  t.notRegex(line, /\n/);
  t.regex(line, /rejected item "x\\u000aERROR all is lost"$/);
});
