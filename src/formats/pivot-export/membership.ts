import type { EventPosition } from '../../model.js';

/** The order events happen in: time, then where they stand in the archive. */
export interface EventKey extends EventPosition {
  time: number;
}

export function compareKeys(a: EventKey, b: EventKey): number {
  return a.time - b.time || a.file - b.file || a.index - b.index;
}

interface MembershipChange {
  key: EventKey;
  memberId: string;
  joined: boolean;
}

interface Cursor {
  applied: number;
  members: Set<string>;
}

/**
 * Members of each conversation over time: the members at `windowStart` with the join/leave
 * events before a given event applied. The join/leave events are collected in a first pass
 * over the archive, so the answer is right whatever order the messages files interleave
 * conversations in. Memory holds only join/leave events, not messages.
 */
export class MembershipTimeline {
  private readonly changes = new Map<string, MembershipChange[]>();
  private readonly cursors = new Map<string, Cursor>();
  private sorted = true;

  constructor(private readonly initialMembers: (conversationId: string) => readonly string[]) {}

  record(conversationId: string, key: EventKey, memberId: string, joined: boolean): void {
    let list = this.changes.get(conversationId);
    if (!list) this.changes.set(conversationId, (list = []));
    list.push({ key, memberId, joined });
    this.sorted = false;
  }

  /** Member ids of the conversation just before the event at `key` (a live view: read it at once). */
  membersAt(conversationId: string, key: EventKey): ReadonlySet<string> {
    if (!this.sorted) {
      for (const list of this.changes.values()) list.sort((a, b) => compareKeys(a.key, b.key));
      this.sorted = true;
      this.cursors.clear();
    }
    const list = this.changes.get(conversationId) ?? [];
    let cursor = this.cursors.get(conversationId);
    // Events mostly arrive in time order: move forward from the last answer, and start
    // over only when an event is earlier than changes already applied.
    if (!cursor || (cursor.applied > 0 && compareKeys(list[cursor.applied - 1]!.key, key) >= 0)) {
      cursor = { applied: 0, members: new Set(this.initialMembers(conversationId)) };
      this.cursors.set(conversationId, cursor);
    }
    while (cursor.applied < list.length && compareKeys(list[cursor.applied]!.key, key) < 0) {
      const change = list[cursor.applied++]!;
      if (change.joined) cursor.members.add(change.memberId);
      else cursor.members.delete(change.memberId);
    }
    return cursor.members;
  }
}
