import type { Logger } from './logger.js';
import type { Progress } from './pipeline.js';

export function describeProgress(p: Progress): string {
  const rate = p.elapsedMs > 0 ? (p.eventsRead / p.elapsedMs) * 1000 : 0;
  const left = rate > 0 ? Math.round((p.eventsTotal - p.eventsRead) / rate) : NaN;
  const eta = Number.isFinite(left) ? `${Math.floor(left / 60)}m${String(left % 60).padStart(2, '0')}s` : '?';
  const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
  return `items ${p.eventsRead}/${p.eventsTotal} (${mb(p.bytesRead)}/${mb(p.bytesTotal)} MB), delivered ${p.delivered}, skipped ${p.skipped}, rejected ${p.rejected}, failed ${p.failed}, ${Math.round(rate)} items/s, ETA ${eta}`;
}

/**
 * On a TTY, a bar redrawn in place on stderr; off a TTY, one log line every `everyMs`
 * (cron mail and log files stay readable); `quiet` turns both off.
 */
export function progressReporter(logger: Logger, options: { quiet: boolean; tty: boolean; stream?: NodeJS.WriteStream }): { everyMs: number; report?: (p: Progress) => void } {
  if (options.quiet) return { everyMs: 0 };
  if (!options.tty) return { everyMs: 10_000, report: (p) => logger.info(`progress: ${describeProgress(p)}`) };
  const out = options.stream ?? process.stderr;
  return {
    everyMs: 250,
    report: (p) => {
      const width = 24;
      const done = p.eventsTotal > 0 ? Math.min(width, Math.round((p.eventsRead / p.eventsTotal) * width)) : width;
      out.write(`\r[${'#'.repeat(done)}${'.'.repeat(width - done)}] ${describeProgress(p)}\u001b[K`);
      if (p.eventsRead >= p.eventsTotal) out.write('\n');
    },
  };
}
