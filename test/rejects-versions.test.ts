// The rejects folder keeps every version of a rejected event: a corrected re-delivery (the same
// export id, its event at the same place changed) never overwrites what an earlier run kept; also
// on a file system without hard links.
import test from 'ava';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeArchive } from './helpers/archive.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { tempDir } from './helpers/tmp.js';

type Json = Record<string, unknown>;

const users = [
  { id: 'u_1', displayName: 'Jane', email: 'jane@acme.example' },
  { id: 'u_2', displayName: 'Omar', email: 'omar@acme.example' },
];
const conversations = [{ id: 'c_1', type: 'room', name: 'Desk', members: ['u_1', 'u_2'] }];
const message = (id: string, extra: Json = {}) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_1', text: id, ...extra });

/** Runs one archive into the same mail, state and rejects folders; the `kept` folder of each rejected line of that run, by item id. */
async function runKept(t: import('ava').ExecutionContext, dir: string, archive: string, env: Record<string, string> = {}): Promise<Map<string, string>> {
  const status = join(dir, `${archive.split('/').pop()}.jsonl`);
  const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', join(dir, 'state'), '--status-log', status, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%'], { env });
  t.is(result.code, 0, result.stderr);
  const { lines } = await readStatusLog(status);
  return new Map(lines.filter((l) => l.outcome === 'rejected').map((l) => [String(l.itemId), String(l.kept)]));
}

test('a corrected re-delivery whose rejected event changed: the first version stays kept where the first run said, the second is kept beside it', async (t) => {
  const dir = await tempDir(t);
  const first = await writeArchive(join(dir, 'first.zip'), { users, conversations, messages: { '0.json': [message('m_ok'), message('m_bad', { senderId: 'ghost', text: 'FIRST VERSION' })] } });
  const second = await writeArchive(join(dir, 'second.zip'), { users, conversations, messages: { '0.json': [message('m_ok'), message('m_bad', { senderId: 'ghost', text: 'SECOND VERSION' })] } });
  const keptFirst = (await runKept(t, dir, first)).get('m_bad')!;
  const keptSecond = (await runKept(t, dir, second)).get('m_bad')!;
  t.like(JSON.parse(await readFile(join(keptFirst, 'event.json'), 'utf8')), { text: 'FIRST VERSION' });
  t.like(JSON.parse(await readFile(join(keptSecond, 'event.json'), 'utf8')), { text: 'SECOND VERSION' });
  t.regex(await readFile(join(keptSecond, 'reason.txt'), 'utf8'), /^unknown-user: /);
  // The first again: its folder is found as it was, nothing new is made.
  t.is((await runKept(t, dir, first)).get('m_bad'), keptFirst);
  t.is((await readdir(join(keptFirst, '..'))).filter((name) => name.startsWith('m_bad.')).length, 2);
});

test('a corrected re-delivery whose rejected event has other attachment bytes: the event\'s folder links both versions', async (t) => {
  const dir = await tempDir(t);
  const event = message('m_bad', { senderId: 'ghost', attachments: [{ id: 'a_1', fileName: 'x.txt' }] });
  const first = await writeArchive(join(dir, 'first.zip'), { users, conversations, messages: { '0.json': [message('m_ok'), event] }, attachments: { a_1: Buffer.from('OLD BYTES') } });
  const second = await writeArchive(join(dir, 'second.zip'), { users, conversations, messages: { '0.json': [message('m_ok'), event] }, attachments: { a_1: Buffer.from('NEW BYTES') } });
  const kept = (await runKept(t, dir, first)).get('m_bad')!;
  t.is((await runKept(t, dir, second)).get('m_bad'), kept);
  const folder = join(kept, 'attachments');
  const contents = await Promise.all((await readdir(folder)).map((name) => readFile(join(folder, name), 'utf8')));
  t.deepEqual(contents.sort(), ['NEW BYTES', 'OLD BYTES']);
});

/**
 * A preloaded module that makes link(2) fail EPERM, as vfat, exFAT and some SMB and FUSE mounts
 * answer, for every name made under `dir` (the rejects folder on such a mount; the mail and state
 * dirs keep their links).
 */
const noLinksUnder = (dir: string) => `import { createRequire, syncBuiltinESMExports } from 'node:module';
const fs = createRequire(import.meta.url)('node:fs/promises');
const link = fs.link;
fs.link = (from, to) => String(to).startsWith(${JSON.stringify(dir)}) ? Promise.reject(Object.assign(new Error('EPERM: operation not permitted, link ' + from + ' -> ' + to), { code: 'EPERM', errno: -1, syscall: 'link' })) : link(from, to);
syncBuiltinESMExports();
`;

test('a rejects folder on a file system without hard links (link fails EPERM): every item is kept by a checked rename, its attachment copied, a re-run finds it, a changed version goes beside it', async (t) => {
  const dir = await tempDir(t);
  const preload = join(dir, 'no-links.mjs');
  await writeFile(preload, noLinksUnder(join(dir, 'rejects')));
  const env = { NODE_OPTIONS: `--import=${preload}` };
  const shared = [{ id: 'a_1', fileName: 'x.txt' }];
  const events = (text: string) => [message('m_ok'), message('m_bad', { senderId: 'ghost', text, attachments: shared }), message('m_bad2', { senderId: 'ghost', attachments: shared })];
  const first = await writeArchive(join(dir, 'first.zip'), { users, conversations, messages: { '0.json': events('FIRST VERSION') }, attachments: { a_1: Buffer.from('ATTACHED') } });
  const second = await writeArchive(join(dir, 'second.zip'), { users, conversations, messages: { '0.json': events('SECOND VERSION') }, attachments: { a_1: Buffer.from('ATTACHED') } });
  // Was: every rejected item failed not-kept (exit 1).
  const kept = await runKept(t, dir, first, env);
  const [bad, bad2] = [kept.get('m_bad')!, kept.get('m_bad2')!];
  t.like(JSON.parse(await readFile(join(bad, 'event.json'), 'utf8')), { text: 'FIRST VERSION' });
  for (const folder of [bad, bad2]) {
    const [name] = await readdir(join(folder, 'attachments'));
    t.is(await readFile(join(folder, 'attachments', name!), 'utf8'), 'ATTACHED');
    // A copy of its own: no link was made.
    t.is((await stat(join(folder, 'attachments', name!))).nlink, 1);
  }
  t.is((await runKept(t, dir, first, env)).get('m_bad'), bad);
  const beside = (await runKept(t, dir, second, env)).get('m_bad')!;
  t.not(beside, bad);
  t.like(JSON.parse(await readFile(join(bad, 'event.json'), 'utf8')), { text: 'FIRST VERSION' });
  t.like(JSON.parse(await readFile(join(beside, 'event.json'), 'utf8')), { text: 'SECOND VERSION' });
  // No temporary file is left anywhere in the rejects folder.
  const names = await readdir(join(dir, 'rejects'), { recursive: true });
  t.deepEqual(names.filter((name) => name.split('/').some((part) => part.startsWith('.tmp-'))), []);
});
