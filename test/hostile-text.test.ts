// Text that reaches people and records from places the operator does not control: a wrong file
// given to --user-map or --plugin (the job's env file of secrets), a plugin's own messages, an
// archive's export id printed on a terminal, ids a plugin gives items.
import test from 'ava';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, PivotArchiveError } from '../src/errors.js';
import type { ExportContext, Item } from '../src/model.js';
import type { Recorder } from '../src/pipeline/recorder.js';
import type { Unit } from '../src/pipeline/unit.js';
import { redactSecrets } from '../src/redact.js';
import { formatSummary } from '../src/summary.js';
import { readUserMap } from '../src/transforms/fan-out/index.js';
import { PluginRegistry, loadPlugin, type PluginOutcome } from '../src/transforms/plugins/index.js';
import { pluginStage } from '../src/transforms/plugins/stage.js';
import type { Logger } from '../src/logger.js';
import type { RunSummary } from '../src/status-log.js';
import { MANIFEST, writeArchive } from './helpers/archive.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

const SECRET = 'S3CRETxyz123';
const ENV_LINE = `PIVOT_IMAP_PASSWORD=${SECRET}`;

const jane = { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' };
const omar = { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' };
const users = [jane, omar];
const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];
const message = (id: string, minute: number) => ({ id, conversationId: 'c_1', type: 'message', sentAt: `2026-11-23T09:${String(minute).padStart(2, '0')}:00Z`, senderId: 'u_1', text: `text of ${id}` });

/** Every file under `dir`, read as text. */
async function filesUnder(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) files.set(join(entry.parentPath, entry.name), await readFile(join(entry.parentPath, entry.name), 'utf8'));
  }
  return files;
}

// 1. A wrong file's text is never quoted.

test('a user map that is not one (an env file, a password list) is an error that names the line and the problem, never its text', async (t) => {
  const dir = await tempDir(t);
  const cases: [string, RegExp][] = [
    [`${ENV_LINE}\n`, /:1: no comma: expected "pivot email or user id,mailbox"$/],
    [`# secrets\nadmin,${SECRET}\n`, /:2: the mailbox \(second cell\) is not a valid email address: it has no @/],
    [`a,b,${SECRET}\n`, /:1: 3 cells; expected 2/],
    [`"${SECRET}\n`, /:1: a quoted cell has no closing quote$/],
    [`${SECRET}@acme,jane@acme.example\n`, /:1: the key \(first cell\) has an @ but is not a valid email address/],
    [`${SECRET},\n`, /:1: the mailbox \(second cell\) is empty$/],
    [`${SECRET},a@acme.example\n${SECRET},b@acme.example\n`, /:2: the key \(first cell\) is mapped twice: on line 1 to another mailbox$/],
  ];
  for (const [content, why] of cases) {
    const path = join(dir, 'env');
    await writeFile(path, content);
    const err = await t.throwsAsync(readUserMap(path), { instanceOf: PivotArchiveError });
    t.is((err as PivotArchiveError).code, ErrorCode.CONFIG);
    t.regex(err!.message, why);
    t.false(err!.message.includes(SECRET), err!.message);
  }
});

test('a plugin path that names no JavaScript module is a load error that says what kind and where, never quoting the file', async (t) => {
  const dir = await tempDir(t);
  const at = (name: string) => join(dir, name).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const refused = async (name: string, content: string, why: RegExp) => {
    await writeFile(join(dir, name), content);
    const err = await t.throwsAsync(loadPlugin(`./${name}`, dir), { instanceOf: PivotArchiveError });
    t.is((err as PivotArchiveError).code, ErrorCode.PLUGIN_LOAD);
    t.regex(err!.message, why);
    t.false(err!.message.includes(SECRET), err!.message);
  };
  // Read as CommonJS (no extension): the value is evaluated as a name.
  await refused('env', `${ENV_LINE}\n`, new RegExp(`^cannot load plugin \\./env: ReferenceError at line 1 of ${at('env')} as the module was loaded: is it a JavaScript module\\? \\(its message is not shown`));
  // CommonJS syntax error: Node's stack holds the offending line, which must not show either.
  await refused('env2', `A=1\nsecret = ${SECRET} ${SECRET}\n`, new RegExp(`^cannot load plugin \\./env2: not a JavaScript module: SyntaxError at line 2 of ${at('env2')} \\(`));
  // An ES module's syntax error has no place in its stack: the message says how to find it.
  await refused('env.mjs', `export default 1;\nsecret = ${SECRET} ${SECRET}\n`, new RegExp(`not a JavaScript module: SyntaxError \\(its message is not shown: .*; node --check ${at('env.mjs')} shows where\\)$`));
  await refused('throws.mjs', `throw new Error('cannot start: ${ENV_LINE}');\n`, new RegExp(`: Error at line 1 of ${at('throws.mjs')} as the module was loaded`));
  // Node's own error about a package.json that is not JSON quotes it: named by its code only.
  await mkdir(join(dir, 'pkg'));
  await writeFile(join(dir, 'pkg', 'package.json'), `{"type": ${SECRET}}`);
  await refused('pkg/p.js', 'export default 1;\n', /^cannot load plugin \.\/pkg\/p\.js: ERR_INVALID_PACKAGE_CONFIG \(its message is not shown/);
  // Not found, or a system error (the plugin's own file, or one it reads as it loads): the message names only the place, and is shown whole.
  await writeFile(join(dir, 'reads.mjs'), `import { readFileSync } from 'node:fs';\nreadFileSync('${join(dir, 'absent.conf')}');\n`);
  const reads = await t.throwsAsync(loadPlugin('./reads.mjs', dir));
  t.regex(reads!.message, new RegExp(`^cannot load plugin \\./reads\\.mjs: ENOENT: no such file or directory, open '${at('absent.conf')}'$`));
  const missing = await t.throwsAsync(loadPlugin('./nope.js', dir));
  t.regex(missing!.message, new RegExp(`^cannot load plugin \\./nope\\.js: Cannot find module '${at('nope.js')}'`));
});

test('run with --user-map or --plugin naming the env file: exit 2, and the secret in no output, log, status log or ledger', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [message('m_1', 0)] } });
  await writeFile(join(dir, 'env'), `${ENV_LINE}\n`);
  const base = ['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', join(dir, 'status.jsonl'), '--log-file', join(dir, 'run.log')];
  const userMap = await cli([...base, '--state-dir', join(dir, 'state1'), '--user-map', join(dir, 'env')]);
  t.is(userMap.code, 2, userMap.stderr);
  t.regex(userMap.log, /E_CONFIG: .*env:1: no comma/);
  const plugin = await cli([...base, '--state-dir', join(dir, 'state2'), '--plugin', join(dir, 'env')], { cwd: dir });
  t.is(plugin.code, 2, plugin.stderr);
  t.regex(plugin.log, /E_PLUGIN_LOAD: cannot load plugin .*env: ReferenceError at line 1 of/);
  const ledgers = [join(dir, 'state1', 'ledger.jsonl'), join(dir, 'state2', 'ledger.jsonl')];
  for (const ledger of ledgers) t.regex(await readFile(ledger, 'utf8'), /"record":"failure"/);
  const written = [...(await filesUnder(dir))].filter(([path]) => path !== join(dir, 'env') && !path.endsWith('.zip'));
  t.true(written.length >= 4);
  for (const [path, text] of [['stdout+stderr', userMap.stdout + userMap.stderr + plugin.stdout + plugin.stderr], ...written]) t.false(text!.includes(SECRET), `${path}: ${text}`);
});

test('redactSecrets masks the value of a secret variable set as NAME=value, quoted or not, and keeps a JSON line JSON', (t) => {
  t.is(redactSecrets(`found "${ENV_LINE}"`), 'found "PIVOT_IMAP_PASSWORD=***"');
  t.is(redactSecrets(`export API_TOKEN='two words' and AZURE_CLIENT_SECRET="x y" then PIVOT_SIGNING_KEY=a;b&c rest`), `export API_TOKEN='***' and AZURE_CLIENT_SECRET="***" then PIVOT_SIGNING_KEY=*** rest`);
  // Names that hold no secret, or are not variables' (lower or mixed case), stay.
  t.is(redactSecrets('PIVOT_ARCHIVE_SHARD=1/2 secretEnv=PIVOT_GRAPH_CLIENT_SECRET passwordless=yes'), 'PIVOT_ARCHIVE_SHARD=1/2 secretEnv=PIVOT_GRAPH_CLIENT_SECRET passwordless=yes');
  const line = JSON.stringify({ record: 'outcome', detail: `plugin p failed on item m_1: ${ENV_LINE} and GRAPH_TOKEN="${SECRET} more"` });
  const masked = redactSecrets(line);
  t.false(masked.includes(SECRET), masked);
  t.is((JSON.parse(masked) as { detail: string }).detail, 'plugin p failed on item m_1: PIVOT_IMAP_PASSWORD=*** and GRAPH_TOKEN="***"');
});

test('a plugin that throws a secret at run time: the item is rejected with the plugin\'s words, the secret masked in the status log and the ledger', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [message('m_1', 0), message('m_2', 1)] } });
  await writeFile(join(dir, 'leaky.mjs'), `export default { name: 'leaky', hostApi: '^1.0.0', transform(item) { if (item.id === 'm_2') throw new Error('login refused with ${ENV_LINE}'); return item; } };\n`);
  const status = join(dir, 'status.jsonl');
  const state = join(dir, 'state');
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--plugin', join(dir, 'leaky.mjs')]);
  t.is(result.code, 0, result.stderr);
  const rejected = (await readStatusLog(status)).lines.find((l) => l.outcome === 'rejected')!;
  t.is(rejected.reason, 'plugin:leaky');
  t.is(rejected.detail, 'plugin leaky failed on item m_2: login refused with PIVOT_IMAP_PASSWORD=***');
  for (const path of [status, join(state, 'ledger.jsonl')]) t.false((await readFile(path, 'utf8')).includes(SECRET), path);
});

// 2. An archive's text on a terminal: control characters as visible markers.

const HOSTILE_ID = 'acme-\x1b[2K\r  failed                           0\n  counters add up                  yes\x1b]0;owned\x07\x1b[8m\u202Egnp\u009b31m\t';
/** A control character a terminal acts on, a line break, or a bidi override. */
const ACTING = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

test('the human summary shows an export id\'s control characters as visible markers: no forged line, nothing for the terminal', (t) => {
  const summary = { record: 'summary', exportId: HOSTILE_ID, sink: 'maildir:/m', itemsFromSource: 1, rejectedTotal: 1, rejected: { 'plugin:x\x1b[8m': 1 }, balanced: false, failed: 3, alarm: 'every item \x1b[8mrejected' } as unknown as RunSummary;
  const text = formatSummary(summary);
  t.false(ACTING.test(text), JSON.stringify(text));
  const lines = text.split('\n');
  t.is(lines[0], 'pivot-archive: export acme-⟨U+001B⟩[2K⟨U+000D⟩  failed                           0⟨U+000A⟩  counters add up                  yes⟨U+001B⟩]0;owned⟨U+0007⟩⟨U+001B⟩[8m⟨U+202E⟩gnp⟨U+009B⟩31m⟨U+0009⟩ -> maildir:/m');
  t.deepEqual(lines.filter((l) => /^\s+(failed|counters add up)\s/.test(l)).map((l) => l.trim().replace(/\s+/g, ' ')), ['failed 3', 'counters add up NO']);
  t.is(lines.at(-1), '  ALARM: every item ⟨U+001B⟩[8mrejected');
});

test('run, status and status --export of an archive whose export id holds CR, LF, ANSI and OSC sequences print it with visible markers', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { manifest: { ...MANIFEST, exportId: HOSTILE_ID, tenant: 'acme\x1b]0;t\x07' }, users, conversations, messages: { '0.json': [message('m_1', 0)] } });
  const state = join(dir, 'state');
  const run = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects')]);
  t.is(run.code, 0, run.stderr);
  const status = await cli(['status', '--state-dir', state]);
  t.is(status.code, 0, status.stderr);
  const account = await cli(['status', '--state-dir', state, '--export', HOSTILE_ID]);
  t.is(account.code, 0, account.stdout + account.stderr);
  for (const [what, text] of [['run', run.stdout], ['status', status.stdout], ['status --export', account.stdout]] as const) {
    t.false(ACTING.test(text), `${what}: ${JSON.stringify(text)}`);
    t.true(text.includes('acme-⟨U+001B⟩[2K⟨U+000D⟩  failed'), `${what}: ${text}`);
    // The forged counters are not lines of their own: each counter appears once, with its real value.
    t.deepEqual(text.split('\n').filter((l) => /^\s+failed\s+\d/.test(l)).length, what === 'status --export' ? 0 : 1, `${what}: ${text}`);
  }
  t.true(account.stdout.includes('(tenant acme⟨U+001B⟩]0;t⟨U+0007⟩)'), account.stdout);
});

// 3. Ids a plugin gives items: unique per export, or refused.

function item(id: string, over: Partial<Item> = {}): Item {
  return {
    id,
    type: 'message',
    sentAt: '2026-11-23T09:00:00Z',
    conversation: { id: 'c_1', type: 'room', name: 'Desk', members: ['u_1'] },
    sender: jane,
    text: `text of ${id}`,
    attachments: [],
    participants: [jane],
    headers: {},
    raw: { id },
    bytes: Buffer.from(JSON.stringify({ id })),
    position: { file: 0, index: Number(id.replace(/\D/g, '')) },
    ...over,
  };
}

/** A plugin that renames m_10 onto m_11 and splits m_20 into m_20 and m_21, as the tester's. */
const collide = {
  name: 'collide',
  hostApi: '^1.0.0',
  transform: (i: Item) => (i.id === 'm_10' ? { ...i, id: 'm_11' } : i.id === 'm_20' ? [i, { ...i, id: 'm_21' }] : i),
};
const noLog = () => undefined;
const context = { exportId: 'e', tenant: 't' };

/** An outcome as ids: those delivered, and those refused with their reasons. */
function ids(outcome: PluginOutcome): { items: string[]; refused: string[] } | string {
  if ('rejected' in outcome) return outcome.rejected.reason;
  return { items: outcome.items.map((i) => i.id), refused: (outcome.refused ?? []).map((r) => `${r.id} ${r.reason}`) };
}

test('apply: an item a plugin returns under an id another item has is refused duplicate-id:<plugin>, the others of its event go on', async (t) => {
  const registry = new PluginRegistry();
  registry.register(collide);
  const events = new Set(['m_10', 'm_11', 'm_20', 'm_21']);
  const taken = (id: string) => events.has(id);
  const renamed = await registry.apply(item('m_10'), context, noLog, taken);
  t.deepEqual(ids(renamed), { items: [], refused: ['m_11 duplicate-id:collide'] });
  t.regex('refused' in renamed ? renamed.refused![0]!.detail : '', /^plugin collide returned for item m_10 an item with the id m_11, which another item of this export has/);
  t.deepEqual(ids(await registry.apply(item('m_20'), context, noLog, taken)), { items: ['m_20'], refused: ['m_21 duplicate-id:collide'] });
  // Its own id, and one no other item has, are the item's to keep.
  t.deepEqual(await registry.apply(item('m_30'), context, noLog, taken), { items: [item('m_30')] });
  // Within one event: the second item under an id is refused, not the whole event.
  const twice = new PluginRegistry();
  twice.register({ name: 'twice', hostApi: '^1.0.0', transform: (i: Item) => [i, { ...i, text: 'again' }] });
  const both = await twice.apply(item('m_1'), context, noLog);
  t.deepEqual(ids(both), { items: ['m_1'], refused: ['m_1 duplicate-id:twice'] });
  t.deepEqual('items' in both && both.items.map((i) => i.text), ['text of m_1']);
});

test('the plugin stage: a refused item is a rejection of its event under the refused id; an id a plugin gave an earlier item is taken too', async (t) => {
  const registry = new PluginRegistry();
  registry.register({ name: 'rename', hostApi: '^1.0.0', transform: (i: Item) => (i.id === 'm_30' || i.id === 'm_31' ? { ...i, id: 'same' } : collide.transform(i)) });
  const events = new Set(['m_10', 'm_11', 'm_20', 'm_21', 'm_30', 'm_31']);
  const asked: string[] = [];
  const archive = { exportId: 'e', tenant: 't', hasEventId: (id: string) => (asked.push(id), events.has(id)) } as unknown as ExportContext;
  const splits: [number, number][] = [];
  const recorder = { split: (position: { index: number }, count: number) => splits.push([position.index, count]) } as unknown as Recorder;
  const stage = pluginStage(registry, archive, recorder, { info: noLog } as unknown as Logger);
  const run = async (id: string) => [(await stage({ kind: 'item', position: item(id).position, item: item(id) }))].flat() as Unit[];
  const shown = (units: Unit[]) => units.map((u) => (u.kind === 'item' ? `item ${u.item.id}` : u.kind === 'rejected' ? `rejected ${u.rejection.itemId} ${u.rejection.reason} @${u.position.index} ${u.rejection.bytes?.toString()}` : u.kind));
  t.deepEqual(shown(await run('m_10')), ['rejected m_11 duplicate-id:rename @10 {"id":"m_10"}']);
  t.deepEqual(shown(await run('m_20')), ['item m_20', 'rejected m_21 duplicate-id:rename @20 {"id":"m_20"}']);
  t.deepEqual(shown(await run('m_30')), ['item same']);
  t.deepEqual(shown(await run('m_31')), ['rejected same duplicate-id:rename @31 {"id":"m_31"}']);
  t.deepEqual(splits, [[10, 1], [20, 2], [30, 1], [31, 1]]);
  // Only ids a plugin changed are asked of the export.
  t.deepEqual(asked, ['m_11', 'm_21', 'same']);
});

test('run: two events a plugin gives one id: the second is refused and kept, the counters add up, and status --export calls the export COMPLETE', async (t) => {
  const dir = await tempDir(t);
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': [message('m_1', 0), message('m_2', 1), message('m_3', 2)] } });
  await writeFile(join(dir, 'merge.mjs'), "export default { name: 'merge', hostApi: '^1.0.0', transform: (item) => (item.id === 'm_3' ? item : { ...item, id: 'merged' }) };\n");
  const status = join(dir, 'status.jsonl');
  const state = join(dir, 'state');
  const run = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--plugin', join(dir, 'merge.mjs')]);
  t.is(run.code, 0, run.stderr);
  const { lines, summary } = await readStatusLog(status);
  t.deepEqual(summary.rejected, { 'duplicate-id:merge': 1 });
  t.true(summary.balanced);
  const kept = lines.find((l) => l.outcome === 'rejected')!;
  t.is(kept.itemId, 'merged');
  t.like(JSON.parse(await readFile(join(String(kept.kept), 'event.json'), 'utf8')), { id: 'm_2', text: 'text of m_2' });
  t.deepEqual(lines.filter((l) => l.outcome === 'delivered').map((l) => `${l.mailbox} ${l.itemId}`).sort(), ['jane@acme.example m_3', 'jane@acme.example merged', 'omar@acme.example m_3', 'omar@acme.example merged']);
  const account = await cli(['status', '--state-dir', state, '--export', MANIFEST.exportId]);
  t.is(account.code, 0, account.stdout);
  t.regex(account.stdout, /: COMPLETE/);
  t.regex(account.stdout, /counters add up yes/);
});

test('run: a plugin renames m_10 onto m_11 and splits m_20 into m_20 and m_21: both refused, status --export COMPLETE', async (t) => {
  const dir = await tempDir(t);
  const events = Array.from({ length: 30 }, (_, i) => message(`m_${i}`, i));
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events } });
  await writeFile(join(dir, 'collide.mjs'), `export default { name: 'collide', hostApi: '^1.0.0', transform: ${collide.transform.toString()} };\n`);
  const status = join(dir, 'status.jsonl');
  const state = join(dir, 'state');
  const run = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--status-log', status, '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%', '--plugin', join(dir, 'collide.mjs')]);
  t.is(run.code, 0, run.stderr);
  const { lines, summary } = await readStatusLog(status);
  t.deepEqual(summary.rejected, { 'duplicate-id:collide': 2 });
  // Each refused item is kept as its event under the refused id; the events m_11 and m_21 themselves are delivered as any other.
  const kept = lines.filter((l) => l.outcome === 'rejected');
  // (Rejected items are kept as they settle: their lines need not be in archive order.)
  t.deepEqual((await Promise.all(kept.map(async (l) => `${String(l.itemId)} ${(JSON.parse(await readFile(join(String(l.kept), 'event.json'), 'utf8')) as { id: string }).id}`))).sort(), ['m_11 m_10', 'm_21 m_20']);
  const delivered = lines.filter((l) => l.outcome === 'delivered' && l.mailbox === 'jane@acme.example').map((l) => String(l.itemId));
  t.deepEqual(delivered.sort(), events.map((e) => e.id).filter((id) => id !== 'm_10').sort());
  const account = await cli(['status', '--state-dir', state, '--export', MANIFEST.exportId]);
  t.regex(account.stdout, /: COMPLETE/);
});

test('ids and addresses that look like NAME=secret assignments are recorded as they are: the ledger names the items, and the export is COMPLETE', async (t) => {
  const dir = await tempDir(t);
  const events = [message('TOKEN=a', 0), message('TOKEN=b', 1), message('X_PASS=1', 2)];
  const archive = await writeArchive(join(dir, 'x.zip'), { users, conversations, messages: { '0.json': events } });
  const state = join(dir, 'state');
  const run = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state]);
  t.is(run.code, 0, run.stderr);
  const ledger = await readFile(join(state, 'ledger.jsonl'), 'utf8');
  for (const id of ['TOKEN=a', 'TOKEN=b', 'X_PASS=1']) t.true(ledger.includes(`"itemId":${JSON.stringify(id)}`), id);
  const account = await cli(['status', '--state-dir', state, '--export', MANIFEST.exportId]);
  t.is(account.code, 0, account.stdout + account.stderr);
  t.regex(account.stdout, /: COMPLETE/);
});
