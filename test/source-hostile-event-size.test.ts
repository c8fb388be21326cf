// Hostile event sizes: a valid event longer than V8's longest string cannot be JSON.parse'd, so
// whatever --max-event-size says, it is too large (never held, its bytes kept exactly), not malformed.
import test from 'ava';
import archiver from 'archiver';
import { constants } from 'node:buffer';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import type { SourceEvent } from '../src/model.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { MANIFEST } from './helpers/archive.js';
import { tempDir } from './helpers/tmp.js';

const users = [{ id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' }];
const conversations = [{ id: 'c_1', type: 'direct', name: null, members: ['u_1'] }];
const head = Buffer.from('[{"id":"huge","conversationId":"c_1","type":"message","sentAt":"2026-11-23T08:00:00Z","senderId":"u_1","text":"');
const tail = Buffer.from('"}]');

/** The messages file: `[`, one valid event whose text makes it `eventBytes` long, `]`; in pieces (never whole in memory). */
function* messagesFile(eventBytes: number): Generator<Buffer> {
  yield head;
  const piece = Buffer.alloc(1024 * 1024, 'x');
  for (let left = eventBytes - (head.length - 1) - (tail.length - 1); left > 0; left -= piece.length) yield piece.subarray(0, Math.min(left, piece.length));
  yield tail;
}

test('an event longer than V8\'s longest string, under --max-event-size, is too large (its bytes kept exactly), not malformed', async (t) => {
  const eventBytes = constants.MAX_STRING_LENGTH + 1;
  const path = join(await tempDir(t), 'huge.zip');
  const zip = archiver('zip');
  const out = createWriteStream(path);
  zip.pipe(out);
  zip.append(JSON.stringify(MANIFEST), { name: 'manifest.json' });
  zip.append(JSON.stringify(users), { name: 'users.json' });
  zip.append(JSON.stringify(conversations), { name: 'conversations.json' });
  zip.append(Readable.from(messagesFile(eventBytes), { objectMode: false }), { name: 'messages/a.json' });
  await zip.finalize();
  if (!out.closed) await once(out, 'close');

  // All 'x': far over the zip bomb ratio, so that guard is off.
  const archive = await PivotExportArchive.open({ path, maxEventBytes: 1024 * 1024 * 1024, maxZipRatio: 0 });
  t.teardown(() => archive.close());
  const events: SourceEvent[] = [];
  for await (const e of archive.events()) events.push(e as SourceEvent);
  t.is(events.length, 1);
  const [event] = events;
  t.is(event!.malformed, undefined, 'a valid event is not malformed');
  t.deepEqual(event!.tooLarge, { offset: 1, length: eventBytes });
  t.is(event!.bytes, undefined, 'never held');

  const copied = createHash('sha256');
  await archive.copyEventBytes(event!.position, event!.tooLarge!, new Writable({ write: (chunk: Buffer, _encoding, done) => (copied.update(chunk), done()) }));
  t.is(copied.digest('hex'), eventHash(eventBytes));
});

/** sha256 of the event's bytes: the messages file without its `[` and `]`. */
function eventHash(eventBytes: number): string {
  const hash = createHash('sha256');
  for (const piece of messagesFile(eventBytes)) {
    const from = piece === head ? 1 : 0;
    const to = piece === tail ? piece.length - 1 : piece.length;
    hash.update(piece.subarray(from, to));
  }
  return hash.digest('hex');
}
