import { format } from 'node:util';
import type { Logger } from './logger.js';

/** The console methods a plugin may call; pivot-archive itself writes to stdout only its summary. */
const METHODS = ['log', 'info', 'debug', 'trace', 'dir', 'warn', 'error'] as const;

/**
 * While a command runs, the console goes to the log instead of stdout: a plugin's `console.log`
 * mixed its lines into the summary `--json` prints there, and a dump of the environment it printed
 * was not masked. Now each call is one log line (`console.log: ...`, masked as every line is), at
 * the level its method names. Returns what puts the console back.
 */
export function consoleToLog(logger: Logger): () => void {
  const saved = METHODS.map((method) => console[method]);
  for (const method of METHODS) {
    const level = method === 'error' ? 'error' : method === 'warn' ? 'warn' : method === 'debug' || method === 'trace' ? 'debug' : 'info';
    console[method] = (...args: unknown[]) => void logger[level](`console.${method}: ${format(...args)}`);
  }
  return () => METHODS.forEach((method, i) => (console[method] = saved[i]!));
}
