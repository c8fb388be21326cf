import { ErrorCode, PivotArchiveError } from '../errors.js';
import { optionsHelp, type OptionTable } from './options.js';
import { AZURE_BLOB_FORM, azureBlobOptions } from './azblob/options.js';
import { GRAPH_FORM, graphOptions } from './graph/options.js';
import { IMAP_FORM, imapOptions } from './imap/options.js';
import { MAILDIR_FORM, maildirOptions } from './maildir/options.js';
import type { Sink, SinkFactory, SinkOptions, StoreReader } from './sink.js';
import { OURS } from './maildir/listing.js';

export type { HeldMessage, Sink, SinkFactory, SinkOptions, Stored, StoreReader, WantedMessage, WriteOutcome } from './sink.js';

interface BuiltIn {
  /** The factory, its module loaded only when a spec names it. */
  load(): Promise<SinkFactory>;
  form: string;
  options: OptionTable;
}

/**
 * The built-in sinks, each module loaded only when a spec names it: the IMAP and Azure client
 * libraries take about 30 and 25 MB of memory once loaded, which a Maildir run need not carry.
 * Their option tables are light modules of their own, so help needs no client library.
 */
const builtIn = new Map<string, BuiltIn>([
  ['maildir', { load: async () => (await import('./maildir/index.js')).maildirSinkFactory, form: MAILDIR_FORM, options: maildirOptions }],
  ['imap', { load: async () => (await import('./imap/index.js')).imapSinkFactory, form: IMAP_FORM, options: imapOptions }],
  ['imaps', { load: async () => (await import('./imap/index.js')).imapsSinkFactory, form: IMAP_FORM, options: imapOptions }],
  ['azblob', { load: async () => (await import('./azblob/index.js')).azureBlobSinkFactory, form: AZURE_BLOB_FORM, options: azureBlobOptions }],
  ['graph', { load: async () => (await import('./graph/index.js')).graphSinkFactory, form: GRAPH_FORM, options: graphOptions }],
]);

/** The scheme a sink spec starts with, lower-cased (`maildir`, `imaps`, ...); '' for none. */
export function sinkScheme(spec: string): string {
  return /^([a-z][a-z0-9+.-]*):/i.exec(spec)?.[1]?.toLowerCase() ?? '';
}

/** The factory of the built-in sink a spec names; E_SINK_CONFIG (quoting no password) for none. */
async function factoryFor(spec: string): Promise<SinkFactory> {
  const sink = builtIn.get(sinkScheme(spec));
  if (!sink) {
    throw new PivotArchiveError(
      ErrorCode.SINK_CONFIG,
      `unknown sink ${JSON.stringify(shownSpec(spec))}: expected one of ${[...builtIn.keys()].map((s) => `${s}:...`).join(', ')}`,
    );
  }
  return sink.load();
}

/** Creates the sink a spec such as `maildir:/srv/mail` names, validating it before any I/O. */
export async function createSink(spec: string, options: SinkOptions): Promise<Sink> {
  return (await factoryFor(spec)).create(spec, options);
}

/** Validates a sink spec as `createSink` does, except the secrets it would read from the environment; no I/O. */
export async function checkSinkSpec(spec: string, options: SinkOptions): Promise<void> {
  (await factoryFor(spec)).check(spec, options);
}

/**
 * A reader of the store a sink spec names, for `verify` (the same spec, validated the same way,
 * before any I/O); E_SINK_CONFIG for a sink whose store cannot be read back.
 */
export async function createStoreReader(spec: string, options: SinkOptions): Promise<StoreReader> {
  const factory = await factoryFor(spec);
  if (!factory.reader) throw new PivotArchiveError(ErrorCode.SINK_CONFIG, `${factory.scheme} sink: its store cannot be read back`);
  return factory.reader(spec, options);
}

/** Every sink's spec form and options (default, bounds, what each does), for `--help`. */
export function sinkOptionsHelp(): string {
  const sections = new Map<string, string>();
  for (const { form, options } of builtIn.values()) sections.set(form, [form, ...optionsHelp(options).map((line) => `  ${line}`)].join('\n'));
  return [...sections.values()].join('\n\n');
}

/** The part of an unknown spec that is safe to show: with a userinfo (a password may hold any character), the scheme alone. */
function shownSpec(spec: string): string {
  return spec.includes('@') ? `${/^[^:]*:/.exec(spec)?.[0] ?? ''}...` : spec.replace(/\?.*$/, '');
}

/**
 * Whether a location is of a store that may hold several messages of one identity, each a message
 * of its own: a Maildir file of ours in `cur/` or `new/` (a content-named variant beside the
 * first), a staged batch's entry (`<batch>.zip#<entry>`: one item staged by two exports).
 */
export function locationKeptApart(location: string): boolean {
  const slash = location.lastIndexOf('/');
  const maildirFile = /(?:^|\/)(?:cur|new)$/.test(location.slice(0, Math.max(slash, 0))) && OURS.test(location.slice(slash + 1));
  return maildirFile || /\.zip#[^/#]+$/.test(location);
}
