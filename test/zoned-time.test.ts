// sentAt is "ISO 8601 with a zone" (spec): every form of the standard is read, none guessed at.
import test from 'ava';
import { join } from 'node:path';
import { readZonedTime } from '../src/formats/pivot-export/time.js';
import { MANIFEST, writeArchive } from './helpers/archive.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

// Each form, and the instant it names, written out independently with Date.UTC (month 10 is November).
const FORMS: [string, number, number][] = [
  ['2026-11-23T14:03:22.123Z', Date.UTC(2026, 10, 23, 14, 3, 22, 123), 0],
  ['20261123T140322Z', Date.UTC(2026, 10, 23, 14, 3, 22), 0],
  ['20261123T140322.5+0100', Date.UTC(2026, 10, 23, 13, 3, 22, 500), 0],
  ['2026-11-23T14:03:22,25-05', Date.UTC(2026, 10, 23, 19, 3, 22, 250), 0],
  ['2026-11-23t14:03:22z', Date.UTC(2026, 10, 23, 14, 3, 22), 0],
  ['2026-327T14:03Z', Date.UTC(2026, 10, 23, 14, 3), 0],
  ['2026327T1403Z', Date.UTC(2026, 10, 23, 14, 3), 0],
  ['2026-W48-1T14:03:22Z', Date.UTC(2026, 10, 23, 14, 3, 22), 0],
  ['2026W481T14Z', Date.UTC(2026, 10, 23, 14), 0],
  ['2026-W01-1T00:00Z', Date.UTC(2025, 11, 29), 0],
  ['2020-W53-7T00:00Z', Date.UTC(2021, 0, 3), 0],
  ['2026-11-23T14:03.5Z', Date.UTC(2026, 10, 23, 14, 3, 30), 0],
  ['2026-11-23T14,25Z', Date.UTC(2026, 10, 23, 14, 15), 0],
  ['2026-11-23T14:03:22.1234567+05:30', Date.UTC(2026, 10, 23, 8, 33, 22, 123), 0.4567],
  ['0000-01-01T00:00:00-01:00', -62_167_219_200_000 + 3_600_000, 0],
];

test('every ISO 8601 form of a zoned date and time is read to the instant it names, and given in one canonical form Date.parse reads alike', (t) => {
  for (const [form, time, subMs] of FORMS) {
    const read = readZonedTime(form);
    t.truthy(read, form);
    t.is(read!.time, time, form);
    t.is(read!.subMs, subMs, form);
    t.regex(read!.canonical, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/, form);
    t.is(Date.parse(read!.canonical), time, form);
    t.deepEqual(readZonedTime(read!.canonical), read, form);
  }
});

test('impossible or zone-less times are refused, never rolled over: 31 February, week 53 of a 52-week year, day 366 of 365, 24:00, a leap second, no zone', (t) => {
  for (const bad of [
    '2026-02-31T10:00:00Z',
    '2025-02-29T00:00:00Z',
    '1900-02-29T00:00Z',
    '2027-W53-1T00:00Z',
    '2026-W00-1T00:00Z',
    '2026-366T00:00Z',
    '2026-000T00:00Z',
    '2026-11-23T24:00:00Z',
    '2016-12-31T23:59:60Z',
    '2026-11-23T09:60Z',
    '2026-11-23T09:00:00+24:00',
    '2026-11-23T09:00:00',
    '2026-11-23 09:00:00Z',
    '20261123',
    '9999-12-31T23:00:00-05:00',
    '0000-01-01T00:00:00+01:00',
    `2026-11-23T14,${'1'.repeat(31)}Z`,
    'yesterday',
  ]) {
    t.is(readZonedTime(bad), undefined, bad);
  }
});

test('an export whose exporter writes basic-form, ordinal and comma times: every event delivered at its instant, and a leave in one form orders against a message in another', async (t) => {
  const dir = await tempDir(t);
  const users = [
    { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
    { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
    { id: 'u_3', displayName: 'Li', email: 'li@acme.example' },
  ];
  const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2', 'u_3'] }];
  const event = (id: string, sentAt: string, extra: Record<string, unknown> = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt, senderId: 'u_1', text: id, ...extra });
  // Li leaves at 14:00:00.0005 (basic form); the message 0.4 ms before it (extended form, another file) reaches Li, the one 0.4 ms after it does not.
  const messages = {
    '0.json': [event('m_basic', '20261123T090000Z'), event('m_leave', '20261123T140000.0005Z', { type: 'leave', senderId: 'u_3' })],
    '1.json': [
      event('m_comma', '2026-11-23T10:00:00,250+01'),
      event('m_ordinal', '2026-327T11:00Z'),
      event('m_before', '2026-11-23T14:00:00.0001Z'),
      event('m_after', '2026-11-23T15:00:00.0009+01:00'),
    ],
  };
  // The manifest's times in the basic form too: the archive is not refused over them.
  const manifest = { ...MANIFEST, windowStart: '20261123T000000Z', windowEnd: '2026-W48-2T00:00Z', createdAt: '20261124T000512+0000' };
  const archive = await writeArchive(join(dir, 'x.zip'), { manifest, users, conversations, messages });
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const run = await cli(['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--status-log', status]);
  t.is(run.code, 0, run.stderr);
  const { summary } = await readStatusLog(status);
  t.deepEqual(summary.rejected, {});
  const stored = await readMaildir(out);
  const everyone = ['jane', 'li', 'omar'];
  const expected = [
    ...['m_basic', 'm_comma', 'm_ordinal', 'm_before', 'm_leave'].flatMap((id) => everyone.map((who) => `${who}@acme.example ${id}`)),
    ...['jane', 'omar'].map((who) => `${who}@acme.example m_after`),
  ].sort();
  t.deepEqual(pairs(stored), expected);
  // The Date header, as mailparser reads it, is the instant each form names (RFC 5322 keeps whole seconds).
  const dates = new Map(stored.map((m) => [m.itemId, m.parsed.date?.getTime()]));
  t.is(dates.get('m_basic'), Date.UTC(2026, 10, 23, 9));
  t.is(dates.get('m_comma'), Date.UTC(2026, 10, 23, 9));
  t.is(dates.get('m_ordinal'), Date.UTC(2026, 10, 23, 11));
  t.is(dates.get('m_after'), Date.UTC(2026, 10, 23, 14));
  // A re-run finds every one of them (the identity is the same instant), and delivers nothing.
  const again = await cli(['run', archive, '--sink', `maildir:${out}`, '--domain', 'acme.example', '--status-log', status]);
  t.is(again.code, 0, again.stderr);
  t.is((await readMaildir(out)).length, stored.length);
});
