import test from 'ava';
import { simpleParser } from 'mailparser';
import { join } from 'node:path';
import { ErrorCode } from '../src/errors.js';
import type { Item } from '../src/model.js';
import { HOST_API_VERSION, PluginRegistry, definePlugin, drop, loadPlugin } from '../src/transforms/plugins/index.js';
import { writeArchive } from './helpers/archive.js';
import { REPO_ROOT, cli, readStatusLog } from './helpers/cli.js';
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
    [(i: Item) => ({ ...i, sentAt: 'soon' }), /sentAt is not a time/],
    [(i: Item) => ({ ...i, headers: { 'X-A': 1 } }), /headers are not names and string values/],
    [(i: Item) => ({ ...i, headers: { Subject: 'mine' } }), /header "Subject" is not an X- header/],
    [(i: Item) => ({ ...i, headers: { 'X-Desk': 'rates', 'X-Pivot-Item-Id': 'other' } }), /header "X-Pivot-Item-Id" is set by pivot-archive itself/],
    [(i: Item) => ({ ...i, text: 7 }), /text is not a string/],
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
