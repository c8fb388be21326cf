import test from 'ava';
import { simpleParser } from 'mailparser';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, errorMessage } from '../src/errors.js';
import type { Item } from '../src/model.js';
import { resolveConfig, yargsOptionsOf } from '../src/options/index.js';
import { PivotExportArchive } from '../src/sources/pivot-zip/index.js';
import { buildMessage } from '../src/transforms/mime/index.js';
import { HOST_API_VERSION, PluginRegistry, definePlugin, drop, loadPlugin } from '../src/transforms/plugins/index.js';
import { writeArchive } from './helpers/archive.js';
import { REPO_ROOT, cli, readStatusLog, runRecords, startCli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const context = { exportId: 'e', tenant: 't' };
const noLog = () => undefined;
const jane = { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example', company: 'Acme Capital' };

function item(over: Partial<Item> = {}): Item {
  return {
    id: 'm_1',
    type: 'message',
    sentAt: '2026-11-23T09:00:00Z',
    conversation: { id: 'c_1', type: 'room', name: 'Desk', members: ['u_1'] },
    sender: jane,
    text: 'hello',
    attachments: [],
    participants: [jane],
    headers: {},
    raw: {},
    position: { file: 0, index: 0 },
    ...over,
  };
}

const plugin = (over: Record<string, unknown> = {}) => ({ name: 'p', hostApi: '^1.0.0', transform: (i: Item) => i, ...over });

test('an empty registry passes items through unchanged', async (t) => {
  const registry = new PluginRegistry();
  const input = item();
  t.deepEqual(await registry.apply(input, context, noLog), { items: [input] });
  t.deepEqual(registry.names, []);
});

test("what the host owns of an item (its event's bytes, parsed value and position) is put back whatever a plugin returns, and a returned item's fields are read once", async (t) => {
  const bytes = Buffer.from('{"id":"m_1"}');
  const input = item({ raw: { id: 'm_1' }, bytes, position: { file: 2, index: 7 } });
  let reads = 0;
  const registry = new PluginRegistry();
  registry.register(
    plugin({
      transform: (i: Item) => [
        // Was: a rejection of this item took its position, and the checkpoint moved past events never delivered.
        { ...i, position: { file: 0, index: 45 }, raw: { fake: 1 }, bytes: Buffer.from('{"fake":1}') },
        // A deep copy by JSON: its bytes an object, which the rejects folder could never write.
        JSON.parse(JSON.stringify({ ...i, id: 'm_1b' })) as Item,
        // Built from the documented fields only: no raw, bytes or position.
        { id: 'm_1c', type: i.type, sentAt: i.sentAt, conversation: i.conversation, sender: i.sender, attachments: [], participants: i.participants, headers: {} },
        {
          ...i,
          get id() {
            return `m_1d${++reads}`;
          },
        },
      ],
    }),
  );
  const outcome = await registry.apply(input, context, noLog);
  t.false('rejected' in outcome);
  const { items } = outcome as { items: Item[] };
  t.deepEqual(
    items.map((x) => x.id),
    ['m_1', 'm_1b', 'm_1c', 'm_1d1'],
  );
  t.is(reads, 1, 'the id the check saw is the one delivered');
  for (const x of items) {
    t.deepEqual(x.position, { file: 2, index: 7 });
    t.is(x.raw, input.raw);
    t.is(x.bytes, bytes);
  }
});

test('registration checks name, transform, host API range and duplicates', (t) => {
  const registry = new PluginRegistry();
  t.is(HOST_API_VERSION, '1.0.0');
  t.throws(() => registry.register(plugin({ hostApi: '^2.0.0' })), { code: ErrorCode.PLUGIN_VERSION });
  t.throws(() => registry.register(plugin({ hostApi: 'whenever' })), { code: ErrorCode.PLUGIN_INVALID });
  t.throws(() => registry.register(plugin({ name: 'bad name!' })), { code: ErrorCode.PLUGIN_INVALID });
  t.throws(() => registry.register(plugin({ transform: 'no' })), { code: ErrorCode.PLUGIN_INVALID });
  t.throws(() => registry.register(undefined, 'x.js'), { message: /x.js: does not export a plugin object/ });
  registry.register(plugin());
  t.throws(() => registry.register(plugin()), { code: ErrorCode.PLUGIN_DUPLICATE });
  t.deepEqual(registry.names, ['p']);
});

test('plugins change, split (async too), drop with a reason, and a throw rejects only that item', async (t) => {
  const registry = new PluginRegistry();
  registry.register(definePlugin({ name: 'upper', hostApi: '^1', transform: (i) => ({ ...i, text: i.text?.toUpperCase() }) }));
  registry.register(
    definePlugin({
      name: 'split',
      hostApi: '>=1.0.0 <2',
      transform: async (i) => (i.text === 'SPLIT' ? [{ ...i, id: `${i.id}#1` }, { ...i, id: `${i.id}#2` }] : i),
    }),
  );
  registry.register(
    definePlugin({
      name: 'gate',
      hostApi: '^1.0.0',
      transform: (i) => {
        if (i.text === 'BOOM') throw new Error('kaput');
        if (i.text === 'DROP') return drop('not wanted');
        return i;
      },
    }),
  );
  const changed = await registry.apply(item(), context, noLog);
  t.is('items' in changed && changed.items[0]!.text, 'HELLO');
  const split = await registry.apply(item({ text: 'split' }), context, noLog);
  t.deepEqual('items' in split && split.items.map((i) => i.id), ['m_1#1', 'm_1#2']);
  t.deepEqual(await registry.apply(item({ text: 'boom' }), context, noLog), {
    rejected: { reason: 'plugin:gate', detail: 'plugin gate failed on item m_1: kaput' },
  });
  t.deepEqual(await registry.apply(item({ text: 'drop' }), context, noLog), {
    rejected: { reason: 'dropped:gate', detail: 'plugin gate dropped item m_1: not wanted' },
  });
});

test('a plugin that returns nothing usable rejects the item instead of losing it, or stopping the run', async (t) => {
  for (const [returned, why] of [
    [() => [], /nothing/],
    [() => undefined, /undefined instead of an item/],
    [(i: Item) => [i, undefined], /undefined instead of an item/],
    [() => null, /null instead of an item/],
    [(i: Item) => ({ ...i, participants: 'nope' }), /participants are not a list of users/],
    [(i: Item) => ({ ...i, sentAt: 'soon' }), /sentAt is not an ISO 8601 time with a zone/],
    [(i: Item) => ({ ...i, sentAt: '2026-11-23 09:00:00' }), /sentAt is not an ISO 8601 time with a zone/],
    [(i: Item) => ({ ...i, headers: { 'X-A': 1 } }), /headers are not names and string values/],
    [(i: Item) => ({ ...i, headers: { Subject: 'mine' } }), /header "Subject" is not an X- header/],
    [(i: Item) => ({ ...i, headers: { 'X-Desk': 'rates', 'X-Pivot-Item-Id': 'other' } }), /header "X-Pivot-Item-Id" is set by pivot-archive itself/],
    [(i: Item) => ({ ...i, text: 7 }), /text is not a string/],
    [(i: Item) => ({ ...i, type: 'bogus' }), /type "bogus" is none of message, edit, delete, join, leave/],
    [(i: Item) => ({ ...i, type: undefined }), /type \(undefined\) is none of/],
    [(i: Item) => ({ ...i, replyToId: Symbol('x') }), /replyToId is not a string/],
    [(i: Item) => ({ ...i, member: 'u_1' }), /member is not a user/],
    [(i: Item) => [{ ...i, id: 'part\ud800' }, { ...i, id: 'part\udbff' }], /id is not well-formed Unicode/],
    [(i: Item) => ({ ...i, headers: { 'X-Pivot-Version': 'sha256=' + '0'.repeat(64) } }), /header "X-Pivot-Version" is set by pivot-archive itself/],
    [(i: Item) => [i, drop('a bot')], /returned drop\(reason\) inside a list for m_1: return drop\(reason\) alone/],
    [(i: Item) => ({ ...i, type: 'edit' }), /an edit item without a targetId/],
    [(i: Item) => ({ ...i, type: 'delete', targetId: '' }), /a delete item without a targetId/],
  ] as const) {
    const registry = new PluginRegistry();
    registry.register(plugin({ transform: returned }));
    const outcome = await registry.apply(item(), context, noLog);
    t.true('rejected' in outcome && outcome.rejected.reason === 'plugin:p', String(returned));
    if ('rejected' in outcome) t.regex(outcome.rejected.detail, why);
  }
});

test('example plugin redact-card-numbers masks Luhn-valid cards and IBANs only', async (t) => {
  const redact = (await loadPlugin('./plugins/redact-card-numbers.js', REPO_ROOT)) as { transform: (i: Item) => Item };
  const out = redact.transform(item({ text: 'card 4111 1111 1111 1111, not 4111 1111 1111 1112, iban GB82 WEST 1234 5698 7654 32', html: '<p>4111-1111-1111-1111</p>' }));
  t.is(out.text, 'card [card ****1111], not 4111 1111 1111 1112, iban [IBAN GB****]');
  t.is(out.html, '<p>[card ****1111]</p>');
  t.is(out.headers['X-Pivot-Redacted'], 'card=2; iban=1');
  const clean = item({ text: 'nothing here 12345' });
  t.is(redact.transform(clean), clean);
});

test('example plugins end to end: headers added, a skipped conversation recorded as dropped, a failing plugin recorded', async (t) => {
  const dir = await tempDir(t);
  const users = [jane, { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' }];
  const conversations = [
    { id: 'c_1', type: 'room', name: 'Rates desk', members: ['u_1', 'u_2'] },
    { id: 'c_2', type: 'direct', name: null, members: ['u_1', 'u_2'] },
  ];
  const ev = (id: string, conversationId: string, text: string) => ({ id, conversationId, type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text });
  const archive = await writeArchive(join(dir, 'x.zip'), {
    users,
    conversations,
    messages: { '0.json': [ev('m_1', 'c_1', 'pay to GB82 WEST 1234 5698 7654 32'), ev('m_2', 'c_2', 'private'), ev('m_3', 'c_1', 'explode')] },
  });
  const failing = join(dir, 'failing.mjs');
  await (await import('node:fs/promises')).writeFile(
    failing,
    "export default { name: 'explode', hostApi: '^1.0.0', transform(item) { if (item.text === 'explode') throw new Error('bad plugin'); return item; } };\n",
  );
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const result = await cli(
    ['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects'),
      '--plugin', './plugins/redact-card-numbers.js', '--plugin', './plugins/conversation-header.js', '--plugin', failing],
    { env: { PIVOT_SKIP_CONVERSATIONS: 'c_2' } },
  );
  t.is(result.code, 0, result.stderr);
  const stored = await readMaildir(out);
  t.deepEqual(stored.map((m) => `${m.mailbox} ${m.itemId}`), ['jane@acme.example m_1', 'omar@acme.example m_1']);
  const mail = await simpleParser(stored[0]!.raw);
  t.is(mail.text?.trim(), 'pay to [IBAN GB****]');
  t.is(mail.headers.get('x-pivot-conversation-name'), 'Rates desk');
  t.is(mail.headers.get('x-pivot-conversation-type'), 'room');
  t.is(mail.headers.get('x-pivot-sender-company'), 'Acme Capital');
  t.is(mail.headers.get('x-pivot-redacted'), 'card=0; iban=1');
  const { summary, lines } = await readStatusLog(status);
  t.deepEqual(summary.rejected, { 'dropped:conversation-header': 1, 'plugin:explode': 1 });
  t.regex(String(lines.find((l) => l.itemId === 'm_3')?.detail), /bad plugin/);
});

test('a plugin that cannot be loaded or wants another host API stops the run before delivery (exit 2)', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { users: [jane], conversations: [{ id: 'c', type: 'room', members: ['u_1'] }], messages: { '0.json': [] } });
  const missing = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'm')}`, '--plugin', './nope.js']);
  t.is(missing.code, 2);
  t.regex(missing.log, /E_PLUGIN_LOAD: cannot load plugin \.\/nope\.js/);
  const future = join(dir, 'future.mjs');
  await (await import('node:fs/promises')).writeFile(future, "export default { name: 'future', hostApi: '^2.0.0', transform: (i) => i };\n");
  const wrong = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'm')}`, '--plugin', future]);
  t.is(wrong.code, 2);
  t.regex(wrong.log, /E_PLUGIN_VERSION: .*wants host API \^2\.0\.0; this is 1\.0\.0/);
  t.deepEqual(await readMaildir(join(dir, 'm')), []);
});

test('errorMessage never throws: a thrown value that cannot be made text is described by its type', (t) => {
  t.is(errorMessage(new Error('kaput')), 'kaput');
  t.is(errorMessage('plain'), 'plain');
  t.is(errorMessage({ toString: () => { throw new Error('x'); } }), 'a thrown object that cannot be shown as text');
  t.is(errorMessage(Object.create(null)), 'a thrown object that cannot be shown as text');
  const hostileError = Object.defineProperty(new Error(), 'message', { get: () => { throw new Error('x'); } });
  t.is(errorMessage(hostileError), 'a thrown object that cannot be shown as text');
});

test('a plugin that throws what cannot be made text, or returns what throws when read, rejects only its item, naming the plugin', async (t) => {
  for (const transform of [
    () => { throw { toString() { throw new Error('x'); } }; },
    () => Promise.reject(Object.create(null)),
    (i: Item) => ({ ...i, get id(): string { throw new Error('no id for you'); } }),
    (i: Item) => new Proxy(i, { has: () => { throw new Error('trap'); } }),
  ]) {
    const registry = new PluginRegistry();
    registry.register(plugin({ transform }));
    const outcome = await registry.apply(item(), context, noLog);
    t.true('rejected' in outcome && outcome.rejected.reason === 'plugin:p', String(transform));
    if ('rejected' in outcome) t.regex(outcome.rejected.detail, /^plugin p failed on item m_1: /);
  }
});

test('a split into more items than a call takes arguments is applied, not a crash of the host', async (t) => {
  const registry = new PluginRegistry();
  registry.register(plugin({ transform: (i: Item) => Array.from({ length: 200_000 }, (_, n) => ({ ...i, id: `${i.id}#${n}` })) }));
  const outcome = await registry.apply(item(), context, noLog);
  t.is('items' in outcome && outcome.items.length, 200_000);
});

test('the MIME builder refuses an item of a type it does not know, naming the type, rather than build from undefined', (t) => {
  const bogus = { ...item(), type: 'bogus' } as unknown as Item;
  t.throws(() => buildMessage(bogus, { tenant: 't', exportId: 'e' }, []), { message: 'cannot build a message for an item of type "bogus"' });
});

test('a plugin call that does not settle within the time limit rejects its item, naming the plugin; a late result is ignored', async (t) => {
  t.timeout(10_000);
  const registry = new PluginRegistry(0.05);
  registry.register(
    plugin({
      name: 'slow',
      transform: (i: Item) => {
        if (i.text === 'never') return new Promise(() => undefined);
        // Rejects after the limit: must neither count nor surface as an unhandled rejection.
        if (i.text === 'late') return new Promise((_, fail) => setTimeout(() => fail(new Error('too late')), 100));
        return Promise.resolve(i);
      },
    }),
  );
  for (const text of ['never', 'late']) {
    t.deepEqual(await registry.apply(item({ text }), context, noLog), {
      rejected: { reason: 'plugin:slow', detail: 'plugin slow did not settle within 0.05 s on item m_1 (--plugin-timeout); a result it gives later is ignored' },
    });
  }
  const quick = await registry.apply(item(), context, noLog);
  t.is('items' in quick && quick.items[0]!.text, 'hello');
  await new Promise((resolve) => setTimeout(resolve, 150));
});

test('--plugin-timeout: 60 s by default, from the flag, PIVOT_ARCHIVE_PLUGIN_TIMEOUT or the config file; 1 to 86400; in the help', async (t) => {
  const base = { archive: 'x.zip', sink: 'maildir:m', 'all-domains': true };
  t.is((await resolveConfig('run', base, {})).pluginTimeout, 60);
  t.is((await resolveConfig('run', { ...base, 'plugin-timeout': '5' }, {})).pluginTimeout, 5);
  t.is((await resolveConfig('run', base, { PIVOT_ARCHIVE_PLUGIN_TIMEOUT: '7' })).pluginTimeout, 7);
  await t.throwsAsync(resolveConfig('run', { ...base, 'plugin-timeout': '0' }, {}), { code: ErrorCode.USAGE, message: '--plugin-timeout: "0" is not 1 to 86400 seconds' });
  await t.throwsAsync(resolveConfig('run', { ...base, 'plugin-timeout': '86401' }, {}), { message: /is not 1 to 86400 seconds/ });
  await t.throwsAsync(resolveConfig('run', base, { PIVOT_ARCHIVE_PLUGIN_TIMEOUT: 'soon' }), { code: ErrorCode.CONFIG, message: /PIVOT_ARCHIVE_PLUGIN_TIMEOUT: "soon" is not a whole number of seconds/ });
  const option = yargsOptionsOf('run')['plugin-timeout']!;
  t.is(option.defaultDescription, '60');
  t.regex(String(option.describe), /seconds a plugin may take on one item \(1 to 86400\).*\[env: PIVOT_ARCHIVE_PLUGIN_TIMEOUT\]/);
  t.false('plugin-timeout' in yargsOptionsOf('import'));
});

test("the export's users and conversations are frozen once loaded: what one item holds, every item holds", async (t) => {
  const dir = await tempDir(t);
  const path = await writeArchive(join(dir, 'x.zip'), {
    users: [{ ...jane, extra: { nested: ['a'] } }],
    conversations: [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 7] }],
    messages: { '0.json': [] },
  });
  const archive = await PivotExportArchive.open({ path });
  t.teardown(() => archive.close());
  const user = archive.users.get('u_1') as unknown as { extra: { nested: string[] } };
  const conversation = archive.conversations.get('c_1')!;
  t.deepEqual(conversation.members, ['u_1']);
  for (const value of [user, user.extra, user.extra.nested, conversation, conversation.members]) t.true(Object.isFrozen(value));
});

/** A plugin module in `dir` whose transform body is `body` (strict-mode ESM, as a user's .mjs). */
async function pluginFile(dir: string, name: string, body: string): Promise<string> {
  const path = join(dir, `${name}.mjs`);
  await writeFile(path, `export default { name: '${name}', hostApi: '^1.0.0', transform(item) { ${body} } };\n`);
  return path;
}

const omar = { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' };
const message = (id: string) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text: `text of ${id}` });

/** An archive in `dir` of one room, Desk, of Jane and Omar, with a message of Jane's for each of `ids`. */
const deskArchive = (dir: string, ids: string[]) =>
  writeArchive(join(dir, 'x.zip'), { users: [jane, omar], conversations: [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }], messages: { '0.json': ids.map(message) } });

test('hostile plugins end to end: each mishandled item is rejected plugin:<name> and kept, the others reach their own mailboxes', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const archive = await deskArchive(dir, ['m_1', 'm_2', 'm_3', 'm_4', 'm_5']);
  // A promise that never settles, with nothing else to keep the process alive: the time limit's timer does.
  const hostile = await pluginFile(
    dir,
    'hostile',
    `switch (item.id) {
      case 'm_1': throw { toString() { throw new Error('x'); } };
      case 'm_2': return { ...item, type: 'bogus' };
      case 'm_3': item.sender.email = 'compliance@acme.example'; return item;
      case 'm_4': return new Promise(() => {});
      default: return item;
    }`,
  );
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const rejects = join(dir, 'rejects');
  const result = await cli(['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', rejects, '--plugin', hostile, '--plugin-timeout', '1']);
  t.is(result.code, 0, result.stderr);
  t.deepEqual((await readMaildir(out)).map((m) => `${m.mailbox} ${m.itemId}`), ['jane@acme.example m_5', 'omar@acme.example m_5']);
  const { summary, lines } = await readStatusLog(status);
  t.deepEqual(summary.rejected, { 'plugin:hostile': 4 });
  t.true(summary.balanced);
  const detail = (id: string) => String(lines.find((l) => l.itemId === id && l.outcome === 'rejected')?.detail);
  t.is(detail('m_1'), 'plugin hostile failed on item m_1: a thrown object that cannot be shown as text');
  t.regex(detail('m_2'), /^plugin hostile returned no usable item for m_2 \(an item whose type "bogus" is none of message, edit, delete, join, leave;/);
  t.regex(detail('m_3'), /^plugin hostile failed on item m_3: Cannot assign to read only property 'email'/);
  t.is(detail('m_4'), 'plugin hostile did not settle within 1 s on item m_4 (--plugin-timeout); a result it gives later is ignored');
  const kept = await readdir(rejects, { recursive: true });
  for (const id of ['m_1', 'm_2', 'm_3', 'm_4']) t.true(kept.some((f) => f.includes(`${id}.`)), id);
});

/** Starts the CLI and sends it SIGTERM once `file` is there: its exit code ('still running' after `limitMs`, then killed), and when the signal went. */
async function stopOnceThere(args: string[], file: string, limitMs: number, env?: Record<string, string>): Promise<{ code: unknown; signalledAt: number }> {
  const { child, exited } = startCli(args, env ? { env } : {});
  while (!(await stat(file).catch(() => undefined))) await new Promise((r) => setTimeout(r, 20));
  const signalledAt = Date.now();
  child.kill('SIGTERM');
  const code = await Promise.race([exited, new Promise((r) => setTimeout(r, limitMs, 'still running'))]);
  if (code === 'still running') child.kill('SIGKILL');
  return { code, signalledAt };
}

/** `deskArchive` of `count` messages m_1, m_2, ... and their ids. */
async function numberedDesk(dir: string, count: number): Promise<{ ids: string[]; archive: string }> {
  const ids = Array.from({ length: count }, (_, i) => `m_${i + 1}`);
  return { ids, archive: await deskArchive(dir, ids) };
}

/** The (mailbox, item) pairs of the items `ids` the Maildir `out` does not hold, but those of the items `except`. */
async function missingPairs(out: string, ids: string[], except: Set<string>): Promise<string[]> {
  const stored = new Set((await readMaildir(out)).map((m) => `${m.mailbox} ${m.itemId}`));
  return ids.filter((id) => !except.has(id)).flatMap((id) => [jane, omar].map((u) => `${u.email} ${id}`)).filter((x) => !stored.has(x));
}

/**
 * Plugin text that never settles on m_2 (once: while the file `started`, which it then makes, is not
 * there yet) and keeps a timer alive for `aliveMs`; every other item passes.
 */
const hangOnM2 = (started: string, aliveMs: number) =>
  `if (item.id !== 'm_2') return item;
   return import('node:fs').then((fs) => {
     if (fs.existsSync(${JSON.stringify(started)})) return item;
     fs.writeFileSync(${JSON.stringify(started)}, '');
     return new Promise(() => { setTimeout(() => {}, ${aliveMs}); });
   });`;

test('SIGTERM while a plugin call never settles: the run stops within the time limit, exit 4 with a summary; a re-run finishes the rest', async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const { ids, archive } = await numberedDesk(dir, 2000);
  const started = join(dir, 'started');
  // Its timer outlives the time limit: what ends the wait is the limit, not the plugin.
  const hang = await pluginFile(dir, 'hang', hangOnM2(started, 4000));
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const args = ['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects'), '--state-dir', join(dir, 'state'), '--plugin', hang, '--plugin-timeout', '2'];
  const { code, signalledAt } = await stopOnceThere(args, started, 60_000);
  t.is(code, 4);
  const { summary, lines } = await readStatusLog(status);
  t.true(summary.interrupted);
  t.true(summary.balanced);
  // The time limit, then the items in flight (slow on a loaded machine).
  t.true(Date.parse(summary.finishedAt) - signalledAt < 2000 + 1500 * 4, `summary ${Date.parse(summary.finishedAt) - signalledAt} ms after SIGTERM`);
  t.true(summary.itemsFromSource < ids.length);
  t.regex(String(lines.find((l) => l.itemId === 'm_2')?.detail), /plugin hang did not settle within 2 s/);

  // The same options, so it resumes from the checkpoint; the plugin no longer hangs.
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  const again = (await readStatusLog(status)).summary;
  t.true(again.itemsDoneEarlier > 0);
  t.true(again.balanced);
  t.deepEqual(await missingPairs(out, ids, new Set(['m_2'])), []);
});

test('SIGTERM while a plugin hangs on every item: the events read ahead are not sent to it, the run stops within one time limit (was: one per read-ahead event, minutes); a re-run delivers them', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const { ids, archive } = await numberedDesk(dir, 2000);
  const started = join(dir, 'started');
  // From m_2 on, every call hangs while HANG is set (the service behind the plugin is down).
  const hang = await pluginFile(dir, 'hang', `if (item.id === 'm_1' || !process.env.HANG) return item;
    return import('node:fs').then((fs) => { fs.writeFileSync(${JSON.stringify(started)}, ''); return new Promise(() => {}); });`);
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const args = ['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects'), '--state-dir', join(dir, 'state'), '--plugin', hang, '--plugin-timeout', '2'];
  const { code, signalledAt } = await stopOnceThere(args, started, 60_000, { HANG: '1' });
  t.is(code, 4);
  const { summary, lines } = await readStatusLog(status);
  t.true(summary.interrupted);
  t.true(summary.balanced);
  t.true(Date.parse(summary.finishedAt) - signalledAt < 2000 * 2 + 6000, `summary ${Date.parse(summary.finishedAt) - signalledAt} ms after SIGTERM`);
  // The call in progress at the signal (and at most one behind it) met the limit; no other was made.
  const timedOut = lines.filter((l) => /did not settle within 2 s/.test(String(l.detail)));
  t.true(timedOut.length >= 1 && timedOut.length <= 2, `${timedOut.length} calls timed out`);
  t.is(summary.itemsFromSource, 1 + timedOut.length);

  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  t.true((await readStatusLog(status)).summary.balanced);
  t.deepEqual(await missingPairs(out, ids, new Set(timedOut.map((l) => String(l.itemId)))), []);
});

test('an id a plugin gave before a stop is refused after the resume too (duplicate-id), as in one run: one message per id, its second event kept (was: both delivered under one Message-ID)', async (t) => {
  t.timeout(90_000);
  const dir = await tempDir(t);
  const { archive } = await numberedDesk(dir, 400);
  const started = join(dir, 'started');
  // m_1 and m_300 are both renamed "renamed"; m_2 hangs once, which is when the run is stopped.
  const rename = await pluginFile(dir, 'rename', `if (item.id === 'm_1' || item.id === 'm_300') return { ...item, id: 'renamed' };
    ${hangOnM2(started, 4000)}`);
  const out = join(dir, 'mail');
  const status = join(dir, 'status.jsonl');
  const args = ['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${out}`, '--status-log', status, '--rejects', join(dir, 'rejects'), '--state-dir', join(dir, 'state'), '--plugin', rename, '--plugin-timeout', '2'];
  t.is((await stopOnceThere(args, started, 60_000)).code, 4);
  t.true((await readStatusLog(status)).summary.itemsFromSource < 300, 'stopped before m_300');
  const resumed = await cli(args);
  t.is(resumed.code, 0, resumed.stderr);
  const { summary, lines } = await readStatusLog(status);
  t.true(summary.itemsDoneEarlier > 0, 'resumed from the checkpoint');
  t.like(lines.find((l) => l.itemId === 'renamed' && l.outcome === 'rejected'), { reason: 'duplicate-id:rename' });
  const renamed = (await readMaildir(out)).filter((m) => m.itemId === 'renamed').map((m) => m.mailbox);
  t.deepEqual(renamed.sort(), ['jane@acme.example', 'omar@acme.example']);
});

// Known gap, outside the plugin host: bin/pivot-archive.js sets process.exitCode and waits for the event
// loop to empty, which a plugin's own timer never lets it do. Passes (as failing) until the CLI exits itself.
test('the process exits once its summary is written, even when a plugin left a timer running', async (t) => {
  t.timeout(90_000);
  const dir = await tempDir(t);
  const archive = await deskArchive(dir, ['m_1', 'm_2', 'm_3']);
  const hang = await pluginFile(dir, 'hang', hangOnM2(join(dir, 'started'), 3_600_000));
  const status = join(dir, 'status.jsonl');
  const { child, exited } = startCli(['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--status-log', status, '--rejects', join(dir, 'rejects'), '--plugin', hang, '--plugin-timeout', '1']);
  // The plugin's timer is an hour: a minute tells (a loaded machine starts node slowly).
  const code = await Promise.race([exited, new Promise((r) => setTimeout(r, 60_000, 'still running'))]);
  if (code === 'still running') child.kill('SIGKILL');
  t.is(code, 0);
});

test("a plugin's process.exit() never ends the run with its code: in a transform its item is rejected and kept, in a timer the run stops E_INTERNAL (exit 70) with its summary, at load the plugin is refused (was: exit 0, nothing delivered, no summary)", async (t) => {
  t.timeout(90_000);
  const dir = await tempDir(t);
  const archive = await deskArchive(dir, ['m_1', 'm_2', 'm_3']);
  const run = async (plugin: string, name: string) => {
    const status = join(dir, `${name}.jsonl`);
    const result = await cli(['run', '--max-rejected', '100%', '--all-domains', archive, '--sink', `maildir:${join(dir, name)}`, '--status-log', status, '--rejects', join(dir, `${name}-rejects`), '--plugin', plugin, '--json']);
    return { ...result, status };
  };
  const inTransform = await run(await pluginFile(dir, 'exitnow', "if (item.id === 'm_2') process.exit(0); return item;"), 'now');
  t.is(inTransform.code, 0, inTransform.stderr);
  const { summary, lines } = await readStatusLog(inTransform.status);
  t.deepEqual(summary.rejected, { 'plugin:exitnow': 1 });
  t.regex(String(lines.find((l) => l.itemId === 'm_2')?.detail), /^plugin exitnow failed on item m_2: process\.exit\(0\) was called while the command was under way/);
  t.deepEqual((await readMaildir(join(dir, 'now'))).map((m) => m.itemId).sort(), ['m_1', 'm_1', 'm_3', 'm_3']);
  const inTimer = await run(await pluginFile(dir, 'exitlater', "if (item.id === 'm_2') setTimeout(() => process.exit(0), 0); return item;"), 'later');
  t.is(inTimer.code, 70, inTimer.stderr);
  t.is((JSON.parse(inTimer.stdout) as { error: { code: string } }).error.code, 'E_INTERNAL');
  t.is((await readStatusLog(inTimer.status)).summary.error?.code, 'E_INTERNAL');
  const atLoad = join(dir, 'exitload.mjs');
  await writeFile(atLoad, "process.exit(0);\nexport default { name: 'exitload', hostApi: '^1.0.0', transform: (item) => item };\n");
  const loading = await run(atLoad, 'load');
  t.is(loading.code, 2, loading.stderr);
  t.regex(loading.stderr, /E_PLUGIN_LOAD: cannot load plugin .*exitload\.mjs: process\.exit\(0\) was called/);
});

test('a plugin whose load never ends: refused within --plugin-timeout (E_PLUGIN_LOAD, exit 2, recorded), and SIGTERM while it loads stops the run at once (E_STOPPED, exit 4, recorded); was: hung for ever deaf to SIGTERM, or exit 13 unrecorded', async (t) => {
  t.timeout(90_000);
  const dir = await tempDir(t);
  const archive = await deskArchive(dir, ['m_1', 'm_2']);
  const plugin = async (name: string, top: string) => {
    const path = join(dir, `${name}.mjs`);
    await writeFile(path, `${top}\nexport default { name: '${name}', hostApi: '^1.0.0', transform: (item) => item };\n`);
    return path;
  };
  const args = (name: string, path: string) => ['run', '--all-domains', archive, '--sink', `maildir:${join(dir, name)}`, '--state-dir', join(dir, `${name}-state`), '--plugin', path];
  const records = async (name: string) => (await runRecords(join(dir, `${name}-state`))).filter((r) => r.record === 'failure');
  // No live handle: Node itself ended such a run with exit 13 before, no record.
  const idle = await cli([...args('idle', await plugin('idle', 'await new Promise(() => {});')), '--plugin-timeout', '2']);
  t.is(idle.code, 2, idle.stderr);
  t.regex(idle.stderr, /E_PLUGIN_LOAD: cannot load plugin .*idle\.mjs: it did not finish loading within 2 s \(--plugin-timeout\)/);
  t.like((await records('idle'))[0], { code: 'E_PLUGIN_LOAD', exitCode: 2 });
  // A live interval: before, the run hung, and SIGTERM only logged.
  const started = join(dir, 'loading');
  const busy = await plugin('busy', `import { writeFileSync } from 'node:fs';\nwriteFileSync(${JSON.stringify(started)}, '');\nawait new Promise(() => { setInterval(() => {}, 1000); });`);
  const { code, signalledAt } = await stopOnceThere(args('busy', busy), started, 30_000);
  t.is(code, 4);
  t.true(Date.now() - signalledAt < 10_000);
  t.like((await records('busy'))[0], { code: 'E_STOPPED', exitCode: 4 });
});

test("a plugin's console.log goes to the log, masked, never to stdout, where --json prints the summary alone (was: mixed into it, a secret it printed shown whole)", async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const archive = await deskArchive(dir, ['m_1', 'm_2']);
  const chatty = await pluginFile(dir, 'chatty', "console.log('seen', item.id, { env: 'PIVOT_IMAP_PASSWORD=' + process.env.PIVOT_IMAP_PASSWORD }); console.error('odd', item.id); return item;");
  const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--plugin', chatty, '--json'], { env: { PIVOT_IMAP_PASSWORD: 'hunter2-plugin' } });
  t.is(result.code, 0, result.stderr);
  const summary = JSON.parse(result.stdout) as { delivered: number };
  t.is(summary.delivered, 4);
  t.regex(result.stderr, /console\.log: seen m_1 \{ env: 'PIVOT_IMAP_PASSWORD=\*\*\*' \}/);
  t.regex(result.stderr, /"level":"error","message":"console\.error: odd m_2"/);
  t.false(result.stdout.includes('hunter2') || result.stderr.includes('hunter2'));
});

test("a plugin's stray error that quotes a secret is masked in the summary on stdout, --json or not, as in every record (was: shown whole)", async (t) => {
  t.timeout(60_000);
  const dir = await tempDir(t);
  const archive = await deskArchive(dir, ['m_1', 'm_2']);
  const stray = await pluginFile(dir, 'stray', "if (item.id === 'm_1') void Promise.reject(new Error('stray boom PIVOT_IMAP_PASSWORD=hunter2')); return item;");
  for (const json of [[], ['--json']]) {
    const result = await cli(['run', '--all-domains', archive, '--sink', `maildir:${join(dir, `mail${json.length}`)}`, '--plugin', stray, ...json]);
    t.is(result.code, 70, result.stderr);
    t.regex(result.stdout, /PIVOT_IMAP_PASSWORD=\*\*\*/);
    t.false(result.stdout.includes('hunter2'));
    t.false(result.stderr.includes('hunter2'));
  }
});
