import { beforeConsoleLine, type Logger } from './logger.js';
import type { Progress } from './pipeline.js';

export function describeProgress(p: Progress): string {
  const rate = p.elapsedMs > 0 ? (p.eventsRead / p.elapsedMs) * 1000 : 0;
  const counters = `delivered ${p.delivered}, skipped ${p.skipped}, rejected ${p.rejected}, failed ${p.failed}, ${Math.round(rate)} items/s`;
  // Staged batches are listed as they are read: how many there are is not known before the end.
  if (p.eventsTotal === undefined) return `items ${p.eventsRead} read (of a total not known yet), ${counters}`;
  const left = rate > 0 ? Math.round((p.eventsTotal - p.eventsRead) / rate) : NaN;
  const eta = Number.isFinite(left) ? `${Math.floor(left / 60)}m${String(left % 60).padStart(2, '0')}s` : '?';
  const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
  return `items ${p.eventsRead}/${p.eventsTotal} (${mb(p.bytesRead)}/${mb(p.bytesTotal)} MB), ${counters}, ETA ${eta}`;
}

/** Where the bar is drawn: stderr, or a fake terminal in tests. */
export type BarStream = Pick<NodeJS.WriteStream, 'write'> & { columns?: number };

export interface ProgressReporter {
  everyMs: number;
  report?: (p: Progress) => void;
  /** Before the summary: the bar's last state stays on its own line, once; the logger no longer clears it. */
  end: () => void;
}

const BAR_WIDTH = 24;

/** The bar and the counters, cut to fit one line of a terminal `columns` wide (the last column would wrap). */
export function barLine(p: Progress, columns: number): string {
  if (p.eventsTotal === undefined) return describeProgress(p).slice(0, Math.max(1, columns - 1));
  const done = p.eventsTotal > 0 ? Math.min(BAR_WIDTH, Math.round((p.eventsRead / p.eventsTotal) * BAR_WIDTH)) : BAR_WIDTH;
  return `[${'#'.repeat(done)}${'.'.repeat(BAR_WIDTH - done)}] ${describeProgress(p)}`.slice(0, Math.max(1, columns - 1));
}

/**
 * On a TTY, a bar redrawn in place on stderr, cleared before each log line so none is glued to
 * it; off a TTY, one log line every `everyMs` (cron mail and log files stay readable); `quiet`
 * turns both off.
 */
export function progressReporter(logger: Logger, options: { quiet: boolean; tty: boolean; stream?: BarStream }): ProgressReporter {
  if (options.quiet) return { everyMs: 0, end: () => undefined };
  if (!options.tty) return { everyMs: 10_000, report: (p) => logger.info(`progress: ${describeProgress(p)}`), end: () => undefined };
  const out = options.stream ?? process.stderr;
  let last: Progress | undefined;
  let onScreen = false;
  // The final state of an archive is printed once, even if reported again (an inbox starts the next one after it).
  let finalPrinted = false;
  const draw = (p: Progress, end: string) => out.write(`\r${barLine(p, out.columns || 80)}\u001b[K${end}`);
  const removeHook = beforeConsoleLine(logger, () => {
    if (onScreen) out.write('\r\u001b[K');
    onScreen = false;
  });
  return {
    everyMs: 250,
    report: (p) => {
      const final = p.eventsTotal !== undefined && p.eventsRead >= p.eventsTotal;
      if (final && finalPrinted) return;
      last = p;
      finalPrinted = final;
      draw(p, final ? '\n' : '');
      onScreen = !final;
    },
    end: () => {
      removeHook();
      if (last && !finalPrinted) draw(last, '\n');
      finalPrinted = true;
      onScreen = false;
    },
  };
}
