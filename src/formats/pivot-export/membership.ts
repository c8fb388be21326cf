import type { EventPosition } from '../../model.js';

/** When an event happened (milliseconds, and the fraction of one its sentAt gives), and where it stands in the archive. */
export interface EventKey extends EventPosition {
  time: number;
  subMs: number;
}

interface Cursor {
  /** Changes applied so far: the conversation's changes up to this row. */
  applied: number;
  members: Set<string>;
}

/** `column`, or a copy twice as long when `length` rows do not leave room for one more. */
function grown<T extends Int32Array | Float64Array | Uint8Array>(column: T, length: number): T {
  if (length < column.length) return column;
  const bigger = new (column.constructor as new (n: number) => T)(Math.max(64, column.length * 2));
  bigger.set(column);
  return bigger;
}

/**
 * Members of each conversation over time: the members at `windowStart` with the join/leave
 * events before a given event applied. The join/leave events are collected in a first pass
 * over the archive, so the answer is right whatever order the messages files interleave
 * conversations in. "Before" is by time, to the last digit sentAt gives; at the very same time,
 * only a change that stands earlier in the event's own file (a file is in sentAt order) is
 * before it: across files the order of equal times is not known, and file names must not decide
 * who receives a message. Memory holds only join/leave events, in typed columns (33 bytes a
 * change; two objects a change cost about 125 bytes, 2 MB at a million events).
 */
export class MembershipTimeline {
  private count = 0;
  private conversation: Int32Array = new Int32Array(0);
  private time: Float64Array = new Float64Array(0);
  private subMs: Float64Array = new Float64Array(0);
  private file: Int32Array = new Int32Array(0);
  private index: Int32Array = new Int32Array(0);
  private member: Int32Array = new Int32Array(0);
  private joined: Uint8Array = new Uint8Array(0);
  /** Conversation and member ids, each stored once; the columns hold their numbers. */
  private readonly conversationNumbers = new Map<string, number>();
  private readonly memberNumbers = new Map<string, number>();
  private readonly memberIds: string[] = [];
  /** Once sorted: where each conversation's rows start (its number's), and end (the next one's start). */
  private starts: Int32Array | undefined;
  private readonly cursors = new Map<string, Cursor>();

  constructor(private readonly initialMembers: (conversationId: string) => readonly string[]) {}

  record(conversationId: string, key: EventKey, memberId: string, joined: boolean): void {
    let conversation = this.conversationNumbers.get(conversationId);
    if (conversation === undefined) this.conversationNumbers.set(conversationId, (conversation = this.conversationNumbers.size));
    let member = this.memberNumbers.get(memberId);
    if (member === undefined) {
      this.memberNumbers.set(memberId, (member = this.memberIds.length));
      this.memberIds.push(memberId);
    }
    const row = this.count++;
    this.conversation = grown(this.conversation, row);
    this.time = grown(this.time, row);
    this.subMs = grown(this.subMs, row);
    this.file = grown(this.file, row);
    this.index = grown(this.index, row);
    this.member = grown(this.member, row);
    this.joined = grown(this.joined, row);
    this.conversation[row] = conversation;
    this.time[row] = key.time;
    this.subMs[row] = key.subMs;
    this.file[row] = key.file;
    this.index[row] = key.index;
    this.member[row] = member;
    this.joined[row] = joined ? 1 : 0;
    this.starts = undefined;
  }

  /**
   * Member ids of the conversation just before the event at `key` (a live view: read it at once;
   * an id conversations.json lists twice may come twice). A conversation no join or leave changes
   * answers its listed members as they are, with no cursor: a cursor is a Set a conversation,
   * kept for the run (3.7 MB for 15,000 conversations, most of which never change).
   */
  membersAt(conversationId: string, key: EventKey): Iterable<string> {
    const starts = this.starts ?? this.sort();
    const conversation = this.conversationNumbers.get(conversationId);
    if (conversation === undefined) return this.initialMembers(conversationId);
    const first = starts[conversation]!;
    const end = starts[conversation + 1]!;
    let cursor = this.cursors.get(conversationId);
    // Events mostly arrive in time order: move forward from the last answer, and start
    // over only when an event is earlier than changes already applied. The cursor applies
    // what is earlier in time; changes at the event's very time are looked at below.
    if (!cursor || (cursor.applied > first && this.compareTime(cursor.applied - 1, key) >= 0)) {
      cursor = { applied: first, members: new Set(this.initialMembers(conversationId)) };
      this.cursors.set(conversationId, cursor);
    }
    while (cursor.applied < end && this.compareTime(cursor.applied, key) < 0) this.apply(cursor.applied++, cursor.members);
    let members = cursor.members;
    for (let row = cursor.applied; row < end && this.compareTime(row, key) === 0; row++) {
      if (this.file[row] !== key.file || this.index[row]! >= key.index) continue;
      if (members === cursor.members) members = new Set(members);
      this.apply(row, members);
    }
    return members;
  }

  private apply(row: number, members: Set<string>): void {
    const memberId = this.memberIds[this.member[row]!]!;
    if (this.joined[row]) members.add(memberId);
    else members.delete(memberId);
  }

  private compareTime(row: number, key: EventKey): number {
    return this.time[row]! - key.time || this.subMs[row]! - key.subMs;
  }

  /** Orders the rows by conversation, then event order; the cursors start over. */
  private sort(): Int32Array {
    const n = this.count;
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    const { conversation, time, subMs, file, index } = this;
    order.sort((a, b) => conversation[a]! - conversation[b]! || time[a]! - time[b]! || subMs[a]! - subMs[b]! || file[a]! - file[b]! || index[a]! - index[b]!);
    const permuted = <T extends Int32Array | Float64Array | Uint8Array>(column: T): T => {
      const out = new (column.constructor as new (n: number) => T)(n);
      for (let i = 0; i < n; i++) out[i] = column[order[i]!]!;
      return out;
    };
    this.conversation = permuted(conversation);
    this.time = permuted(time);
    this.subMs = permuted(subMs);
    this.file = permuted(file);
    this.index = permuted(index);
    this.member = permuted(this.member);
    this.joined = permuted(this.joined);
    const starts = new Int32Array(this.conversationNumbers.size + 1);
    for (let row = 0, c = 0; c <= this.conversationNumbers.size; c++) {
      while (row < n && this.conversation[row]! < c) row++;
      starts[c] = row;
    }
    this.cursors.clear();
    this.starts = starts;
    return starts;
  }
}
