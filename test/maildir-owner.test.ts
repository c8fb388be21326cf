// Who owns what the Maildir sink creates: run as root, the owner of the Maildir root (or
// `?owner=`), so the mail server's user can read it; not root, nothing is chowned.
import test from 'ava';
import { execFile } from 'node:child_process';
import { chmod, chown, lstat, readdir, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode } from '../src/errors.js';
import { createSink } from '../src/sinks/index.js';
import { parseMaildirSpec } from '../src/sinks/maildir/config.js';
import { maildirBaseName } from '../src/sinks/maildir/index.js';
import { delivery } from './helpers/sink-conformance.js';
import { tempDir } from './helpers/tmp.js';

const asRoot = process.getuid?.() === 0;
const rootOnly = asRoot ? test : test.skip;

/** `uid:gid` of every directory and file under `dir`, `dir` itself excluded. */
async function owners(dir: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const walk = async (path: string, shown: string) => {
    for (const name of await readdir(path)) {
      const info = await lstat(join(path, name));
      found.set(`${shown}${name}`, `${info.uid}:${info.gid}`);
      if (info.isDirectory()) await walk(join(path, name), `${shown}${name}/`);
    }
  };
  await walk(dir, '');
  return found;
}

/** Items fanned out to two mailboxes (one copyKey each, so copies are links), a few of them. */
function items(): ReturnType<typeof delivery>[] {
  return [1, 2, 3].flatMap((n) => {
    const one = delivery(n);
    return ['a@acme.example', 'b@acme.example'].map((mailbox) => ({ ...one, mailbox, copyKey: `item-${n}` }));
  });
}

async function deliverAll(spec: string, deliveries: ReturnType<typeof delivery>[]): Promise<string[]> {
  const sink = await createSink(spec, { cwd: '/' });
  await sink.open();
  const outcomes = await Promise.all(deliveries.map(async (d) => (await sink.write(d)).outcome));
  await sink.close();
  return outcomes;
}

function allOwnedBy(found: Map<string, string>, owner: string): string[] {
  return [...found].filter(([, o]) => o !== owner).map(([path, o]) => `${path} is ${o}`);
}

rootOnly('maildir owner: run as root, every directory and file the sink creates belongs to the owner of the Maildir root', async (t) => {
  const root = await tempDir(t);
  await chown(root, 1234, 1234);
  t.deepEqual(await deliverAll(`maildir:${root}`, items()), Array(6).fill('delivered'));
  // A file of its own per copy, and a torn file replaced: each created file is chowned too.
  const torn = delivery(9, 'a@acme.example');
  const cur = join(root, 'a@acme.example', '.INBOX.Pivot', 'cur');
  await writeFile(join(cur, `${maildirBaseName(torn)}:2,S`), '');
  await chown(join(cur, `${maildirBaseName(torn)}:2,S`), 1234, 1234);
  t.deepEqual(await deliverAll(`maildir:${root}?links=0`, [delivery(4, 'a@acme.example'), delivery(4, 'c@acme.example'), torn]), ['delivered', 'delivered', 'delivered']);
  const found = await owners(root);
  t.true(found.size >= 2 * 8 + 1 + 8 + 7, `everything walked (${found.size})`);
  t.true(found.has('c@acme.example/.INBOX.Pivot/maildirfolder'));
  t.deepEqual(allOwnedBy(found, '1234:1234'), []);
});

rootOnly('maildir owner: ?owner=UID:GID in numbers gives what the sink creates to that owner, the root it found untouched', async (t) => {
  const dir = await tempDir(t);
  t.deepEqual(await deliverAll(`maildir:${dir}?owner=2345:3456`, items()), Array(6).fill('delivered'));
  t.is((await lstat(dir)).uid, 0, 'a root that was there is not the sink\'s to chown');
  t.deepEqual(allOwnedBy(await owners(dir), '2345:3456'), []);
  // A root the sink makes itself (and the folders on the way to it) is the owner's too.
  const made = join(dir, 'made', 'for', 'mail');
  t.deepEqual(await deliverAll(`maildir:${made}?owner=2345:3456`, items()), Array(6).fill('delivered'));
  const found = await owners(join(dir, 'made'));
  t.is(found.get('for/mail'), '2345:3456');
  t.deepEqual(allOwnedBy(found, '2345:3456'), []);
  t.is((await lstat(join(dir, 'made'))).uid, 2345);
});

test('maildir owner: ?owner= names come from /etc/passwd and /etc/group, numbers are taken as they are, an unknown name is a config error', (t) => {
  const owner = (value: string) => parseMaildirSpec(`maildir:/srv/mail?owner=${value}`, '/').owner;
  t.deepEqual(owner('nobody'), { uid: 65534, gid: 65534 });
  t.deepEqual(owner('daemon:nogroup'), { uid: 1, gid: 65534 });
  t.deepEqual(owner('2345:3456'), { uid: 2345, gid: 3456 });
  t.deepEqual(owner('65534'), { uid: 65534, gid: 65534 }, 'a listed uid alone takes its primary group');
  t.deepEqual(owner('2345'), { uid: 2345 }, 'an unlisted uid alone keeps the group of the root');
  t.deepEqual(owner('nobody:0'), { uid: 65534, gid: 0 });
  for (const bad of ['no-such-user-here', 'nobody:no-such-group-here', '', 'a:b:c', '-1', '1.5:2']) {
    const err = t.throws(() => owner(bad), undefined, bad);
    t.is((err as { code?: string } | undefined)?.code, ErrorCode.SINK_CONFIG, bad);
  }
  t.false('owner' in parseMaildirSpec('maildir:/srv/mail', '/'));
});

rootOnly('maildir owner: not root, nothing is chowned, and ?owner= other than oneself is refused at open (E_SINK_UNAVAILABLE)', async (t) => {
  const dir = await tempDir(t);
  await chmod(dir, 0o755);
  const root = join(dir, 'root');
  await mkdir(root);
  await chown(root, 1234, 1234);
  await chmod(root, 0o777);
  const module = new URL('../src/sinks/maildir/index.js', import.meta.url).href;
  const script = `
    import { maildirSinkFactory } from ${JSON.stringify(module)};
    const d = ${JSON.stringify({ ...delivery(1), message: undefined })};
    d.message = Buffer.from('Message-ID: ' + d.messageId + '\\r\\n\\r\\nhello\\r\\n');
    const result = {};
    for (const [name, query] of [['other user', '?owner=0'], ['other group', '?owner=65534:0'], ['self by name', '?owner=nobody'], ['self by number', '?owner=65534:65534&folder=.Other'], ['no owner', '?folder=.Third']]) {
      const sink = maildirSinkFactory.create('maildir:${root}' + query, { cwd: '/' });
      try {
        await sink.open();
        result[name] = (await sink.write(d)).outcome;
        await sink.close();
      } catch (err) {
        result[name] = err.code + ' ' + err.message;
      }
    }
    console.log(JSON.stringify(result));`;
  const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534 });
  const result = JSON.parse(stdout) as Record<string, string>;
  t.regex(result['other user']!, /^E_SINK_UNAVAILABLE .*owner/);
  t.regex(result['other group']!, /^E_SINK_UNAVAILABLE .*owner/);
  t.is(result['self by name'], 'delivered');
  t.is(result['self by number'], 'delivered');
  t.is(result['no owner'], 'delivered');
  const found = await owners(root);
  t.true(found.size > 8);
  t.deepEqual(allOwnedBy(found, '65534:65534'), [], 'not the root\'s owner (1234): nothing chowned');
});
