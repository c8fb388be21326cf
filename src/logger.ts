import winston from 'winston';
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
          winston.format.printf(({ timestamp, level, message }) => `${timestamp} ${level} ${message}`),
        ),
  });
  return winston.createLogger({ level: options.level, format: redact(), transports: [console, ...file] });
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

/** Resolves once every transport has written what it was given (winston loses lines otherwise). */
export async function flushLogger(logger: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    logger.on('finish', () => resolve());
    logger.end();
  });
}
