import { Transform, type Readable } from 'node:stream';
import { ErrorCode, NoteReason, PivotArchiveError } from '../../errors.js';
import type { EventPosition, ExportContext, SourceEvent } from '../../model.js';
import type { Unit } from '../../pipeline/unit.js';
import type { Source, SourceSummary } from '../source.js';
import { mayHoldEvents, type MemberNote, type PivotExportArchive } from './index.js';

/** Where an earlier run of the same archive got to (the state dir's checkpoint). */
export interface ResumePoint {
  done(position: EventPosition): boolean;
  settled(position: EventPosition, ok: boolean, storageFault?: boolean): void;
  storageLost(): void;
}

/**
 * A Pivot export archive as the chain's source: one `event` unit per array element of its
 * messages files, in file and array order; events an earlier run settled are skipped and counted.
 */
export class PivotZipSource implements Source {
  readonly kind = 'pivot-zip';
  readonly export: ExportContext;
  readonly notes: Source['notes'];
  private eventsRead = 0;
  private doneEarlier = 0;
  exhausted = false;

  constructor(
    private readonly archive: PivotExportArchive,
    /** How the summary names the archive (a path, `-` for stdin, the built-in sample). */
    private readonly name: string,
    private readonly resume?: ResumePoint,
  ) {
    this.export = archive;
    this.notes = [
      ...archive.hostileEntryNames.map((name) => ({
        reason: NoteReason.HOSTILE_ENTRY_NAME,
        detail: `archive entry ${JSON.stringify(name)} is absolute, has "..", a backslash or a control character; it was not read`,
      })),
      ...archive.ignoredEntries.map(({ name, why }) => ({ reason: NoteReason.IGNORED_ENTRY, detail: `archive entry ${JSON.stringify(name)}: ${why}` })),
      ...archive.unnamedAttachments.map((name) => ({
        reason: NoteReason.UNNAMED_ATTACHMENT,
        detail: `archive entry ${JSON.stringify(name)} is an attachment no event names (or only an event too large or malformed to read): its bytes stay in the archive, in no message`,
      })),
      ...archive.memberNotes.map((n) => ({ reason: NoteReason.UNKNOWN_MEMBER, detail: memberNoteDetail(n), conversationId: n.conversationId })),
    ];
  }

  read(stop?: AbortSignal): Readable {
    const source = this;
    const total = this.archive.eventCount;
    const toUnits = new Transform({
      objectMode: true,
      transform(event: SourceEvent, _encoding, done) {
        source.eventsRead++;
        if (source.resume?.done(event.position)) {
          source.doneEarlier++;
          done();
          return;
        }
        done(null, { kind: 'event', position: event.position, event } satisfies Unit);
      },
      flush(done) {
        if (stop?.aborted && source.eventsRead < total) return done();
        source.exhausted = true;
        // The archive is read twice (checked, then delivered): both reads must agree.
        if (source.eventsRead !== total) return done(new PivotArchiveError(ErrorCode.ARCHIVE_CORRUPT, `the archive yielded ${source.eventsRead} events on the second read, ${total} on the first`));
        done();
      },
    });
    const events = this.archive.events(stop);
    events.on('error', (err) => toUnits.destroy(err));
    return events.pipe(toUnits);
  }

  settled(position: EventPosition, ok: boolean, storageFault?: boolean): void {
    this.resume?.settled(position, ok, storageFault);
  }

  storageLost(): void {
    this.resume?.storageLost();
  }

  progress() {
    return { read: this.eventsRead, total: this.archive.eventCount, bytesRead: this.archive.messageBytesRead, bytesTotal: this.archive.messageBytesTotal };
  }

  summaryFields(): SourceSummary {
    const { archive } = this;
    return {
      identity: { archive: this.name, sha256: archive.sha256, exportId: archive.manifest.exportId, tenant: archive.manifest.tenant },
      counters: { eventsInArchive: archive.eventCount, entriesNotRead: [...archive.hostileEntryNames, ...archive.ignoredEntries.map((e) => e.name)].filter(mayHoldEvents).length },
      itemsDoneEarlier: this.doneEarlier,
      balanced: true,
    };
  }
}

/** Ids a member note names; the conversation in conversations.json has them all. */
const MEMBERS_NAMED = 10;

function memberNoteDetail(n: MemberNote): string {
  const parts: string[] = [];
  if (n.notAList) parts.push('has no list of members: its events go only to their senders and the members they add');
  if (n.notIds > 0) parts.push(`lists ${n.notIds} ${n.notIds === 1 ? 'member that is' : 'members that are'} not a user id (passed over)`);
  if (n.unknown.length > 0) {
    const named = n.unknown.slice(0, MEMBERS_NAMED).map((id) => JSON.stringify(id)).join(', ');
    parts.push(`lists ${n.unknown.length} ${n.unknown.length === 1 ? 'member' : 'members'} not in users.json (${named}${n.unknown.length > MEMBERS_NAMED ? ', ...' : ''}): no mailbox of theirs can be found`);
  }
  return `conversation ${JSON.stringify(n.conversationId)} ${parts.join('; ')}; its events are delivered to the participants that can be addressed`;
}
