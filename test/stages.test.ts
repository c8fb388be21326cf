// Each stage of the chain alone, against a small export held in memory (no zip, no sink).
import test from 'ava';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { simpleParser } from 'mailparser';
import type { ZipEntry } from '../src/formats/zip/index.js';
import { createLogger } from '../src/logger.js';
import type { Conversation, ExportContext, Item, SourceEvent, User } from '../src/model.js';
import { Recorder } from '../src/pipeline/recorder.js';
import type { Unit, UnitOf } from '../src/pipeline/unit.js';
import { StatusLog } from '../src/status-log.js';
import { fanOutStage } from '../src/transforms/fan-out/stage.js';
import { buildStage } from '../src/transforms/mime/stage.js';
import { PluginRegistry, definePlugin, drop } from '../src/transforms/plugins/index.js';
import { pluginStage } from '../src/transforms/plugins/stage.js';
import { sizeBoundStage, sizeLimitStage } from '../src/transforms/size-filter/index.js';
import { validateStage } from '../src/transforms/validate/index.js';
import { tempDir } from './helpers/tmp.js';

const ann: User = { id: 'u_ann', displayName: 'Ann', email: 'ann@acme.example' };
const bob: User = { id: 'u_bob', displayName: 'Bob', email: 'bob@other.example' };
const room: Conversation = { id: 'c_1', type: 'room', name: 'Rates', members: ['u_ann', 'u_bob'] };

function entry(bytes: Buffer): ZipEntry {
  return { name: 'x', compressedSize: bytes.length, uncompressedSize: bytes.length, crc32: 0, offset: 0, method: 0, open: () => Readable.from([bytes]) };
}

function exportOf(attachments: Record<string, Buffer> = {}): ExportContext {
  return {
    exportId: 'acme-2026-11-23',
    tenant: 'acme',
    users: new Map([ann, bob].map((u) => [u.id, u])),
    conversations: new Map([[room.id, room]]),
    membersAt: () => room.members,
    attachment: (id) => (attachments[id] ? entry(attachments[id]!) : undefined),
    messageFileName: (i) => `messages/${i}.json`,
    copyEventBytes: async () => undefined,
  };
}

async function recorder(t: import('ava').ExecutionContext): Promise<{ recorder: Recorder; lines: () => Promise<Record<string, unknown>[]> }> {
  const path = join(await tempDir(t), 'status.jsonl');
  const log = await StatusLog.open([path], 'test-run');
  return {
    recorder: new Recorder(log, createLogger({ level: 'error', json: false }), 'test', 'acme-1'),
    lines: async () => {
      await log.flush();
      return (await readFile(path, 'utf8')).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
}

const position = { file: 0, index: 7 };
const eventUnit = (raw: Record<string, unknown>, extra: Partial<SourceEvent> = {}): UnitOf<'event'> => ({
  kind: 'event',
  position,
  event: { position, raw, bytes: Buffer.from(JSON.stringify(raw)), ...extra },
});
const message = (over: Record<string, unknown> = {}) => ({ id: 'm_1', type: 'message', sentAt: '2026-11-23T10:00:00Z', conversationId: 'c_1', senderId: 'u_ann', text: 'hello', ...over });

async function itemOf(t: import('ava').ExecutionContext, raw: Record<string, unknown>): Promise<Item> {
  const { recorder: r } = await recorder(t);
  const out = (await validateStage(exportOf(), r)(eventUnit(raw))) as Unit;
  if (out.kind !== 'item') throw new Error(`not an item: ${out.kind}`);
  return out.item;
}

test('validate stage: a valid event becomes an item with its participants; a bad one a rejection with its exact bytes', async (t) => {
  const { recorder: r } = await recorder(t);
  const stage = validateStage(exportOf(), r);
  const ok = (await stage(eventUnit(message()))) as Unit;
  t.is(ok.kind, 'item');
  t.deepEqual(ok.kind === 'item' && ok.item.participants.map((u) => u.id).sort(), ['u_ann', 'u_bob']);
  const bad = eventUnit(message({ sentAt: '2026-02-31T10:00:00Z' }));
  const out = (await stage(bad)) as Unit;
  t.is(out.kind, 'rejected');
  t.is(out.kind === 'rejected' && out.rejection.reason, 'invalid-field:sentAt');
  t.deepEqual(out.kind === 'rejected' && out.rejection.bytes, bad.event.bytes);
});

test('validate stage: bytes that were not UTF-8 are noted with the event, its file and the offset; the item goes on', async (t) => {
  const { recorder: r, lines } = await recorder(t);
  const out = (await validateStage(exportOf(), r)(eventUnit(message(), { invalidUtf8At: 42 }))) as Unit;
  t.is(out.kind, 'item');
  const [note] = await lines();
  t.like(note, { record: 'note', reason: 'invalid-utf8', itemId: 'm_1' });
  t.regex(String(note!.detail), /messages\/0\.json, event 7\).*byte 42/);
});

test('validate stage: a lone surrogate in text or html (written as U+FFFD) is noted; well-formed pairs are not', async (t) => {
  const { recorder: r, lines } = await recorder(t);
  const lone = (await validateStage(exportOf(), r)(eventUnit(message({ text: 'a\ud800b', html: '<p>\udc00</p>' })))) as Unit;
  t.is(lone.kind, 'item');
  const paired = (await validateStage(exportOf(), r)(eventUnit(message({ id: 'm_2', text: 'chart \ud83d\udcc8' })))) as Unit;
  t.is(paired.kind, 'item');
  const notes = await lines();
  t.is(notes.length, 1);
  t.like(notes[0], { record: 'note', reason: 'unpaired-surrogate', itemId: 'm_1' });
  t.regex(String(notes[0]!.detail), /messages\/0\.json, event 7\).*text and html.*U\+FFFD/);
});

test('plugins stage: a split yields one item unit per item and is counted; a drop is a rejection', async (t) => {
  const item = await itemOf(t, message());
  const plugins = new PluginRegistry();
  plugins.register(definePlugin({ name: 'split', hostApi: '^1.0.0', transform: (x) => [x, { ...x, id: `${x.id}-b` }] }));
  const { recorder: r } = await recorder(t);
  const out = (await pluginStage(plugins, exportOf(), r, createLogger({ level: 'error', json: false }))({ kind: 'item', position, item })) as Unit[];
  t.deepEqual(out.map((u) => u.kind === 'item' && u.item.id), ['m_1', 'm_1-b']);
  const dropping = new PluginRegistry();
  dropping.register(definePlugin({ name: 'nope', hostApi: '^1.0.0', transform: () => drop('not wanted') }));
  const dropped = (await pluginStage(dropping, exportOf(), r, createLogger({ level: 'error', json: false }))({ kind: 'item', position, item })) as Unit;
  t.is(dropped.kind === 'rejected' && dropped.rejection.reason, 'dropped:nope');
});

test('size bound stage: attachments that alone pass the limit reject the item before any byte is read', async (t) => {
  const item = await itemOf(t, message({ attachments: [{ id: 'a_big' }] }));
  let opened = false;
  const archive = exportOf();
  archive.attachment = () => ({ ...entry(Buffer.alloc(0)), uncompressedSize: 3000, open: () => ((opened = true), Readable.from([])) });
  const out = (await sizeBoundStage(archive, 1000)({ kind: 'item', position, item })) as Unit;
  t.is(out.kind === 'rejected' && out.rejection.reason, 'oversize');
  t.false(opened);
  const small = (await sizeBoundStage(archive, 10_000)({ kind: 'item', position, item })) as Unit;
  t.is(small.kind, 'item');
});

test('build stage: the message carries the attachment (read by mailparser); a missing one is noted and the item still built', async (t) => {
  const { recorder: r, lines } = await recorder(t);
  const item = await itemOf(t, message({ attachments: [{ id: 'a_1', fileName: 'q.csv', contentType: 'text/csv' }, { id: 'a_gone' }] }));
  const out = (await buildStage(exportOf({ a_1: Buffer.from('rate,1.5\n') }), 1e6, r)({ kind: 'item', position, item })) as Unit;
  t.is(out.kind, 'built');
  if (out.kind !== 'built') return;
  const parsed = await simpleParser(out.message);
  t.is(parsed.messageId, out.messageId);
  t.deepEqual(parsed.attachments.map((a) => a.content.toString()), ['rate,1.5\n']);
  t.like((await lines())[0], { record: 'note', reason: 'attachment-missing', itemId: 'm_1' });
});

test('size limit stage: a built message over the limit is rejected oversize, one at the limit passes', async (t) => {
  const item = await itemOf(t, message());
  const built = (size: number): UnitOf<'built'> => ({ kind: 'built', position, item, message: Buffer.alloc(size), messageId: '<x@y>' });
  t.is(((await sizeLimitStage(100)(built(101))) as Unit).kind, 'rejected');
  t.is(((await sizeLimitStage(100)(built(100))) as Unit).kind, 'built');
});

test('fan-out stage: one delivery per mailbox of the domain, sharing the bytes and a copy key; none is unmapped', async (t) => {
  const { recorder: r } = await recorder(t);
  const item = await itemOf(t, message());
  const built: UnitOf<'built'> = { kind: 'built', position, item, message: Buffer.from('m'), messageId: '<x@y>' };
  const all = (await fanOutStage({ domains: [], userMap: new Map() }, 'acme-2026-11-23', r)(built)) as Unit[];
  const deliveries = all.map((u) => (u.kind === 'delivery' ? u.delivery : undefined));
  t.deepEqual(deliveries.map((d) => d?.mailbox).sort(), ['ann@acme.example', 'bob@other.example']);
  t.is(new Set(deliveries.map((d) => d?.copyKey)).size, 1);
  const ours = (await fanOutStage({ domains: ['acme.example'], userMap: new Map() }, 'acme-2026-11-23', r)(built)) as Unit[];
  t.deepEqual(ours.map((u) => u.kind === 'delivery' && u.delivery.mailbox), ['ann@acme.example']);
  const none = (await fanOutStage({ domains: ['nowhere.example'], userMap: new Map() }, 'acme-2026-11-23', r)(built)) as Unit;
  t.is(none.kind === 'rejected' && none.rejection.reason, 'unmapped');
});
