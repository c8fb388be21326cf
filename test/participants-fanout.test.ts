import test from 'ava';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { readZonedTime } from '../src/formats/pivot-export/time.js';
import { MembershipTimeline } from '../src/formats/pivot-export/membership.js';
import { parseDomain, readUserMap, targetMailboxes, userMapUnmatched, type FanOutConfig } from '../src/transforms/fan-out/index.js';
import { tempDir } from './helpers/tmp.js';

const at = (hh: number, file = 0, index = 0) => ({ time: Date.parse(`2026-11-23T${String(hh).padStart(2, '0')}:00:00Z`), subMs: 0, file, index });

test('members over time: windowStart members with earlier join/leave applied', (t) => {
  const timeline = new MembershipTimeline(() => ['a', 'b']);
  timeline.record('c', at(10), 'x', true);
  timeline.record('c', at(12), 'a', false);
  t.deepEqual([...timeline.membersAt('c', at(9))].sort(), ['a', 'b']);
  t.deepEqual([...timeline.membersAt('c', at(11))].sort(), ['a', 'b', 'x']);
  t.deepEqual([...timeline.membersAt('c', at(13))].sort(), ['b', 'x']);
  // An earlier event read later (another messages file) still sees the membership of its time.
  t.deepEqual([...timeline.membersAt('c', at(9, 3, 0))].sort(), ['a', 'b']);
  t.deepEqual([...timeline.membersAt('other', at(13))], ['a', 'b']);
});

test('members over time: a join recorded after the events it precedes still counts (collected in a first pass)', (t) => {
  const timeline = new MembershipTimeline(() => ['a']);
  timeline.membersAt('c', at(8));
  timeline.record('c', at(9, 2, 5), 'late', true);
  t.true([...timeline.membersAt('c', at(10, 0, 1))].includes('late'));
  t.false([...timeline.membersAt('c', at(9, 2, 4))].includes('late'), 'same time, earlier position: not yet');
  t.true([...timeline.membersAt('c', at(9, 2, 6))].includes('late'));
});

test('members over time: "before" is by time to the last digit sentAt gives; at the very same time, only a change earlier in the event\'s own file counts (never one in another file, whatever the file names)', (t) => {
  const key = (sentAt: string, file: number, index: number) => ({ time: readZonedTime(sentAt)!.time, subMs: readZonedTime(sentAt)!.subMs, file, index });
  const timeline = new MembershipTimeline(() => ['a', 'bob']);
  // In file 0 (a.json): carol joins at .0009 ms, bob leaves at .0009 s; in file 1 (b.json) the messages.
  timeline.record('c', key('2026-11-23T01:00:00.0009Z', 0, 0), 'carol', true);
  timeline.record('c', key('2026-11-23T02:00:00.000900Z', 0, 1), 'bob', false);
  t.false([...timeline.membersAt('c', key('2026-11-23T01:00:00.0001Z', 1, 0))].includes('carol'), 'sent before she joined, in the same millisecond');
  t.true([...timeline.membersAt('c', key('2026-11-23T02:00:00.000200Z', 1, 1))].includes('bob'), 'sent before he left, in the same millisecond');
  t.true([...timeline.membersAt('c', key('2026-11-23T02:00:00.0009001Z', 1, 2))].includes('carol'));
  t.false([...timeline.membersAt('c', key('2026-11-23T02:00:00.0009001Z', 1, 2))].includes('bob'));
  // Exactly the same time: a change in another file is not before the event, in either file order.
  const tie = new MembershipTimeline(() => ['a']);
  tie.record('c', key('2026-11-23T03:00:00.5Z', 0, 0), 'early-file', true);
  tie.record('c', key('2026-11-23T03:00:00.5Z', 2, 0), 'late-file', true);
  tie.record('c', key('2026-11-23T03:00:00.5Z', 1, 0), 'same-file', true);
  tie.record('c', key('2026-11-23T03:00:00.5Z', 1, 2), 'same-file-after', true);
  t.deepEqual([...tie.membersAt('c', key('2026-11-23T03:00:00.500Z', 1, 1))].sort(), ['a', 'same-file']);
  // And the cursor is not left changed by that answer: a later event sees every change.
  t.deepEqual([...tie.membersAt('c', key('2026-11-23T03:00:00.501Z', 0, 5))].sort(), ['a', 'early-file', 'late-file', 'same-file', 'same-file-after']);
  t.deepEqual([...tie.membersAt('c', key('2026-11-23T03:00:00.5Z', 2, 1))].sort(), ['a', 'late-file']);
});

const config = (over: Partial<FanOutConfig> = {}): FanOutConfig => ({ domains: [], userMap: new Map(), ...over });
const people = [
  { id: 'u_1', email: 'Jane.Doe@ACME.example' },
  { id: 'u_2', email: 'omar@broker.example' },
  { id: 'u_3', email: null },
  { id: 'u_4', email: 'not an address' },
  { id: 'u_5', email: 'jane.doe@acme.example' },
  { id: 'u_6', email: '../../etc@acme.example' },
];

test('fan-out: every participant with a valid email, lowercased, each mailbox once', (t) => {
  t.deepEqual(targetMailboxes(people, config()), ['jane.doe@acme.example', 'omar@broker.example']);
});

test('fan-out: --domain keeps the organisation only; --user-map overrides; --default-mailbox catches the rest', (t) => {
  t.deepEqual(targetMailboxes(people, config({ domains: ['acme.example'] })), ['jane.doe@acme.example']);
  const userMap = new Map([['u_3', 'ghost@acme.example'], ['omar@broker.example', 'omar.h@acme.example']]);
  t.deepEqual(targetMailboxes(people, config({ domains: ['acme.example'], userMap })), ['ghost@acme.example', 'jane.doe@acme.example', 'omar.h@acme.example']);
  t.deepEqual(targetMailboxes([people[2]!, people[3]!], config()), []);
  t.deepEqual(targetMailboxes([people[2]!], config({ defaultMailbox: 'Compliance@acme.example' })), ['compliance@acme.example']);
});

test('user map CSV: header and comments allowed, a bad line names its line number', async (t) => {
  const dir = await tempDir(t);
  const good = join(dir, 'map.csv');
  await writeFile(good, 'pivot,mailbox\n# comment\nu_3, ghost@acme.example\nOmar@Broker.example,omar.h@acme.example\n');
  t.deepEqual([...(await readUserMap(good))], [['u_3', 'ghost@acme.example'], ['omar@broker.example', 'omar.h@acme.example']]);
  const bad = join(dir, 'bad.csv');
  await writeFile(bad, 'u_1,jane@acme.example\nu_2,not-an-address\n');
  const err = await t.throwsAsync(readUserMap(bad));
  t.is((err as { code?: string }).code, ErrorCode.CONFIG);
  t.regex(err!.message, /bad.csv:2/);
  t.throws(() => parseDomain('not a domain'), { message: /not a domain name/ });
  t.is(parseDomain('@ACME.example'), 'acme.example');
});

test('fan-out: IDN and non-ASCII addresses are targets, keyed canonically (NFC, lower case, A-label domain)', (t) => {
  const users = [
    { id: 'u_1', email: 'anna@BÜCHER.example' },
    { id: 'u_2', email: 'anna@xn--bcher-kva.example' },
    { id: 'u_3', email: 'Jürgen@acme.example' },
    { id: 'u_4', email: 'ju\u0308rgen@ACME.example' }, // NFD: the same mailbox
    { id: 'u_5', email: '用户@例子.广告' },
    { id: 'u_6', email: 'a..b@acme.example' },
  ];
  t.deepEqual(targetMailboxes(users, config()), ['anna@xn--bcher-kva.example', 'jürgen@acme.example', '用户@xn--fsqu00a.xn--4rr70v']);
  // --domain in any form: parsed by parseDomain, or as given in a FanOutConfig.
  t.deepEqual(targetMailboxes(users, config({ domains: [parseDomain('bücher.example')] })), ['anna@xn--bcher-kva.example']);
  t.deepEqual(targetMailboxes(users, config({ domains: ['BÜCHER.example', '例子.广告'] })), ['anna@xn--bcher-kva.example', '用户@xn--fsqu00a.xn--4rr70v']);
  t.deepEqual(targetMailboxes([users[5]!], config({ defaultMailbox: 'Compliance@BÜCHER.example' })), ['compliance@xn--bcher-kva.example']);
});

test('fan-out: user-map keys match a Pivot email in any of its forms', (t) => {
  const userMap = new Map([['jürgen@acme.example', 'j.mueller@xn--bcher-kva.example']]);
  t.deepEqual(targetMailboxes([{ id: 'u_1', email: 'JU\u0308RGEN@Acme.Example' }], config({ userMap })), ['j.mueller@xn--bcher-kva.example']);
});

test('fan-out: the user-map keys that name no user of the export are found (by id, or by email in any of its forms)', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'map.csv');
  await writeFile(path, 'pivot email or user id,mailbox\nu_1,a@acme.example\nJU\u0308RGEN@Acme.Example,j@acme.example\nu_9,typo@acme.example\nnobody@acme.example,n@acme.example\n');
  const users = [{ id: 'u_1', email: 'x@acme.example' }, { id: 'u_2', email: 'jürgen@acme.example' }];
  t.deepEqual(userMapUnmatched(await readUserMap(path), users, []), ['u_9', 'nobody@acme.example']);
  // A member users.json lacks is delivered by its id: a key for it names someone.
  t.deepEqual(userMapUnmatched(await readUserMap(path), users, ['u_9']), ['nobody@acme.example']);
});

test('parseDomain: IDN accepted as its A-label; a value that is not a domain names itself and why', (t) => {
  t.is(parseDomain('bücher.example'), 'xn--bcher-kva.example');
  t.is(parseDomain(' @BÜCHER.Example '), 'xn--bcher-kva.example');
  t.is(parseDomain('xn--bcher-kva.example'), 'xn--bcher-kva.example');
  t.is(parseDomain('例子.广告'), 'xn--fsqu00a.xn--4rr70v');
  const refused: [string, RegExp][] = [
    ['not a domain', /space/],
    ['', /empty/],
    ['jane@acme.example', /email address/],
    ['a/b.example', /"\/"/],
    ['localhost', /two labels/],
    ['acme..example', /empty label/],
    ['xn--zz.example', /IDNA/],
    ['1.2.3.4', /IP address/],
    ['-acme.example', /label/],
  ];
  for (const [value, why] of refused) {
    const err = t.throws(() => parseDomain(value), undefined, JSON.stringify(value));
    t.is((err as { code?: string }).code, ErrorCode.CONFIG);
    t.true(err!.message.startsWith(`--domain ${JSON.stringify(value)} is not a domain name: `), err!.message);
    t.regex(err!.message, why);
  }
});
