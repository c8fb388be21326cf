import { Readable } from 'node:stream';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import type { Conversation, EventPosition, Manifest, RawEvent, User } from '../../model.js';
import { MembershipTimeline } from '../../transforms/participants/index.js';
import { streamJsonArray } from './json-array.js';
import { DEFAULT_ZIP_LIMITS, readCentralDirectory, readEntryBuffer, type ZipEntry, type ZipLimits } from './zip-reader.js';

export interface SourceEvent {
  raw: RawEvent;
  position: EventPosition;
}

export interface PivotZipSourceConfig {
  /** Path of the archive on disk (stdin is spooled to a file first). */
  path: string;
  limits?: ZipLimits;
}

/** users.json and conversations.json are read whole; this caps what that may cost. */
const MAX_DIRECTORY_ENTRY_BYTES = 512 * 1024 * 1024;
const MESSAGES_ENTRY = /^messages\/[^/]+\.json$/;
const ATTACHMENT_PREFIX = 'attachments/';

/**
 * A Pivot export archive (format version 1), opened and checked: manifest, users and
 * conversations are loaded, every messages file has been streamed once (CRC and JSON
 * checked, join/leave collected), so a corrupt archive fails here, before any delivery.
 */
export class PivotExportArchive {
  private constructor(
    readonly path: string,
    readonly manifest: Manifest,
    readonly users: Map<string, User>,
    readonly conversations: Map<string, Conversation>,
    readonly messageFiles: ZipEntry[],
    readonly membership: MembershipTimeline,
    readonly eventCount: number,
    readonly hostileEntryNames: string[],
    private readonly entries: Map<string, ZipEntry>,
  ) {}

  static async open(config: PivotZipSourceConfig): Promise<PivotExportArchive> {
    const { path } = config;
    const { entries, hostileNames } = await readCentralDirectory(path, config.limits ?? DEFAULT_ZIP_LIMITS);
    const manifest = parseManifest(path, await readJsonEntry(path, entries, 'manifest.json'));
    const users = indexById<User>(path, 'users.json', await readJsonEntry(path, entries, 'users.json'));
    const conversations = indexById<Conversation>(
      path,
      'conversations.json',
      await readJsonEntry(path, entries, 'conversations.json'),
    );
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
    const membership = new MembershipTimeline((id) => conversations.get(id)?.members ?? []);
    let eventCount = 0;
    for (const [file, entry] of messageFiles.entries()) {
      for await (const { raw, position } of readEvents(path, entry, file)) {
        eventCount++;
        recordMembershipChange(membership, raw, position);
      }
    }
    return new PivotExportArchive(
      path,
      manifest,
      users,
      conversations,
      messageFiles,
      membership,
      eventCount,
      hostileNames,
      entries,
    );
  }

  /**
   * Every event, file by file in name order, as a stream that honours backpressure. Once
   * `stop` is aborted no further event is read: the stream ends and what is in flight finishes.
   */
  events(stop?: AbortSignal): Readable {
    const { path, messageFiles } = this;
    this.messageBytesRead = 0;
    const onBytes = (n: number) => (this.messageBytesRead += n);
    async function* all(): AsyncGenerator<SourceEvent> {
      for (const [file, entry] of messageFiles.entries()) {
        for await (const event of readEvents(path, entry, file, onBytes)) {
          if (stop?.aborted) return;
          yield event;
        }
      }
    }
    return Readable.from(all(), { objectMode: true, highWaterMark: 64 });
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

async function* readEvents(path: string, entry: ZipEntry, file: number, onBytes?: (n: number) => void): AsyncGenerator<SourceEvent> {
  try {
    for await (const { key, value } of streamJsonArray(entry.open(onBytes))) {
      yield { raw: (value ?? {}) as RawEvent, position: { file, index: key } };
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

function recordMembershipChange(membership: MembershipTimeline, raw: RawEvent, position: EventPosition): void {
  if (raw === null || typeof raw !== 'object') return;
  if (raw.type !== 'join' && raw.type !== 'leave') return;
  const time = typeof raw.sentAt === 'string' ? Date.parse(raw.sentAt) : NaN;
  const memberId = typeof raw.memberId === 'string' ? raw.memberId : raw.senderId;
  if (typeof raw.conversationId !== 'string' || typeof memberId !== 'string' || Number.isNaN(time)) return;
  membership.record(raw.conversationId, { time, ...position }, memberId, raw.type === 'join');
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
