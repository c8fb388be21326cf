import { createHash } from 'node:crypto';
import { open as openFile, type FileHandle } from 'node:fs/promises';
import { isUtf8 } from 'node:buffer';
import { Readable, type Writable } from 'node:stream';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import type { Conversation, EventPosition, Manifest, SourceEvent, User } from '../../model.js';
import { MembershipTimeline } from '../../transforms/participants/index.js';
import { checkEvent, isObject } from '../../transforms/validate/index.js';
import { scanJsonArray } from './json-array.js';
import { DEFAULT_ZIP_LIMITS, rangeStream, readCentralDirectory, readEntryBuffer, type OpenZipFile, type ZipEntry, type ZipLimits } from './zip-reader.js';

export type { SourceEvent } from '../../model.js';

export interface PivotZipSourceConfig {
  /** Path of the archive on disk (stdin is spooled to a file first). */
  path: string;
  /** Largest event (bytes of its JSON) held in memory; a larger one is yielded `tooLarge`. */
  maxEventBytes?: number;
  limits?: ZipLimits;
}

/** users.json and conversations.json are read whole; this caps what that may cost. */
const MAX_DIRECTORY_ENTRY_BYTES = 512 * 1024 * 1024;
const DEFAULT_MAX_EVENT_BYTES = 64 * 1024 * 1024;
const MESSAGES_ENTRY = /^messages\/[^/]+\.json$/;
const ATTACHMENT_PREFIX = 'attachments/';
const REQUIRED = new Set(['manifest.json', 'users.json', 'conversations.json']);

/** An archive entry the format does not name: recorded, never read. */
export interface IgnoredEntry {
  name: string;
  why: string;
}

/**
 * A Pivot export archive (format version 1), opened and checked: manifest, users and
 * conversations are loaded, every messages file has been scanned once (CRC, JSON structure,
 * ids, valid join/leave collected), so a corrupt archive fails here, before any delivery. The
 * file is held open until `close()`: every read goes through that one descriptor, so replacing
 * the path mid-run changes nothing the run reads.
 */
export class PivotExportArchive {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly streams: Set<Readable>,
    /** Size in bytes and sha256 (hex) of the archive file. */
    readonly size: number,
    readonly sha256: string,
    readonly manifest: Manifest,
    readonly users: Map<string, User>,
    readonly conversations: Map<string, Conversation>,
    readonly messageFiles: ZipEntry[],
    readonly membership: MembershipTimeline,
    readonly eventCount: number,
    readonly hostileEntryNames: string[],
    readonly ignoredEntries: IgnoredEntry[],
    private readonly duplicateCandidates: Set<number>,
    private readonly maxEventBytes: number,
    private readonly entries: Map<string, ZipEntry>,
  ) {}

  static async open(config: PivotZipSourceConfig): Promise<PivotExportArchive> {
    const { path } = config;
    const maxEventBytes = config.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
    let handle: FileHandle;
    try {
      handle = await openFile(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'the file does not exist' : code === 'EISDIR' ? 'it is a directory, not a file' : errorMessage(err);
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${path}: cannot open the archive: ${why}`, { cause: err });
    }
    try {
      const size = (await handle.stat()).size;
      const streams = new Set<Readable>();
      try {
        const [sha256, opened] = await Promise.all([hashFile(handle, size), PivotExportArchive.read({ label: path, handle, size, streams }, maxEventBytes, config.limits)]);
        return new PivotExportArchive(path, handle, streams, size, sha256, ...opened);
      } catch (err) {
        await closeStreams(streams);
        throw err;
      }
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  private static async read(file: OpenZipFile, maxEventBytes: number, limits?: ZipLimits) {
    const path = file.label;
    const { entries, hostileNames } = await readCentralDirectory(file, limits ?? DEFAULT_ZIP_LIMITS);
    const manifest = parseManifest(path, await readJsonEntry(path, entries, 'manifest.json'));
    const users = indexById<User>(path, 'users.json', await readJsonEntry(path, entries, 'users.json'));
    const conversations = indexById<Conversation>(path, 'conversations.json', await readJsonEntry(path, entries, 'conversations.json'));
    for (const conversation of conversations.values()) {
      if (!Array.isArray(conversation.members)) conversation.members = [];
      conversation.members = conversation.members.filter((m): m is string => typeof m === 'string');
    }
    const messageFiles = [...entries.values()]
      .filter((e) => MESSAGES_ENTRY.test(e.name))
      .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
    if (messageFiles.length === 0) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_MISSING_ENTRY, `${path}: no messages/*.json entry`);
    }
    const ignored = [...entries.keys()].filter((name) => !REQUIRED.has(name) && !MESSAGES_ENTRY.test(name) && !(name.startsWith(ATTACHMENT_PREFIX) && name.length > ATTACHMENT_PREFIX.length)).map(ignoredEntry);

    // First pass: count, hash every id (8 bytes an event, never the strings), keep valid join/leave.
    const ids = new IdHashes();
    const changes: { hash: number; id: string; conversationId: string; time: number; position: EventPosition; memberId: string; joined: boolean }[] = [];
    let eventCount = 0;
    for (const [file, entry] of messageFiles.entries()) {
      for await (const event of readEvents(path, entry, file, maxEventBytes)) {
        eventCount++;
        const raw = event.raw;
        const id = isObject(raw) && typeof raw.id === 'string' ? raw.id : undefined;
        const hash = id === undefined ? NaN : hashId(id);
        ids.push(hash);
        if (id === undefined || !isObject(raw) || (raw.type !== 'join' && raw.type !== 'leave')) continue;
        const checked = checkEvent(raw, { users, conversations });
        if ('reason' in checked) continue; // a rejected join/leave changes nobody's membership
        changes.push({ hash, id, conversationId: checked.conversation.id, time: checked.time, position: event.position, memberId: checked.member!.id, joined: raw.type === 'join' });
      }
    }
    const duplicateCandidates = ids.repeated();
    // A join/leave that reuses an earlier event's id is rejected: it must not count either.
    const suspect = changes.filter((c) => duplicateCandidates.has(c.hash));
    const firstOf = suspect.length > 0 ? await firstPositions(path, messageFiles, maxEventBytes, new Set(suspect.map((c) => c.id))) : new Map<string, string>();
    const membership = new MembershipTimeline((id) => conversations.get(id)?.members ?? []);
    for (const c of changes) {
      const first = firstOf.get(c.id);
      if (first !== undefined && first !== `${c.position.file}:${c.position.index}`) continue;
      membership.record(c.conversationId, { time: c.time, ...c.position }, c.memberId, c.joined);
    }
    return [manifest, users, conversations, messageFiles, membership, eventCount, hostileNames, ignored, duplicateCandidates, maxEventBytes, entries] as const;
  }

  /** Releases the archive file, once the reads still going on it have stopped. */
  async close(): Promise<void> {
    await closeStreams(this.streams);
    await this.handle.close().catch(() => undefined);
  }

  /**
   * Every event, file by file in name order, as a stream that honours backpressure. Once
   * `stop` is aborted no further event is read: the stream ends and what is in flight finishes.
   * A later event that reuses an id carries `duplicateOf` (the first one's position).
   */
  events(stop?: AbortSignal): Readable {
    const { path, messageFiles, maxEventBytes, duplicateCandidates } = this;
    this.messageBytesRead = 0;
    const onBytes = (n: number) => (this.messageBytesRead += n);
    async function* all(): AsyncGenerator<SourceEvent> {
      const firstSeen = new Map<string, EventPosition>();
      for (const [file, entry] of messageFiles.entries()) {
        for await (const event of readEvents(path, entry, file, maxEventBytes, onBytes)) {
          if (stop?.aborted) return;
          const id = isObject(event.raw) && typeof event.raw.id === 'string' ? event.raw.id : undefined;
          if (id !== undefined && duplicateCandidates.has(hashId(id))) {
            const first = firstSeen.get(id);
            if (first) event.duplicateOf = first;
            else firstSeen.set(id, event.position);
          }
          yield event;
        }
      }
    }
    return Readable.from(all(), { objectMode: true, highWaterMark: 64 });
  }

  /** Streams the exact bytes of an event too large to hold from its messages file into `out` (and ends it). */
  async copyEventBytes(position: EventPosition, range: { offset: number; length: number }, out: Writable): Promise<void> {
    const entry = this.messageFiles[position.file];
    if (!entry) throw new Error(`no messages file ${position.file}`);
    let at = 0;
    const end = range.offset + range.length;
    const slices = async function* () {
      for await (const chunk of entry.open()) {
        const buffer = chunk as Buffer;
        const from = Math.max(range.offset - at, 0);
        const to = Math.min(end - at, buffer.length);
        if (to > from) yield buffer.subarray(from, to);
        at += buffer.length;
        if (at >= end) return;
      }
    };
    const { pipeline } = await import('node:stream/promises');
    await pipeline(Readable.from(slices()), out);
  }

  /** Uncompressed bytes of the messages files the current `events()` read has consumed. */
  messageBytesRead = 0;

  get messageBytesTotal(): number {
    return this.messageFiles.reduce((sum, f) => sum + f.uncompressedSize, 0);
  }

  attachment(id: string): ZipEntry | undefined {
    return this.entries.get(ATTACHMENT_PREFIX + id);
  }
}

/** Destroys read streams and waits until none has a read in flight (so the descriptor can close). */
async function closeStreams(streams: Set<Readable>): Promise<void> {
  await Promise.all(
    [...streams].map(
      (stream) =>
        new Promise<void>((resolve) => {
          if (stream.closed) return resolve();
          stream.once('close', () => resolve());
          stream.destroy();
        }),
    ),
  );
}

function ignoredEntry(name: string): IgnoredEntry {
  const folded = name.normalize('NFKC').toLowerCase();
  if (/m.ss.g.s|\.json$/.test(folded) || folded.includes('messages')) {
    return { name, why: 'looks like a messages file but is not messages/<name>.json (lower-case, one level): not read' };
  }
  return { name, why: 'not part of the export format (manifest.json, users.json, conversations.json, messages/<name>.json, attachments/<id>): not read' };
}

async function hashFile(handle: FileHandle, size: number): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of rangeStream(handle, 0, size)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** A 53-bit hash of an id (two 32-bit FNV-1a variants): equal ids, equal hashes; collisions are checked exactly. */
function hashId(id: string): number {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ id.length;
  for (let i = 0; i < id.length; i++) {
    const c = id.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995) ^ (b >>> 15);
  }
  return (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
}

/** Id hashes in a growable typed array: 8 bytes an event, whatever the ids. */
class IdHashes {
  private values = new Float64Array(1024);
  private length = 0;

  push(hash: number): void {
    if (Number.isNaN(hash)) return;
    if (this.length === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length++] = hash;
  }

  /** Hashes seen more than once: the only ids that can be duplicates. */
  repeated(): Set<number> {
    const sorted = this.values.subarray(0, this.length).sort();
    const repeated = new Set<number>();
    for (let i = 1; i < sorted.length; i++) if (sorted[i] === sorted[i - 1]) repeated.add(sorted[i]!);
    this.values = new Float64Array(0);
    return repeated;
  }
}

/** Where each of `ids` first stands (`file:index`): an extra pass, made only when a join/leave id repeats. */
async function firstPositions(path: string, files: ZipEntry[], maxEventBytes: number, ids: Set<string>): Promise<Map<string, string>> {
  const first = new Map<string, string>();
  for (const [file, entry] of files.entries()) {
    for await (const { raw, position } of readEvents(path, entry, file, maxEventBytes)) {
      if (isObject(raw) && typeof raw.id === 'string' && ids.has(raw.id) && !first.has(raw.id)) first.set(raw.id, `${position.file}:${position.index}`);
    }
  }
  return first;
}

/** The events of one messages file: each element's exact bytes and parsed value, or why not. */
async function* readEvents(path: string, entry: ZipEntry, file: number, maxEventBytes: number, onBytes?: (n: number) => void): AsyncGenerator<SourceEvent> {
  try {
    for await (const element of scanJsonArray(entry.open(onBytes), maxEventBytes)) {
      const event: SourceEvent = { position: { file, index: element.index } };
      if (!element.bytes) {
        event.tooLarge = { offset: element.offset, length: element.length };
        yield event;
        continue;
      }
      event.bytes = element.bytes;
      if (!isUtf8(element.bytes)) event.invalidUtf8At = firstInvalidUtf8(element.bytes);
      try {
        event.raw = JSON.parse(element.bytes.toString('utf8'));
      } catch (err) {
        event.malformed = errorMessage(err);
      }
      yield event;
    }
  } catch (err) {
    if (err instanceof PivotArchiveError) throw err;
    throw new PivotArchiveError(
      ErrorCode.ARCHIVE_CONTENT,
      `${path}: ${entry.name} is not a JSON array of events: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

/** Offset of the first byte that does not start a valid UTF-8 sequence (only called on bytes that hold one). */
function firstInvalidUtf8(bytes: Buffer): number {
  for (let i = 0; i < bytes.length; ) {
    const c = bytes[i]!;
    const n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : (c & 0xf0) === 0xe0 ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n === 0 || !isUtf8(bytes.subarray(i, i + n))) return i;
    i += n;
  }
  return bytes.length;
}

async function readJsonEntry(path: string, entries: Map<string, ZipEntry>, name: string): Promise<unknown> {
  const entry = entries.get(name);
  if (!entry) throw new PivotArchiveError(ErrorCode.ARCHIVE_MISSING_ENTRY, `${path}: required entry ${name} is missing`);
  const bytes = await readEntryBuffer(entry, MAX_DIRECTORY_ENTRY_BYTES);
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${name} is not valid JSON: ${errorMessage(err)}`);
  }
}

function isTimestamp(value: unknown): boolean {
  return typeof value === 'string' && /(Z|[+-]\d\d:?\d\d)$/.test(value) && !Number.isNaN(Date.parse(value));
}

function parseManifest(path: string, value: unknown): Manifest {
  const bad = (why: string) => new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: manifest.json ${why}`);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw bad('is not a JSON object');
  const m = value as Record<string, unknown>;
  if (m.format !== 'pivot-export') throw bad(`has format ${JSON.stringify(m.format)}, expected "pivot-export"`);
  if (m.version !== 1) {
    throw new PivotArchiveError(
      ErrorCode.ARCHIVE_VERSION,
      `${path}: manifest.json has version ${JSON.stringify(m.version)}; this tool reads version 1 only`,
    );
  }
  for (const field of ['exportId', 'tenant'] as const) {
    if (typeof m[field] !== 'string' || m[field] === '') throw bad(`lacks a non-empty string ${field}`);
  }
  for (const field of ['windowStart', 'windowEnd', 'createdAt'] as const) {
    if (!isTimestamp(m[field])) throw bad(`has no ISO 8601 time with a zone in ${field}`);
  }
  return m as unknown as Manifest;
}

function indexById<T extends { id: string }>(path: string, name: string, value: unknown): Map<string, T> {
  if (!Array.isArray(value)) throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${name} is not a JSON array`);
  const map = new Map<string, T>();
  for (const [index, element] of value.entries()) {
    if (element === null || typeof element !== 'object' || typeof (element as T).id !== 'string') {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${name}[${index}] has no string id`);
    }
    if (map.has((element as T).id)) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${name} holds id ${JSON.stringify((element as T).id)} twice`);
    }
    map.set((element as T).id, element as T);
  }
  return map;
}
