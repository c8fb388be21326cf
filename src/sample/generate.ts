import { createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { basename, dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import archiver from 'archiver';
import type { Conversation, Manifest, User } from '../model.js';

export interface SampleOptions {
  events: number;
  seed?: number;
  /** Number of messages/*.json files the events are spread over (time slices of the day). */
  messageFiles?: number;
  /** Add the awkward cases (bad items, missing and oversize attachments, hostile names). */
  edgeCases?: boolean;
  /** Write ZIP64 records even for a small archive. */
  forceZip64?: boolean;
  /** Deflate level (1 fast .. 9 small). */
  level?: number;
  tenant?: string;
  day?: string;
  /**
   * How many users (mailboxes) the export has. Default: one per 500 events, 6 to 2,000. A bank's
   * day has 2,000+ mailboxes whatever its size: `users: 2000` gives that shape to a small archive
   * (1.5 conversations per user, so few events per conversation and mailbox).
   */
  users?: number;
  /** How many conversations. Default: 1.5 per user. */
  conversations?: number;
}

export interface SampleInfo {
  path: string;
  exportId: string;
  events: number;
}

/** Small, seeded PRNG: the same options always make the same archive. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pseudoRandomBytes(size: number, seed: number): Buffer {
  const random = prng(seed);
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) bytes.writeUInt32LE((random() * 2 ** 32) >>> 0, Math.min(i, size - 4));
  return bytes;
}

const FIRST = ['Jane', 'Omar', 'Li', 'Priya', 'Lukas', 'Sofia', 'Kenji', 'Amara', 'Mateo', 'Ines', 'Noah', 'Chloé', 'Björn', 'Aiko'];
const LAST = ['Doe', 'Haddad', 'Wei', 'Sharma', 'Becker', 'Rossi', 'Tanaka', 'Okafor', 'García', 'Silva', 'Smith', 'Dubois'];
const WORDS = 'bid offer 5y 10y swap spread bps at can you show me fill done tight wide rates EUR USD GBP curve steepener flattener payer receiver size 50m 100m mid level ok thanks'.split(' ');

export const EDGE_CASE_USERS: User[] = [
  { id: 'u_hostile', displayName: 'Eve\r\nBcc: victim@evil.example\r\n\r\n<script>', email: 'eve@acme.example', company: 'Acme' },
  { id: 'u_unicode', displayName: 'Zoë Ødegård 😀 مرحبا', email: 'zoe@acme.example', company: 'Acme' },
  { id: 'u_noemail', displayName: 'No Email, "Quoted"', email: null },
  { id: 'u_bademail', displayName: 'Bad Email', email: 'not an address' },
];

/**
 * Writes a synthetic Pivot export (format version 1) with archiver, streaming every
 * messages file, so archives of millions of events are made in bounded memory. Written beside
 * `path` under a temporary name and renamed to it once whole: a failure (or a stop) never leaves
 * a truncated archive at `path`, and a failure removes what it wrote.
 */
export async function generateSample(path: string, options: SampleOptions): Promise<SampleInfo> {
  // A folder given as the path would be found only at the rename, after the whole archive was made.
  if (await stat(path).then((s) => s.isDirectory(), () => false)) throw Object.assign(new Error(`EISDIR: ${path} is a directory`), { code: 'EISDIR' });
  const partial = join(dirname(path), `.${basename(path)}.${process.pid}.partial`);
  try {
    const info = await writeSample(partial, options);
    await rename(partial, path);
    return { ...info, path };
  } catch (err) {
    await rm(partial, { force: true }).catch(() => undefined);
    throw err;
  }
}

async function writeSample(path: string, options: SampleOptions): Promise<SampleInfo> {
  const seed = options.seed ?? 1;
  const random = prng(seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
  const tenant = options.tenant ?? 'acme';
  const day = options.day ?? '2026-11-23';
  const windowStart = Date.parse(`${day}T00:00:00Z`);
  const exportId = `${tenant}-${day}`;
  const fileCount = Math.max(1, options.messageFiles ?? Math.min(8, Math.ceil(options.events / 50_000)));
  const edgeCases = options.edgeCases ?? true;

  const userCount = options.users !== undefined ? Math.max(2, options.users) : Math.max(6, Math.min(2000, Math.ceil(options.events / 500)));
  const users: User[] = [];
  for (let i = 0; i < userCount; i++) {
    const external = i % 7 === 6;
    const name = `${pick(FIRST)} ${pick(LAST)}`;
    users.push({
      id: `u_${i}`,
      displayName: name,
      email: `user${i}@${external ? 'broker.example' : 'acme.example'}`,
      company: external ? 'Broker Ltd' : 'Acme Capital',
    });
  }
  if (edgeCases) users.push(...EDGE_CASE_USERS);

  const conversations: Conversation[] = [];
  const conversationCount = Math.max(3, options.conversations ?? Math.ceil(userCount * 1.5));
  for (let i = 0; i < conversationCount; i++) {
    const type = i % 10 < 6 ? 'direct' : i % 10 < 9 ? 'group' : 'room';
    const size = type === 'direct' ? 2 : type === 'group' ? 3 + Math.floor(random() * 4) : 5 + Math.floor(random() * 12);
    const members = new Set<string>();
    while (members.size < Math.min(size, users.length)) members.add(pick(users).id);
    conversations.push({
      id: `c_${i}`,
      type,
      name: type === 'direct' ? null : `${pick(['Rates', 'FX', 'Credit', 'Repo'])} desk ${i}`,
      createdAt: '2026-01-10T08:00:00Z',
      members: [...members],
    });
  }

  const chats = conversations.slice();
  // A chat between users with no usable email: its items have no mailbox target.
  if (edgeCases) conversations.push({ id: 'c_edge_unmapped', type: 'direct', name: null, members: ['u_noemail', 'u_bademail'] });

  const manifest: Manifest = {
    format: 'pivot-export',
    version: 1,
    exportId,
    tenant,
    windowStart: new Date(windowStart).toISOString(),
    windowEnd: new Date(windowStart + 86_400_000).toISOString(),
    createdAt: new Date(windowStart + 86_400_000 + 312_000).toISOString(),
  };

  const members = new Map(conversations.map((c) => [c.id, [...c.members]]));
  const lastMessage = new Map<string, string>();
  const attachments: { id: string; size: number }[] = [];
  let eventNumber = 0;

  function* fileEvents(file: number, count: number): Generator<Record<string, unknown>> {
    if (edgeCases && file === 0) yield* edgeCaseEvents(windowStart, conversations[0]!, attachments);
    for (let i = 0; i < count; i++) {
      const time = windowStart + Math.floor(((file + (i + 0.5) / count) / fileCount) * 86_000_000);
      const conversation = pick(chats);
      const current = members.get(conversation.id)!;
      const id = `m_${++eventNumber}`;
      const base = { id, conversationId: conversation.id, sentAt: new Date(time).toISOString() };
      const roll = random();
      if (conversation.type !== 'direct' && roll < 0.02) {
        const outsider = users.find((u) => !current.includes(u.id) && random() < 0.3) ?? pick(users);
        if (!current.includes(outsider.id)) {
          current.push(outsider.id);
          yield { ...base, type: 'join', senderId: outsider.id };
          continue;
        }
      }
      if (conversation.type !== 'direct' && roll < 0.04 && current.length > 2) {
        const leaver = current.splice(Math.floor(random() * current.length), 1)[0]!;
        yield { ...base, type: 'leave', senderId: leaver };
        continue;
      }
      const senderId = pick(current);
      const text = Array.from({ length: 3 + Math.floor(random() * 12) }, () => pick(WORDS)).join(' ');
      const previous = lastMessage.get(conversation.id);
      if (previous && roll < 0.07) {
        yield { ...base, type: 'edit', senderId, targetId: previous, text: `${text} (corrected)` };
        continue;
      }
      if (previous && roll < 0.08) {
        yield { ...base, type: 'delete', senderId, targetId: previous };
        continue;
      }
      const event: Record<string, unknown> = { ...base, type: 'message', senderId, text };
      if (roll > 0.7) event.html = `<p>${text.replace(/(\d+[ym])/g, '<b>$1</b>')}</p>`;
      if (previous && roll > 0.85) event.replyToId = previous;
      if (roll > 0.98) {
        const attachment = { id: `a_${eventNumber}`, fileName: `term sheet ${eventNumber}.pdf`, contentType: 'application/pdf', size: 1000 + Math.floor(random() * 20_000) };
        attachments.push(attachment);
        event.attachments = [attachment];
      }
      lastMessage.set(conversation.id, id);
      yield event;
    }
  }

  function jsonArray(events: Iterable<Record<string, unknown>>): Readable {
    return Readable.from(
      (function* () {
        let first = true;
        let batch = '[';
        for (const event of events) {
          batch += (first ? '\n' : ',\n') + JSON.stringify(event);
          first = false;
          if (batch.length > 64 * 1024) {
            yield batch;
            batch = '';
          }
        }
        yield batch + '\n]\n';
      })(),
      { objectMode: false },
    );
  }

  const output = createWriteStream(path);
  const zip = archiver('zip', { zlib: { level: options.level ?? 6 }, forceZip64: options.forceZip64 ?? false });
  const failed = new Promise<never>((_, reject) => {
    zip.on('error', reject);
    output.on('error', reject);
  });
  // What failed stops the rest: the file is closed before it is removed.
  failed.catch(() => {
    zip.abort();
    output.destroy();
  });
  zip.pipe(output);
  const date = new Date(windowStart + 86_400_000);
  zip.append(JSON.stringify(manifest, null, 2), { name: 'manifest.json', date });
  zip.append(JSON.stringify(users), { name: 'users.json', date });
  zip.append(JSON.stringify(conversations), { name: 'conversations.json', date });
  for (let file = 0; file < fileCount; file++) {
    const count = Math.floor(options.events / fileCount) + (file < options.events % fileCount ? 1 : 0);
    zip.append(jsonArray(fileEvents(file, count)), { name: `messages/${String(file).padStart(4, '0')}.json`, date });
  }
  // Attachment entries are queued only once the messages files have been read, which is when
  // the list is complete: archiver consumes its queue in order.
  const attachmentsQueued = new Promise<void>((resolve) => {
    zip.on('entry', (entry) => {
      if (entry.name === `messages/${String(fileCount - 1).padStart(4, '0')}.json`) {
        attachments.forEach((a, i) => zip.append(pseudoRandomBytes(a.size, seed * 1_000_003 + i), { name: `attachments/${a.id}`, date }));
        resolve();
      }
    });
  });
  await Promise.race([attachmentsQueued, failed]);
  await Promise.race([zip.finalize(), failed]);
  if (!output.closed) await Promise.race([once(output, 'close'), failed]);
  return { path, exportId, events: options.events + (edgeCases ? EDGE_CASE_EVENT_COUNT : 0) };
}

const EDGE_CASE_EVENT_COUNT = 7;

/** Awkward but legal-or-recorded cases, at the start of the first file. */
function* edgeCaseEvents(windowStart: number, conversation: Conversation, attachments: { id: string; size: number }[]): Generator<Record<string, unknown>> {
  const at = (s: number) => new Date(windowStart + s * 1000).toISOString();
  const room = { conversationId: conversation.id };
  yield { id: 'edge_hostile', ...room, type: 'message', sentAt: at(1), senderId: 'u_hostile', text: 'line one\r\nBcc: injected@evil.example\r\n\r\nNUL:\u0000 RTL:\u202Eevil' };
  yield { id: 'edge_unicode', ...room, type: 'message', sentAt: at(2), senderId: 'u_unicode', text: 'Grüße 😀 '.repeat(20_000), html: '<p>Grüße 😀</p>' };
  yield { id: 'edge_missing_attachment', ...room, type: 'message', sentAt: at(3), senderId: conversation.members[0], text: 'see attached', attachments: [{ id: 'a_missing', fileName: 'gone.pdf', contentType: 'application/pdf', size: 10 }] };
  attachments.push({ id: 'a_oversize', size: 10.5 * 1024 * 1024 });
  yield { id: 'edge_oversize', ...room, type: 'message', sentAt: at(4), senderId: conversation.members[0], text: 'big file', attachments: [{ id: 'a_oversize', fileName: 'big.bin', contentType: 'application/octet-stream', size: 10.5 * 1024 * 1024 }] };
  yield { id: 'edge_unknown_conversation', conversationId: 'c_nowhere', type: 'message', sentAt: at(5), senderId: conversation.members[0], text: 'lost?' };
  yield { id: 'edge_no_time', ...room, type: 'message', senderId: conversation.members[0], text: 'when?' };
  yield { id: 'edge_unmapped', conversationId: 'c_edge_unmapped', type: 'message', sentAt: at(6), senderId: 'u_noemail', text: 'nobody maps' };
}
