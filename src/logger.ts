import winston from 'winston';
import { redactSecrets } from './redact.js';

export type Logger = winston.Logger;

/** Every message, on every transport, goes through redactSecrets first. */
const redact = winston.format((info) => {
  info.message = redactSecrets(String(info.message));
  return info;
});

const jsonLines = () => winston.format.combine(winston.format.timestamp(), winston.format.json());

/** Logs go to stderr, so stdout carries only the summary (and can be piped). */
export function createLogger(options: { level: string; json: boolean; file?: string }): Logger {
  // A log file is always JSON lines, whatever stderr shows; rotate it with logrotate's copytruncate.
  const file = options.file ? [new winston.transports.File({ filename: options.file, format: jsonLines() })] : [];
  const console = new winston.transports.Console({
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

/** Resolves once every transport has written what it was given (winston loses lines otherwise). */
export async function flushLogger(logger: Logger): Promise<void> {
  await new Promise<void>((resolve) => {
    logger.on('finish', () => resolve());
    logger.end();
  });
}
