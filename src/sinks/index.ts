import { ErrorCode, PivotArchiveError } from '../errors.js';
import type { Sink, SinkFactory, SinkOptions } from './sink.js';

export type { Sink, SinkFactory, SinkOptions, WriteOutcome } from './sink.js';

/**
 * The built-in sinks, each module loaded only when a spec names it: the IMAP and Azure client
 * libraries take about 30 and 25 MB of memory once loaded, which a Maildir run need not carry.
 */
const builtIn = new Map<string, () => Promise<SinkFactory>>([
  ['maildir', async () => (await import('./maildir/index.js')).maildirSinkFactory],
  ['imap', async () => (await import('./imap/index.js')).imapSinkFactory],
  ['imaps', async () => (await import('./imap/index.js')).imapsSinkFactory],
  ['azblob', async () => (await import('./azblob/index.js')).azureBlobSinkFactory],
]);

/**
 * Creates the sink a spec such as `maildir:/srv/mail` names, validating it before any I/O;
 * `factories` replaces the built-in ones (tests, embedders).
 */
export async function createSink(spec: string, options: SinkOptions, factories?: SinkFactory[]): Promise<Sink> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1]?.toLowerCase() ?? '';
  const factory = factories ? factories.find((f) => f.scheme === scheme) : await builtIn.get(scheme)?.();
  if (!factory) {
    const known = factories ? factories.map((f) => f.scheme) : [...builtIn.keys()];
    throw new PivotArchiveError(
      ErrorCode.SINK_CONFIG,
      `unknown sink ${JSON.stringify(shownSpec(spec))}: expected one of ${known.map((s) => `${s}:...`).join(', ')}`,
    );
  }
  return factory.create(spec, options);
}

/** The part of an unknown spec that is safe to show: with a userinfo (a password may hold any character), the scheme alone. */
function shownSpec(spec: string): string {
  return spec.includes('@') ? `${/^[^:]*:/.exec(spec)?.[0] ?? ''}...` : spec.replace(/\?.*$/, '');
}
