import { createWriteStream, type WriteStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { finished } from 'node:stream';
import winston from 'winston';
import { ErrorCode, PivotArchiveError, errorMessage } from './errors.js';
import { oneLine } from './formats/one-line.js';
import { redactSecrets } from './redact.js';

export type Logger = winston.Logger;

/** Every message, on every transport, goes through redactSecrets first. */
const redact = winston.format((info) => {
  info.message = redactSecrets(String(info.message));
  return info;
});

const jsonLines = () => winston.format.combine(winston.format.timestamp(), winston.format.json());

/** Where winston keeps a line as its format made it. */
const MESSAGE = Symbol.for('message');

/**
 * The log file: always JSON lines, whatever stderr shows; appended to, never truncated. A file
 * that cannot be written (a full disk) is said once on stderr and written no more: the log is not
 * the run's record (the status log and the ledger are), so the run goes on and its end never
 * waits on the file. (winston's File transport drops such an error unsaid and holds every later
 * line, which the end then waited on in vain.)
 */
class LogFileTransport extends winston.transports.Stream {
  private readonly file: WriteStream;

  constructor(filename: string) {
    const file = createWriteStream(filename, { flags: 'a' });
    super({ stream: file, format: jsonLines() });
    this.file = file;
    file.on('error', (err) => {
      if (this.silent) return;
      this.silent = true;
      process.stderr.write(`pivot-archive: the log file ${filename} cannot be written (${redactSecrets(err.message)}): from now on the log goes to stderr only\n`);
    });
  }

  /** The next line waits while the file is behind (a slow disk), until it catches up or fails. */
  override log(info: Record<symbol, string>, next: () => void): void {
    if (this.silent || this.file.destroyed || this.file.write(`${info[MESSAGE]}\n`)) return next();
    const resume = () => {
      this.file.off('drain', resume).off('close', resume);
      next();
    };
    this.file.on('drain', resume).on('close', resume);
  }

  /** The logger's end waits for this: every line it passed is in the file, or the file failed. */
  override _final(done: () => void): void {
    if (this.file.destroyed) return done();
    finished(this.file.end(), () => done());
  }

  close(): void {
    this.file.end();
  }
}

const logFile = (filename: string) => new LogFileTransport(filename);

/**
 * Opens `path` for appending, as the log will, and closes it: a log file that cannot be (a folder
 * that is a file, a read-only place) is a setup error, said before the run starts.
 */
export async function checkLogFile(path: string): Promise<void> {
  try {
    await (await open(path, 'a')).close();
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.CONFIG, `--log-file ${path} cannot be opened for appending: ${errorMessage(err)}`);
  }
}

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
  // A transport that fails must not end the run: the status log and ledger are its record.
  logger.on('error', (err: Error) => process.stderr.write(`pivot-archive: the log cannot be written: ${redactSecrets(err.message)}\n`));
  return logger;
}

/**
 * Closes the log file and opens it again under its name (for logrotate's `postrotate`, which sends
 * SIGHUP after moving the file away). Lines logged meanwhile go to the new file; the old one
 * gets what it was given before.
 */
export function reopenLogFile(logger: Logger, filename: string): void {
  const old = logger.transports.find((t) => t instanceof LogFileTransport);
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
  // A transport that never finishes (a disk that hangs) is not waited for past the limit.
  let limit: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve) => {
    limit = setTimeout(resolve, FLUSH_WAIT_MS);
    logger.on('finish', () => resolve());
    logger.end();
  });
  clearTimeout(limit);
}
