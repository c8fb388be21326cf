import { open as openFile, type FileHandle } from 'node:fs/promises';
import { constants as bufferConstants, isUtf8 } from 'node:buffer';
import { createHash } from 'node:crypto';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { crc32 } from 'node:zlib';
import { ErrorCode, PivotArchiveError, errorMessage } from '../../errors.js';
import type { Conversation, EventPosition, ExportContext, Manifest, SourceEvent, User } from '../../model.js';
import { MembershipTimeline } from '../../formats/pivot-export/membership.js';
import { checkEvent, isObject } from '../../formats/pivot-export/event.js';
import { readZonedTime } from '../../formats/pivot-export/time.js';
import { JsonArrayError, JsonArrayScanner, type ElementVisitor } from './json-array.js';
import { IdHashes } from './id-hashes.js';
import { idKey } from '../../hash.js';
import { DEFAULT_ZIP_LIMITS, isHostileEntryName, readCentralDirectory, readEntryBuffer, type EntryReadOptions, type OpenZipFile, type ZipDirectory, type ZipEntry, type ZipLimits } from '../../formats/zip/index.js';

export type { SourceEvent } from '../../model.js';

export interface PivotZipSourceConfig {
  /** Path of the archive on disk (stdin is spooled to a file first). */
  path: string;
  /** How errors name the archive: as the user gave it (`-` for stdin, not the spooled file's path). Default `path`. */
  label?: string;
  /** Largest event (bytes of its JSON) held in memory; a larger one is yielded `tooLarge`. Default 64 MiB; at most V8's longest string. */
  maxEventBytes?: number;
  /** Largest uncompressed/compressed ratio of an entry over 1 MiB (the zip bomb guard); 0 for none. Default 200. */
  maxZipRatio?: number;
}

/** users.json and conversations.json are read whole; this caps what that may cost. */
const MAX_DIRECTORY_ENTRY_BYTES = 512 * 1024 * 1024;
export const DEFAULT_MAX_EVENT_BYTES = 64 * 1024 * 1024;
/**
 * V8's longest string: a UTF-8 byte decodes to at most one UTF-16 unit, so an event of more bytes
 * may not fit one, and JSON.parse could not read it (it would be rejected as malformed, not too large).
 */
const MAX_PARSABLE_EVENT_BYTES = bufferConstants.MAX_STRING_LENGTH;
const MESSAGES_ENTRY = /^messages\/[^/]+\.json$/;
const ATTACHMENT_PREFIX = 'attachments/';
/** `attachments/<id>`, the layout's one place for attachment bytes. */
const isAttachmentEntry = (name: string) => name.startsWith(ATTACHMENT_PREFIX) && name.length > ATTACHMENT_PREFIX.length;
const REQUIRED = ['manifest.json', 'users.json', 'conversations.json'] as const;

/** An archive entry outside the format's layout: recorded with why, never read. */
export interface IgnoredEntry {
  name: string;
  why: string;
}

/** A conversation's `members` as far as they cannot be addressed. */
export interface MemberNote {
  conversationId: string;
  /** `members` is missing or not a list: read as nobody. */
  notAList: boolean;
  /** Entries that are not strings, passed over. */
  notIds: number;
  /** Ids that users.json does not hold: no mailbox can be found for them. */
  unknown: string[];
}

/**
 * A Pivot export archive (format version 1), opened and checked: manifest, users and
 * conversations are loaded, every messages file has been scanned once (CRC-32, JSON structure,
 * id hashes, valid join/leave collected), so a corrupt archive fails here, before any delivery.
 * The file is held open until `close()`: every read goes through that one descriptor, so
 * replacing the path mid-run changes nothing the run reads.
 */
export class PivotExportArchive implements ExportContext {
  /** Uncompressed bytes of the messages files the current `events()` read has consumed. */
  messageBytesRead = 0;

  private constructor(
    /** How errors name the archive (see `PivotZipSourceConfig.label`). */
    readonly label: string,
    private readonly handle: FileHandle,
    private readonly streams: Set<Readable>,
    /** Size in bytes of the archive file. */
    readonly size: number,
    /** sha256 (hex) of the whole archive file, as read through the held descriptor. */
    readonly sha256: string,
    /** The hash of every event's id, merged: what `hasEventId` looks in. */
    private readonly eventIds: IdHashes,
    readonly manifest: Manifest,
    readonly users: Map<string, User>,
    readonly conversations: Map<string, Conversation>,
    readonly messageFiles: ZipEntry[],
    readonly membership: MembershipTimeline,
    readonly eventCount: number,
    readonly hostileEntryNames: string[],
    /** Entries outside the layout (e.g. `Messages/a.json`), each with why: never read. */
    readonly ignoredEntries: IgnoredEntry[],
    /** Conversations whose `members` cannot all be addressed: said in notes, never passed over unsaid. */
    readonly memberNotes: MemberNote[],
    /** `attachments/<id>` entries no event the first pass could read names: in no message. */
    readonly unnamedAttachments: readonly string[],
    private readonly duplicateCandidates: Set<number>,
    /** CRC-32 of each too-large element (`file:index`) as the checked first pass read it. */
    private readonly tooLargeCrcs: Map<string, number>,
    /** CRC-32 of each 64 KiB block of each messages file as the checked first pass read it: every later read is held to them. */
    private readonly blockCrcs: readonly Uint32Array[],
    private readonly maxEventBytes: number,
    private readonly entries: ZipDirectory,
  ) {}

  static async open(config: PivotZipSourceConfig): Promise<PivotExportArchive> {
    const { path } = config;
    const label = config.label ?? path;
    const askedEventBytes = config.maxEventBytes ?? DEFAULT_MAX_EVENT_BYTES;
    if (!(askedEventBytes > 0)) throw new RangeError(`maxEventBytes must be a positive number, not ${askedEventBytes}`);
    const maxEventBytes = Math.min(askedEventBytes, MAX_PARSABLE_EVENT_BYTES);
    let handle: FileHandle;
    try {
      handle = await openFile(path, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'the file does not exist' : code === 'EISDIR' ? 'it is a directory, not a file' : errorMessage(err);
      throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${label}: cannot open the archive: ${why}`, { cause: err });
    }
    const streams = new Set<Readable>();
    // Made here, not in read(): a failure anywhere in open() lets its temporary files go.
    const ids = new IdHashes();
    let reading: ReturnType<typeof PivotExportArchive.read> | undefined;
    try {
      const stat = await handle.stat();
      if (!stat.isFile()) {
        const why = stat.isDirectory() ? 'it is a directory, not a file' : 'it is not a regular file';
        throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${label}: cannot open the archive: ${why}`);
      }
      const size = stat.size;
      // The whole file is hashed while the archive is checked, both through the held descriptor.
      const limits = { maxRatio: config.maxZipRatio === 0 ? Infinity : (config.maxZipRatio ?? DEFAULT_ZIP_LIMITS.maxRatio) };
      reading = PivotExportArchive.read({ label, handle, size, streams }, ids, maxEventBytes, limits);
      const [sha256, opened] = await Promise.all([hashFile(label, handle, size), reading]);
      return new PivotExportArchive(label, handle, streams, size, sha256, ids, ...opened);
    } catch (err) {
      await closeStreams(streams);
      await handle.close().catch(() => undefined);
      // A read the hashing's failure left going ends on the closed file; only then can its id hashes go.
      await reading?.catch(() => undefined);
      ids.close();
      throw err;
    }
  }

  private static async read(file: OpenZipFile, ids: IdHashes, maxEventBytes: number, limits: ZipLimits) {
    const path = file.label;
    const { entries, hostileNames } = await readCentralDirectory(file, limits);
    const manifest = parseManifest(path, await readJsonEntry(path, entries, 'manifest.json'));
    const users = indexById<User>(path, 'users.json', await readJsonEntry(path, entries, 'users.json'));
    const conversations = indexById<Conversation>(path, 'conversations.json', await readJsonEntry(path, entries, 'conversations.json'));
    const memberNotes: MemberNote[] = [];
    for (const conversation of conversations.values()) {
      const listed: unknown = conversation.members;
      // Each member id is users.json's own string where it has one: JSON.parse makes a string per
      // occurrence, kept for the run (about 0.4 MB at 54,000 members of 15,000 conversations).
      conversation.members = Array.isArray(listed) ? listed.filter((m): m is string => typeof m === 'string').map((m) => users.get(m)?.id ?? m) : [];
      const note = {
        conversationId: conversation.id,
        notAList: !Array.isArray(listed),
        notIds: Array.isArray(listed) ? listed.length - conversation.members.length : 0,
        unknown: conversation.members.filter((m) => !users.has(m)),
      };
      if (note.notAList || note.notIds > 0 || note.unknown.length > 0) memberNotes.push(note);
    }
    // Every item of a user or conversation holds the same object (MIME caches a user's address by
    // it): frozen, so a plugin that changes one item's sender or conversation cannot change another's.
    for (const entry of [...users.values(), ...conversations.values()]) freezeAll(entry);
    const messageFiles = [...entries.values()]
      .filter((e) => MESSAGES_ENTRY.test(e.name))
      .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)));
    if (messageFiles.length === 0) {
      throw new PivotArchiveError(ErrorCode.ARCHIVE_MISSING_ENTRY, `${path}: no messages/*.json entry`);
    }
    const ignored: IgnoredEntry[] = [];
    for (const name of entries.keys()) {
      const why = whyIgnored(name);
      if (why) ignored.push({ name, why });
    }

    // First pass: count, hash every id into `ids` (8 bytes an event, never the strings), keep valid join/leave.
    const changes: { key: number; id: string; conversationId: string; time: number; subMs: number; position: EventPosition; memberId: string; joined: boolean }[] = [];
    const tooLargeCrcs = new Map<string, number>();
    const blockCrcs: Uint32Array[] = [];
    let eventCount = 0;
    // Attachment entries no event names (by the key of their entry name) are noted: bytes an exporter kept but no message will carry.
    const unnamed = new Map<number, string>();
    for (const name of entries.keys()) if (isAttachmentEntry(name)) unnamed.set(idKey(name), name);
    for (const [index, entry] of messageFiles.entries()) {
      const recordBlocks: number[] = [];
      await scanEntry(path, entry, maxEventBytes, { recordBlocks }, (bytes, from, to, element, _offset, _length, crc) => {
        eventCount++;
        if (!bytes) {
          tooLargeCrcs.set(`${index}:${element}`, crc);
          return;
        }
        // Most events plainly begin with their id and are no join/leave: hashed, never parsed here.
        const plain = plainId(bytes, from, to);
        if (plain !== undefined) {
          ids.push(plain);
          return;
        }
        // An event with attachments is never plain: each attachment object has an "id" of its own.
        const raw = parsed(bytes, from, to);
        if (!isObject(raw)) return;
        if (unnamed.size > 0 && Array.isArray(raw.attachments)) {
          for (const a of raw.attachments) if (isObject(a) && typeof a.id === 'string') unnamed.delete(idKey(ATTACHMENT_PREFIX + a.id));
        }
        if (typeof raw.id !== 'string') return;
        const key = ids.push(raw.id);
        if (raw.type !== 'join' && raw.type !== 'leave') return;
        // The same rules as delivery: a join/leave the validator rejects changes nobody's membership.
        const checked = checkEvent(raw, { users, conversations });
        if ('reason' in checked) return;
        changes.push({ key, id: raw.id, conversationId: checked.conversation.id, time: checked.time, subMs: checked.subMs, position: { file: index, index: element }, memberId: checked.member!.id, joined: raw.type === 'join' });
      });
      blockCrcs.push(Uint32Array.from(recordBlocks));
    }
    const duplicateCandidates = ids.repeated();
    // A join/leave that reuses an earlier event's id is rejected duplicate-id: it must not count either.
    const suspects = new Set(changes.filter((c) => duplicateCandidates.has(c.key)).map((c) => c.id));
    const firstOf = suspects.size > 0 ? await firstPositions(path, messageFiles, blockCrcs, maxEventBytes, suspects) : new Map<string, EventPosition>();
    const membership = new MembershipTimeline(listedMembers(conversations));
    for (const c of changes) {
      const first = firstOf.get(c.id);
      if (first && (first.file !== c.position.file || first.index !== c.position.index)) continue;
      membership.record(c.conversationId, { time: c.time, subMs: c.subMs, ...c.position }, c.memberId, c.joined);
    }
    return [manifest, users, conversations, messageFiles, membership, eventCount, hostileNames, ignored, memberNotes, [...unnamed.values()], duplicateCandidates, tooLargeCrcs, blockCrcs, maxEventBytes, entries] as const;
  }

  /** Releases the archive file, once the reads still going on it have stopped. Reads after it fail. */
  async close(): Promise<void> {
    await closeStreams(this.streams);
    await this.handle.close().catch(() => undefined);
    this.eventIds.close();
  }

  /**
   * Whether `id` is the id of one of the events (delivered or not), from the first pass's hashes:
   * one 4 KiB read at most. Two ids with one 64-bit hash can only make a plugin's item under an
   * id no event has refused, and so kept in the rejects folder, never lost.
   */
  hasEventId(id: string): boolean {
    return this.eventIds.has(id);
  }

  /**
   * Every event, file by file in name order, always from the first (a resumed run filters
   * afterwards), as an object stream that honours backpressure. Once `stop` is aborted no
   * further event is read: the stream ends and what is in flight finishes. A later event that
   * reuses a (string) id carries `duplicateOf`, the first one's position.
   */
  events(stop?: AbortSignal): Readable {
    const { label: path, messageFiles, blockCrcs, maxEventBytes, duplicateCandidates } = this;
    this.messageBytesRead = 0;
    const onBytes = (n: number) => (this.messageBytesRead += n);
    async function* batches(): AsyncGenerator<SourceEvent[]> {
      // Exact ids, only for the few whose hash was seen twice in the first pass.
      const firstSeen = new Map<string, EventPosition>();
      for (const [index, entry] of messageFiles.entries()) {
        if (stop?.aborted) return;
        for await (const batch of eventBatches(path, entry, index, maxEventBytes, { onBytes, expectBlocks: blockCrcs[index] })) {
          if (duplicateCandidates.size > 0) {
            for (const event of batch) {
              const raw = event.raw;
              if (!isObject(raw) || typeof raw.id !== 'string' || !duplicateCandidates.has(idKey(raw.id))) continue;
              const first = firstSeen.get(raw.id);
              if (first) event.duplicateOf = first;
              else firstSeen.set(raw.id, event.position);
            }
          }
          yield batch;
          if (stop?.aborted) return;
        }
      }
    }
    return eventStream(batches(), stop);
  }

  /**
   * Streams the exact bytes of an event too large to hold (`range` of its messages file, as
   * `tooLarge` gave it) from the archive into `out`, and ends `out`. The messages file is read
   * again through the held descriptor; the bytes are checked against what the scan saw.
   */
  async copyEventBytes(position: EventPosition, range: { offset: number; length: number }, out: Writable): Promise<void> {
    const entry = this.messageFiles[position.file];
    if (!entry) throw new RangeError(`${this.label}: there is no messages file ${position.file}`);
    const { offset, length } = range;
    if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= entry.uncompressedSize)) {
      throw new RangeError(`${this.label}: bytes ${offset}+${length} are not inside ${entry.name} (${entry.uncompressedSize} bytes)`);
    }
    const expected = this.tooLargeCrcs.get(`${position.file}:${position.index}`);
    const { label: path, blockCrcs } = this;
    let crc = 0;
    let copied = 0;
    async function* slices(): AsyncGenerator<Buffer> {
      let at = 0;
      const end = offset + length;
      if (length === 0) return;
      for await (const chunk of entry!.open({ expectBlocks: blockCrcs[position.file] })) {
        const buffer = chunk as Buffer;
        const from = Math.max(offset - at, 0);
        const to = Math.min(end - at, buffer.length);
        at += buffer.length;
        if (to > from) {
          const slice = buffer.subarray(from, to);
          crc = crc32(slice, crc);
          copied += slice.length;
          // The last slice is held back until it is checked: `out` never ends on wrong bytes.
          if (at >= end) {
            if (expected !== undefined && crc >>> 0 !== expected) {
              throw new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `${path}: ${entry!.name} bytes ${offset}+${length} changed since they were read (CRC-32): was the archive rewritten?`);
            }
            yield slice;
            return;
          }
          yield slice;
        }
      }
    }
    await pipeline(Readable.from(slices(), { objectMode: false }), out);
    if (copied !== length) throw new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `${path}: ${entry.name} ended after ${copied} of the ${length} bytes of event ${position.index}`);
  }

  get messageBytesTotal(): number {
    return this.messageFiles.reduce((sum, f) => sum + f.uncompressedSize, 0);
  }

  get exportId(): string {
    return this.manifest.exportId;
  }

  get tenant(): string {
    return this.manifest.tenant;
  }

  membersAt(conversationId: string, at: EventPosition & { time: number; subMs: number }): Iterable<string> {
    return this.membership.membersAt(conversationId, at);
  }

  messageFileName(index: number): string | undefined {
    return this.messageFiles[index]?.name;
  }

  /** The entry `attachments/<id>`, read through the held descriptor when opened. */
  attachment(id: string): ZipEntry | undefined {
    return this.entries.get(ATTACHMENT_PREFIX + id);
  }
}

/**
 * An object stream of the events in `batches` (a batch is at most PARSED_BATCH events): one await
 * per batch, not per event. Pushes stop at the end of the batch in which the high-water mark is
 * reached (backpressure: at most a batch over it; a fill per event consumed cost a closure and two
 * promises each) and when `stop` is aborted.
 */
function eventStream(batches: AsyncGenerator<SourceEvent[]>, stop?: AbortSignal): Readable {
  let queue: SourceEvent[] = [];
  let next = 0;
  let pulling = false;
  // Set by every read() call; a call that comes while a fill runs (a consumer that drains
  // synchronously inside push) is seen by the fill, never lost.
  let wanted = false;
  return new Readable({
    objectMode: true,
    highWaterMark: 64,
    read() {
      wanted = true;
      if (pulling) return;
      pulling = true;
      const fill = async () => {
        try {
          fill: while (wanted) {
            wanted = false;
            for (;;) {
              let full = false;
              while (next < queue.length) {
                if (stop?.aborted) return void this.push(null);
                if (!this.push(queue[next++])) full = true;
              }
              if (full) continue fill;
              if (stop?.aborted) return void this.push(null);
              const result = await batches.next();
              if (this.destroyed) return;
              if (result.done) return void this.push(null);
              queue = result.value;
              next = 0;
            }
          }
        } finally {
          pulling = false;
        }
      };
      fill().catch((err: unknown) => this.destroy(err as Error));
    },
    destroy(err, done) {
      // Ends the generator, which destroys the entry stream it is reading (after a read in flight).
      batches.return(undefined).catch(() => undefined);
      done(err);
    },
  });
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

const LOOKS_LIKE_MESSAGES = 'looks like a messages file but is not messages/<name>.json (lower-case "messages/", one level, lower-case ".json"): not read';

/**
 * Whether an entry set aside (a hostile name, or outside the layout) may hold events: named like
 * a messages file (messages/ in another case or depth, .JSON, a look-alike letter) or any other
 * .json; a hostile name is in no part of the layout, so any .json one (`../messages/b.json`,
 * `/export/x.json`, `attachments/../b.json`, `messages/a\u0001.json`). Its events are read by
 * nothing and counted nowhere: the run alarms.
 */
export function mayHoldEvents(name: string): boolean {
  return (isHostileEntryName(name) && name.normalize('NFKC').toLowerCase().endsWith('.json')) || whyIgnored(name) === LOOKS_LIKE_MESSAGES;
}

/** Why an entry (not hostile, not a directory) is outside the layout, or undefined when it is in it. */
export function whyIgnored(name: string): string | undefined {
  if ((REQUIRED as readonly string[]).includes(name) || MESSAGES_ENTRY.test(name)) return undefined;
  if (isAttachmentEntry(name)) return undefined;
  const folded = name.normalize('NFKC').toLowerCase().replace(/^(\.?\/)+/, '');
  const parts = folded.split('/');
  for (const required of REQUIRED) {
    if (resembles(parts[parts.length - 1]!, required)) return `looks like ${required} but is not named exactly ${required} at the top: not read`;
  }
  if (resembles(parts[0]!, 'attachments') || resembles(parts[0]!, 'attachment')) return 'looks like an attachment but is not attachments/<id>: not read';
  // Any other .json may be a messages file misnamed (message/, msgs/, " messages/"): the layout has no other JSON.
  if (resembles(parts[0]!, 'messages') || (parts.length > 1 && parts[0]!.startsWith('messages')) || folded.endsWith('.json')) return LOOKS_LIKE_MESSAGES;
  return 'not part of the export layout (manifest.json, users.json, conversations.json, messages/<name>.json, attachments/<id>): not read';
}

/** Same length as `target`, and every character either equal or not ASCII (a look-alike letter). */
function resembles(folded: string, target: string): boolean {
  if ([...folded].length !== target.length) return false;
  let i = 0;
  for (const c of folded) {
    if (c !== target[i] && c.charCodeAt(0) < 0x80) return false;
    i++;
  }
  return true;
}

/** sha256 (hex) of the whole file, read through the held descriptor in 1 MiB positioned reads. */
async function hashFile(path: string, handle: FileHandle, size: number): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(Math.min(1024 * 1024, Math.max(size, 1)));
  let position = 0;
  while (position < size) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, size - position), position);
    if (bytesRead === 0) throw new PivotArchiveError(ErrorCode.ARCHIVE_UNREADABLE, `${path}: the file ended at byte ${position} of ${size} while it was hashed`);
    hash.update(buffer.subarray(0, bytesRead));
    position += bytesRead;
  }
  return hash.digest('hex');
}

/** Where each of `ids` first stands: an extra pass, made only when a valid join/leave's id hash repeats. */
async function firstPositions(path: string, files: ZipEntry[], blockCrcs: readonly Uint32Array[], maxEventBytes: number, ids: Set<string>): Promise<Map<string, EventPosition>> {
  const first = new Map<string, EventPosition>();
  for (const [index, entry] of files.entries()) {
    await scanEntry(path, entry, maxEventBytes, { expectBlocks: blockCrcs[index] }, (bytes, from, to, element) => {
      const raw = bytes && parsed(bytes, from, to);
      if (isObject(raw) && typeof raw.id === 'string' && ids.has(raw.id) && !first.has(raw.id)) first.set(raw.id, { file: index, index: element });
    });
  }
  return first;
}

/** A file whose array is broken fails the archive (ARCHIVE_CONTENT); any other error (the visitor's own) is as it was. */
function brokenArray(path: string, entry: ZipEntry, err: unknown): unknown {
  return err instanceof JsonArrayError ? new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${entry.name} is not a JSON array of events: ${errorMessage(err)}`, { cause: err }) : err;
}

/** Every element of one messages file's array, visited as it is read (see ElementVisitor: nothing held). */
async function scanEntry(path: string, entry: ZipEntry, maxEventBytes: number, reads: EntryReadOptions, visit: ElementVisitor): Promise<void> {
  for await (const _ of scannedChunks(path, entry, maxEventBytes, reads, visit));
}

/**
 * Reads one messages file, visiting the elements of each chunk read, and yields after each chunk
 * (the caller takes what its visitor gathered); a broken array fails as `brokenArray` says.
 */
async function* scannedChunks(path: string, entry: ZipEntry, maxEventBytes: number, reads: EntryReadOptions, visit: ElementVisitor): AsyncGenerator<void> {
  const scanner = new JsonArrayScanner(maxEventBytes);
  const stream = entry.open(reads);
  try {
    for await (const chunk of stream) {
      scanner.scan(chunk as Buffer, visit);
      yield;
    }
    scanner.end();
  } catch (err) {
    throw brokenArray(path, entry, err);
  } finally {
    stream.destroy();
  }
}

/**
 * Events parsed at a time: a chunk read holds hundreds, and parsed all at once they outlived
 * the (small, --optimize-for-size) young generation: the GC took a third of the source's time.
 */
const PARSED_BATCH = 64;

/** The events of one messages file, in batches: each element's exact bytes (a copy) and parsed value, or why not. */
async function* eventBatches(path: string, entry: ZipEntry, file: number, maxEventBytes: number, reads: EntryReadOptions): AsyncGenerator<SourceEvent[]> {
  // The events that end in the chunk read, not yet parsed.
  let read: SourceEvent[] = [];
  const take: ElementVisitor = (bytes, from, to, index, offset, length) => {
    if (!bytes) return void read.push({ position: { file, index }, tooLarge: { offset, length } });
    // A copy: a held event must not keep the (larger) chunk it came in alive; bytes that are all
    // their own memory (an event over several chunks, put together) are kept as they are.
    const own = from === 0 && to === bytes.length && bytes.byteOffset === 0 && bytes.buffer.byteLength === bytes.length;
    const copy = own ? bytes : Buffer.allocUnsafe(to - from);
    if (!own) bytes.copy(copy, 0, from, to);
    read.push({ position: { file, index }, bytes: copy });
  };
  for await (const _ of scannedChunks(path, entry, maxEventBytes, reads, take)) {
    const events = read;
    read = [];
    while (events.length > 0) {
      // Taken out as parsed: a chunk's parsed events held until its end outlived the young generation.
      const batch = events.splice(0, PARSED_BATCH);
      for (const event of batch) parse(event);
      yield batch;
    }
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const PLAIN_START = Buffer.from('{"id":"');
const JOIN = Buffer.from('"join"');
const LEAVE = Buffer.from('"leave"');
const ID_KEY = Buffer.from('"id"');

/** `pattern` stands in `bytes` at `at`, before `to`. */
function standsAt(bytes: Buffer, at: number, to: number, pattern: Buffer): boolean {
  if (at + pattern.length > to) return false;
  for (let k = 0; k < pattern.length; k++) if (bytes[at + k] !== pattern[k]) return false;
  return true;
}

/**
 * The checking pass's fast path: the id of an element (bytes `[from, to)`) whose bytes begin `{"id":"`, whose id is
 * ASCII, and that holds no backslash (no escape can hide a quote, a key or a value), no other
 * `"id"` (JSON.parse keeps the last of repeated keys) and no `"join"` or `"leave"` (so it
 * changes no membership). That is exactly the id JSON.parse would give, if the element parses
 * at all; undefined for every other element (the caller parses it). The hash of an element that
 * would not parse is harmless: at worst a candidate that `events()` checks exactly.
 */
export function plainId(bytes: Buffer, from = 0, to = bytes.length): string | undefined {
  if (!standsAt(bytes, from, to, PLAIN_START)) return undefined;
  let end = from + PLAIN_START.length;
  for (; end < to; end++) {
    const b = bytes[end]!;
    if (b === QUOTE) break;
    if (b === BACKSLASH || b >= 0x80) return undefined;
  }
  if (end >= to) return undefined;
  // One plain loop over the rest (a native indexOf per pattern cost more than the whole loop).
  for (let i = end + 1; i < to; i++) {
    const b = bytes[i]!;
    if (b === BACKSLASH) return undefined;
    if (b === QUOTE && (standsAt(bytes, i, to, ID_KEY) || standsAt(bytes, i, to, JOIN) || standsAt(bytes, i, to, LEAVE))) return undefined;
  }
  return bytes.toString('latin1', from + PLAIN_START.length, end);
}

/** The JSON value of bytes `[from, to)` (decoded as delivery decodes them), or undefined when they are not JSON. */
function parsed(bytes: Buffer, from: number, to: number): unknown {
  try {
    return JSON.parse(bytes.toString('utf8', from, to));
  } catch {
    return undefined;
  }
}

/** Reads the event's bytes, if it holds them (not too large): parsed, or why not. */
function parse(event: SourceEvent): void {
  const bytes = event.bytes;
  if (!bytes) return;
  // Decoded as usual (a bad sequence reads U+FFFD); where the first bad byte stands is said.
  if (!isUtf8(bytes)) event.invalidUtf8At = firstInvalidUtf8(bytes);
  try {
    event.raw = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    event.malformed = errorMessage(err);
  }
}

/** Offset of the first byte that does not belong to a valid UTF-8 sequence (only called on bytes that hold one). */
export function firstInvalidUtf8(bytes: Buffer): number {
  for (let i = 0; i < bytes.length; ) {
    const c = bytes[i]!;
    const n = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n === 0 || i + n > bytes.length || !isUtf8(bytes.subarray(i, i + n))) return i;
    i += n;
  }
  return bytes.length;
}

async function readJsonEntry(path: string, entries: ZipDirectory, name: string): Promise<unknown> {
  const entry = entries.get(name);
  if (!entry) throw new PivotArchiveError(ErrorCode.ARCHIVE_MISSING_ENTRY, `${path}: required entry ${name} is missing`);
  const bytes = await readEntryBuffer(entry, MAX_DIRECTORY_ENTRY_BYTES);
  // JSON is UTF-8 (RFC 8259). Read as U+FFFD, a Latin-1 `ü` in an email would make the address
  // invalid and its user receive nothing, unsaid: unlike an event, no item carries a note for it.
  if (!isUtf8(bytes)) {
    const at = firstInvalidUtf8(bytes);
    throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${name} is not UTF-8: byte ${at} (0x${bytes[at]!.toString(16).padStart(2, '0')}) starts no valid UTF-8 sequence (an exporter writing Latin-1?)`);
  }
  // A UTF-8 byte order mark is passed over, as in the messages files (RFC 8259 lets a reader ignore one).
  const bom = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  try {
    return JSON.parse(bytes.toString('utf8', bom));
  } catch (err) {
    throw new PivotArchiveError(ErrorCode.ARCHIVE_CONTENT, `${path}: ${name} is not valid JSON: ${errorMessage(err)}`);
  }
}

/** Any ISO 8601 form with a zone; and, as before, whatever Date.parse reads that ends in a zone (the manifest's times decide nothing: an archive is not refused over their form). */
function isTimestamp(value: unknown): boolean {
  return typeof value === 'string' && (readZonedTime(value) !== undefined || (/(Z|[+-]\d\d:?\d\d)$/.test(value) && !Number.isNaN(Date.parse(value))));
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

/**
 * conversations.json's members of a conversation, for the membership timeline, made out here: a
 * closure made inside `read` would keep that function's whole scope alive with the timeline, and
 * with it the first pass's list of join/leave events (O(events): about 3 MB at a million events).
 */
function listedMembers(conversations: ReadonlyMap<string, Conversation>): (conversationId: string) => readonly string[] {
  return (id) => conversations.get(id)?.members ?? [];
}

/** Freezes a parsed JSON value and every object in it; a loop, not recursion: the nesting may be deep. */
function freezeAll(value: unknown): void {
  const pending = [value];
  while (pending.length > 0) {
    const next = pending.pop();
    if (next === null || typeof next !== 'object' || Object.isFrozen(next)) continue;
    Object.freeze(next);
    for (const inner of Object.values(next)) pending.push(inner);
  }
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
