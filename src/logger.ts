import winston from 'winston';
import { oneLine } from './formats/one-line.js';
import { redactSecrets } from './redact.js';

export type Logger = winston.Logger;

/** Every message, on every transport, goes through redactSecrets first. */
const redact = winston.format((info) => {
  info.message = redactSecrets(String(info.message));
  return info;
});

const jsonLines = () => winston.format.combine(winston.format.timestamp(), winston.format.json());

/** A log file is always JSON lines, whatever stderr shows; it is appended to, never truncated. */
const logFile = (filename: string) => new winston.transports.File({ filename, format: jsonLines() });

/** The console transport, with what must run before each line it writes (the progress bar clears its line). */
class StderrTransport extends winston.transports.Console {
  beforeLine?: () => void;
  override log(info: unknown, next: () => void): void {
    this.beforeLine?.();
    super.log!(info, next);
  }
}

/** Runs `clear` before each line the logger writes to stderr; returns what removes it. */
export function beforeConsoleLine(logger: Logger, clear: () => void): () => void {
  const stderr = logger.transports.find((t) => t instanceof StderrTransport);
  if (stderr) stderr.beforeLine = clear;
  return () => {
    if (stderr?.beforeLine === clear) stderr.beforeLine = undefined;
  };
}

/** Logs go to stderr, so stdout carries only the summary (and can be piped). */
export function createLogger(options: { level: string; json: boolean; file?: string }): Logger {
  const file = options.file ? [logFile(options.file)] : [];
  const console = new StderrTransport({
    stderrLevels: ['error', 'warn', 'info', 'verbose', 'debug', 'silly'],
    format: options.json
      ? jsonLines()
      : winston.format.combine(
          winston.format.timestamp({ format: 'HH:mm:ss' }),
          winston.format.printf(({ timestamp, level, message }) => `${timestamp} ${level} ${oneLine(String(message))}`),
        ),
  });
  const logger = winston.createLogger({ level: options.level, format: redact(), transports: [console, ...file] });
  // A log that cannot be written (a full disk under the log file) must not end the run: the status log and ledger are its record.
  logger.on('error', (err: Error) => process.stderr.write(`pivot-archive: the log cannot be written: ${redactSecrets(err.message)}\n`));
  return logger;
}

/**
 * Closes the log file and opens it again under its name (for logrotate's `postrotate`, which sends
 * SIGHUP after moving the file away). Lines logged meanwhile go to the new file; the old one
 * gets what it was given before.
 */
export function reopenLogFile(logger: Logger, filename: string): void {
  const old = logger.transports.find((t) => t instanceof winston.transports.File);
  logger.add(logFile(filename));
  if (old) {
    logger.remove(old);
    old.close?.();
  }
}

/** How long the end of a run waits for log lines a slow transport has not taken yet. */
const FLUSH_WAIT_MS = 10_000;

/**
 * Resolves once every transport has written what it was given (winston loses lines otherwise).
 * winston ends its transports as soon as the logger takes no more lines, while lines may still
 * wait in its buffer for a slow transport (a log file after a burst of errors): written after
 * that end, they were lost and the process died of "write after end". So those lines pass first.
 */
export async function flushLogger(logger: Logger): Promise<void> {
  const waiting = () => logger.readableLength > 0 || logger.transports.some((t) => t.writableLength > 0);
  for (const started = Date.now(); waiting() && Date.now() - started < FLUSH_WAIT_MS; ) await new Promise((resolve) => setTimeout(resolve, 10));
  // A transport whose file cannot be written never finishes: the end is not waited for past the limit.
  let limit: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve) => {
    limit = setTimeout(resolve, FLUSH_WAIT_MS);
    logger.on('finish', () => resolve());
    logger.end();
  });
  clearTimeout(limit);
}
