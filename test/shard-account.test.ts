import test, { type ExecutionContext } from 'ava';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { shardOfMailbox } from '../src/transforms/shard/index.js';
import { writeArchive } from './helpers/archive.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { pairs, readMaildir } from './helpers/maildir.js';
import { tempDir } from './helpers/tmp.js';

const SHARDS = [1, 2, 3];
const EXPORT_ID = 'acme-2026-11-23';

/** A plugin that throws on FLAKY_ITEM (a service down on that host only) and drops DROP_ITEM (its own decision, the same everywhere). */
const PLUGIN = `export default {
  name: 'flaky', version: '1.0.0', hostApi: '^1.0.0',
  transform(item) {
    if (item.id === process.env.FLAKY_ITEM) throw new Error('enrichment service: 503 Service Unavailable');
    if (item.id === process.env.DROP_ITEM) return { drop: 'a bot message' };
    return item;
  },
};
`;

interface Setup {
  dir: string;
  archive: string;
  plugin: string;
  /** The unsharded run's (mailbox, item) pairs and rejects folder, with the plugin working. */
  pairs: string[];
  rejects: string[];
  /** An item for mailboxes of shard 1 and of shard 2 (of 3). */
  flaky: string;
  /** An item the plugin drops on every host. */
  dropped: string;
  /** An item for mailboxes of shard 1, none of shard 2. */
  notForShard2: string;
}

async function setup(t: ExecutionContext): Promise<Setup> {
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 300, seed: 11 });
  const plugin = join(dir, 'flaky.mjs');
  await writeFile(plugin, PLUGIN);
  // Find the items first (a plugin that fails on nothing), then the reference with the drop.
  const probe = await cli(['run', archive, '--sink', `maildir:${join(dir, 'probe')}`, '--domain', 'acme.example', '--quiet', '--max-rejected', '100%', '--rejects', join(dir, 'probe-rejects')]);
  t.is(probe.code, 0, probe.stderr);
  const shardsOf = new Map<string, Set<number>>();
  for (const pair of pairs(await readMaildir(join(dir, 'probe')))) {
    const [mailbox, itemId] = pair.split(' ') as [string, string];
    shardsOf.set(itemId, (shardsOf.get(itemId) ?? new Set()).add(shardOfMailbox(mailbox, 3)));
  }
  const items = [...shardsOf.keys()].sort();
  const flaky = items.find((id) => shardsOf.get(id)!.has(1) && shardsOf.get(id)!.has(2));
  const dropped = items.find((id) => id !== flaky && shardsOf.get(id)!.has(2));
  const notForShard2 = items.find((id) => shardsOf.get(id)!.has(1) && !shardsOf.get(id)!.has(2));
  if (!flaky || !dropped || !notForShard2) throw new Error('the sample has no item for mailboxes of shards 1 and 2, or none for shard 1 and not 2');
  const env = { DROP_ITEM: dropped };
  const reference = await cli(['run', archive, '--sink', `maildir:${join(dir, 'reference')}`, '--domain', 'acme.example', '--quiet', '--max-rejected', '100%', '--plugin', plugin, '--rejects', join(dir, 'reference-rejects')], { env });
  t.is(reference.code, 0, reference.stderr);
  return {
    dir,
    archive,
    plugin,
    pairs: pairs(await readMaildir(join(dir, 'reference'))),
    rejects: (await readdir(join(dir, 'reference-rejects'), { recursive: true })).sort(),
    flaky,
    dropped,
    notForShard2,
  };
}

function shardArgs(s: Setup, out: string, k: number): string[] {
  return [
    'run', s.archive, '--sink', `maildir:${join(out, 'mail')}`, '--domain', 'acme.example', '--quiet', '--max-rejected', '100%', '--plugin', s.plugin,
    '--shard', `${k}/3`, '--state-dir', join(out, `state-${k}`), '--status-log', join(out, `status-${k}.jsonl`), '--rejects', join(out, 'rejects'),
  ];
}

interface Union {
  code: number | null;
  account: { complete: boolean; items: { failedInShards?: number; rejectedKept: number; rejectedInSomeShards?: number }; rejectsByReason: Record<string, number> };
  problems: string[];
}

/** `status --export` of the three state dirs, in the order given. */
async function union(out: string, order: number[]): Promise<Union> {
  const r = await cli(['status', ...order.flatMap((k) => ['--state-dir', join(out, `state-${k}`)]), '--export', EXPORT_ID, '--json']);
  return { code: r.code, ...(JSON.parse(r.stdout) as Omit<Union, 'code'>) };
}

for (const flakyShard of [2, 1]) {
  test(`a plugin that fails on one item on shard ${flakyShard}/3's host only: that shard records it failed and exits 1, the union is INCOMPLETE in any order, and COMPLETE once that shard is run again`, async (t) => {
    t.timeout(240_000);
    const s = await setup(t);
    const out = join(s.dir, 'sharded');
    const results = await Promise.all(SHARDS.map((k) => cli(shardArgs(s, out, k), { env: { DROP_ITEM: s.dropped, ...(k === flakyShard ? { FLAKY_ITEM: s.flaky } : {}) } })));
    for (const k of SHARDS) t.is(results[k - 1]!.code, k === flakyShard ? 1 : 0, `shard ${k}/3: ${results[k - 1]!.log}`);

    // The failing shard recorded the item failed, with no mailbox, and kept nothing; the others nothing of it.
    const { lines, summary } = await readStatusLog(join(out, `status-${flakyShard}.jsonl`));
    const recorded = lines.filter((l) => l.record === 'outcome' && l.itemId === s.flaky);
    t.is(recorded.length, 1, JSON.stringify(recorded));
    t.like(recorded[0], { outcome: 'failed', mailbox: null, reason: 'plugin-error-in-shard', rejectReason: 'plugin:flaky' });
    t.is(summary.rejectedNotKept, 1);
    t.true(summary.balanced);
    const mailHere = pairs(await readMaildir(join(out, 'mail')));
    const lost = s.pairs.filter((p) => p.endsWith(` ${s.flaky}`) && shardOfMailbox(p.split(' ')[0]!, 3) === flakyShard);
    t.true(lost.length > 0);
    for (const p of lost) t.false(mailHere.includes(p), `${p} is not delivered yet`);
    // Rejections every shard makes alike (the drop among them) are kept once, by shard 1, as unsharded.
    t.deepEqual((await readdir(join(out, 'rejects'), { recursive: true })).sort(), s.rejects);
    t.true(s.rejects.some((f) => f.includes(s.dropped)), 'the dropped item is kept');

    for (const order of [SHARDS, [...SHARDS].reverse()]) {
      const u = await union(out, order);
      t.is(u.code, 1, `state dirs ${order.join(', ')}`);
      t.false(u.account.complete, `state dirs ${order.join(', ')}`);
      t.is(u.account.items.failedInShards, 1);
      t.true(u.problems.some((p) => p.includes(`shard ${flakyShard}/3`) && /a plugin failed on/.test(p)), u.problems.join('\n'));
    }
    const text = await cli(['status', ...SHARDS.flatMap((k) => ['--state-dir', join(out, `state-${k}`)]), '--export', EXPORT_ID]);
    t.regex(text.stdout, /export acme-2026-11-23 \(tenant acme\): INCOMPLETE/);
    t.regex(text.stdout, /1 item\(s\) a plugin failed on in a shard/);

    // The plugin works again: the shard re-run reads the item again and delivers its copies.
    const again = await cli(shardArgs(s, out, flakyShard), { env: { DROP_ITEM: s.dropped } });
    t.is(again.code, 0, again.log);
    t.deepEqual(pairs(await readMaildir(join(out, 'mail'))), s.pairs, 'the union is the unsharded run');
    t.deepEqual((await readdir(join(out, 'rejects'), { recursive: true })).sort(), s.rejects);
    for (const order of [SHARDS, [...SHARDS].reverse()]) {
      const u = await union(out, order);
      t.deepEqual(u.problems, [], `state dirs ${order.join(', ')}`);
      t.true(u.account.complete, `state dirs ${order.join(', ')}`);
      t.is(u.code, 0);
      t.is(u.account.items.failedInShards, undefined);
      t.is(u.account.rejectsByReason['dropped:flaky'], 1);
    }
  });
}

for (const forShard2 of [true, false]) {
  test(`a plugin that drops an item ${forShard2 ? 'for mailboxes of shards 1 and 2' : 'for none of shard 2\'s mailboxes'} on shard 2/3's host only (its environment): shard 2 keeps and records it, the union names the item delivered elsewhere and is INCOMPLETE in any order, COMPLETE once shard 2 is run again with the plugin fixed`, async (t) => {
    t.timeout(240_000);
    const s = await setup(t);
    const out = join(s.dir, 'host-drop');
    const item = forShard2 ? s.flaky : s.notForShard2;
    // Was: shard 2 took the drop as shard 1's to keep, recorded nothing, and the union said COMPLETE
    // with shard 2's mailboxes of the item holding no copy and the item kept nowhere.
    const results = await Promise.all(SHARDS.map((k) => cli(shardArgs(s, out, k), { env: k === 2 ? { DROP_ITEM: item } : {} })));
    for (const k of SHARDS) t.is(results[k - 1]!.code, 0, `shard ${k}/3: ${results[k - 1]!.log}`);
    const { lines } = await readStatusLog(join(out, 'status-2.jsonl'));
    const recorded = lines.filter((l) => l.record === 'outcome' && l.itemId === item);
    t.is(recorded.length, 1, JSON.stringify(recorded));
    t.like(recorded[0], { outcome: 'rejected', mailbox: null, reason: 'dropped:flaky' });
    t.true((await readdir(join(out, 'rejects'), { recursive: true })).some((f) => f.includes(item)), 'shard 2 kept the item it dropped');
    const everything = pairs(await readMaildir(join(s.dir, 'probe')));
    const missing = everything.filter((p) => p.endsWith(` ${item}`) && shardOfMailbox(p.split(' ')[0]!, 3) === 2);
    t.is(missing.length > 0, forShard2);
    const here = pairs(await readMaildir(join(out, 'mail')));
    for (const p of missing) t.false(here.includes(p));
    for (const order of [SHARDS, [...SHARDS].reverse(), [2, 1, 3]]) {
      const u = await union(out, order);
      t.is(u.code, 1, `state dirs ${order.join(', ')}`);
      t.false(u.account.complete, `state dirs ${order.join(', ')}`);
      t.is(u.account.items.rejectedInSomeShards, 1, `state dirs ${order.join(', ')}`);
      t.true(u.problems.some((p) => /1 item\(s\) a plugin dropped \(or refused\) in some shards and other shards delivered/.test(p)), u.problems.join('\n'));
    }
    const text = await cli(['status', ...SHARDS.flatMap((k) => ['--state-dir', join(out, `state-${k}`)]), '--export', EXPORT_ID]);
    t.regex(text.stdout, /export acme-2026-11-23 \(tenant acme\): INCOMPLETE/);

    // The plugin gives the same result everywhere now: shard 2 run again delivers its copies.
    const again = await cli(shardArgs(s, out, 2));
    t.is(again.code, 0, again.log);
    t.deepEqual(pairs(await readMaildir(join(out, 'mail'))), everything, 'the union is the unsharded run');
    for (const order of [SHARDS, [...SHARDS].reverse()]) {
      const u = await union(out, order);
      t.deepEqual(u.problems, [], `state dirs ${order.join(', ')}`);
      t.true(u.account.complete, `state dirs ${order.join(', ')}`);
      t.is(u.account.items.rejectedInSomeShards, undefined);
    }
  });
}

test('an archive with a reused event id, sharded: the later event is rejected duplicate-id by shard 1 alone, and the union is COMPLETE (not an item delivered by some shards only)', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const users = Array.from({ length: 8 }, (_, i) => ({ id: `u_${i}`, displayName: `User ${i}`, email: `user${i}@acme.example` }));
  const message = (id: string, text: string) => ({ id, conversationId: 'c_1', type: 'message', sentAt: '2026-11-23T09:00:00Z', senderId: 'u_0', text });
  const archive = await writeArchive(join(dir, 'x.zip'), {
    users,
    conversations: [{ id: 'c_1', type: 'room', members: users.map((u) => u.id) }],
    messages: { '0.json': [message('m_1', 'one'), message('m_2', 'two'), message('m_2', 'two again'), message('m_3', 'three')] },
  });
  for (const k of [1, 2]) {
    const r = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--quiet', '--shard', `${k}/2`, '--state-dir', join(dir, `state-${k}`), '--rejects', join(dir, 'rejects'), '--max-rejected', '100%']);
    t.is(r.code, 0, r.log);
  }
  for (const order of [[1, 2], [2, 1]]) {
    const r = await cli(['status', ...order.flatMap((k) => ['--state-dir', join(dir, `state-${k}`)]), '--export', EXPORT_ID, '--json']);
    const u = JSON.parse(r.stdout) as Omit<Union, 'code'> & { account: { balanced: boolean; items: { routed: number } } };
    t.deepEqual(u.problems, [], `state dirs ${order.join(', ')}`);
    t.true(u.account.complete && u.account.balanced, `state dirs ${order.join(', ')}`);
    t.is(u.account.items.rejectedKept, 1);
    t.is(u.account.items.routed, 3);
    t.is(r.code, 0);
  }
});

test('a shard whose plugin failed on an item none of its mailboxes get: it exits 1, and a re-run that reads the item again (and sends it elsewhere) clears it', async (t) => {
  t.timeout(240_000);
  const s = await setup(t);
  const out = join(s.dir, 'sharded');
  // The flaky item is for shards 1 and 2 only.
  const results = await Promise.all(SHARDS.map((k) => cli(shardArgs(s, out, k), { env: { DROP_ITEM: s.dropped, ...(k === 3 ? { FLAKY_ITEM: s.flaky } : {}) } })));
  t.deepEqual(results.map((r) => r.code), [0, 0, 1]);
  t.deepEqual(pairs(await readMaildir(join(out, 'mail'))), s.pairs, 'every pair is delivered');
  const before = await union(out, SHARDS);
  t.false(before.account.complete, 'shard 3/3 cannot know the item was not for it');
  t.is(before.code, 1);
  const again = await cli(shardArgs(s, out, 3), { env: { DROP_ITEM: s.dropped } });
  t.is(again.code, 0, again.log);
  const after = await union(out, SHARDS);
  t.deepEqual(after.problems, []);
  t.true(after.account.complete);
  t.is(after.code, 0);
});

test('unsharded, a plugin error still rejects the item and keeps it: exit 0 and a complete export', async (t) => {
  t.timeout(300_000);
  const s = await setup(t);
  const state = join(s.dir, 'state');
  const r = await cli(['run', s.archive, '--sink', `maildir:${join(s.dir, 'one')}`, '--domain', 'acme.example', '--quiet', '--max-rejected', '100%', '--plugin', s.plugin, '--rejects', join(s.dir, 'one-rejects'), '--state-dir', state], { env: { FLAKY_ITEM: s.flaky } });
  t.is(r.code, 0, r.log);
  t.true((await readdir(join(s.dir, 'one-rejects'), { recursive: true })).some((f) => f.includes(s.flaky)), 'kept in the rejects folder');
  const status = await cli(['status', '--state-dir', state, '--export', EXPORT_ID, '--json']);
  t.is(status.code, 0);
  const { account } = JSON.parse(status.stdout) as { account: { complete: boolean; rejectsByReason: Record<string, number> } };
  t.true(account.complete);
  t.is(account.rejectsByReason['plugin:flaky'], 1);
});

test('status --export and report of ONE shard\'s state dir: that shard\'s part only, never a plain COMPLETE, status exits 1 even when the part is accounted for', async (t) => {
  t.timeout(120_000);
  const s = await setup(t);
  const out = join(s.dir, 'sharded');
  // Only shard 3/3 ever ran: most of the export was never delivered.
  t.is((await cli(shardArgs(s, out, 3), { env: { DROP_ITEM: s.dropped } })).code, 0);
  const state3 = join(out, 'state-3');
  const status = await cli(['status', '--state-dir', state3, '--export', EXPORT_ID]);
  t.is(status.code, 1, 'one shard is never the export: not 0');
  t.regex(status.stdout, /shard 3\/3's part only: complete; the export as a whole is not known from one shard's ledger: combine every shard's state dir: status --state-dir DIR1 --state-dir DIR2 \.\.\. --export acme-2026-11-23/);
  t.notRegex(status.stdout, /: COMPLETE/);
  const json = await cli(['status', '--state-dir', state3, '--export', EXPORT_ID, '--json']);
  t.is(json.code, 1);
  t.like((JSON.parse(json.stdout) as { account: Record<string, unknown> }).account, { shard: '3/3', complete: false, shardComplete: true });

  const html = join(s.dir, 'report.html');
  const report = await cli(['report', '--state-dir', state3, '--export', EXPORT_ID, '--out', html]);
  t.is(report.code, 0, report.stderr);
  const page = await readFile(html, 'utf8');
  const title = /<title>([^<]*)<\/title>/.exec(page)![1]!;
  t.is(title, "Export acme-2026-11-23, shard 3/3's part only (not the whole export): part accounted for");
  t.regex(page, /<div id="banner" class="banner part"><span class="verdict" data-k="verdict">SHARD 3\/3'S PART ONLY<\/span>/);
  t.regex(page, /combine every shard's state dir with <code>status --state-dir DIR1 --state-dir DIR2 \.\.\. --export acme-2026-11-23<\/code>/);
  t.notRegex(page, />COMPLETE</);

  // A shard whose own part failed: INCOMPLETE, in red.
  t.is((await cli(shardArgs(s, out, 2), { env: { DROP_ITEM: s.dropped, FLAKY_ITEM: s.flaky } })).code, 1);
  const state2 = join(out, 'state-2');
  const failed = await cli(['status', '--state-dir', state2, '--export', EXPORT_ID]);
  t.is(failed.code, 1);
  t.regex(failed.stdout, /shard 2\/3's part only: INCOMPLETE/);
  t.is((await cli(['report', '--state-dir', state2, '--export', EXPORT_ID, '--out', html])).code, 0);
  const failedPage = await readFile(html, 'utf8');
  t.regex(failedPage, /<title>Export acme-2026-11-23, shard 2\/3's part only \(not the whole export\): INCOMPLETE<\/title>/);
  t.regex(failedPage, /class="banner incomplete"><span class="verdict" data-k="verdict">INCOMPLETE</);
  t.regex(failedPage, /1 item a plugin failed on in a sharded run/);
});
