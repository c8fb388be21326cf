// Two versions of one item in Maildir (a corrected re-delivery: the first under the base name, the
// later beside it under its content-named variant) when the first is no longer under the base
// name (a user removed or moved it, or it is torn): a re-run of the corrected export finds its
// version under the variant and stores nothing; a re-run of the first export stores the first
// version again, under the base name. Never one version twice, alone or with two writers at once.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Delivery } from '../src/model.js';
import type { Sink } from '../src/sinks/sink.js';
import { createSink } from '../src/sinks/index.js';
import { maildirBaseName, maildirVariantName } from '../src/sinks/maildir/index.js';
import { chatDeliveries } from './helpers/chat.js';
import { cli, readStatusLog } from './helpers/cli.js';
import { writeArchive } from './helpers/archive.js';
import { ATTACHMENT_BYTES, CORRECTED_EXPORT, MAILBOXES } from './helpers/corrected-export.js';
import { tempDir } from './helpers/tmp.js';

const MAILBOX = 'jane@acme.example';
const FOLDER = `${MAILBOX}/.INBOX.Pivot`;

/** Event `m_<n>` of `day` as export `exportId` builds it, with `text` (a corrected event has other text). */
function event(n: number, exportId: string, text: string, day = '2026-11-23'): Delivery {
  const sentAt = new Date(Date.parse(`${day}T10:00:00Z`) + n * 10_000).toISOString();
  return chatDeliveries({ id: `m_${n}`, sentAt, text, exportId, index: n, conversation: { id: 'c_1', name: 'Versions' }, sender: { id: 'u_1', displayName: 'Jane', email: MAILBOX } }, [MAILBOX])[0]!;
}

async function openSink(root: string): Promise<Sink> {
  const sink = await createSink(`maildir:${root}`, { cwd: '/' });
  await sink.open();
  return sink;
}

/** One sink's life over `root`: open, write every delivery at once, close; each outcome and location. */
async function writeAll(root: string, deliveries: Delivery[]): Promise<string[]> {
  const sink = await openSink(root);
  const stored = await Promise.all(deliveries.map((d) => sink.write(d)));
  await sink.close();
  return stored.map((s) => `${s.outcome} ${s.location}`);
}

/** The folder's files (`cur/` and `new/`), each with which version it holds. */
async function held(root: string, versions: Record<string, Delivery>): Promise<string[]> {
  const named = Object.entries(versions).map(([label, d]) => [label, d.message] as const);
  const out: string[] = [];
  for (const sub of ['cur', 'new']) {
    for (const name of await readdir(join(root, FOLDER, sub))) {
      const bytes = await readFile(join(root, FOLDER, sub, name));
      out.push(`${sub}/${name} ${named.find(([, message]) => message.equals(bytes))?.[0] ?? 'other'}`);
    }
  }
  return out.sort();
}

/** Event `n` first exported and delivered, then its correction (other text) stored beside it. */
async function twoVersions(t: ExecutionContext, n: number, day?: string) {
  const root = await tempDir(t);
  const first = event(n, 'first-export', 'the original text', day);
  const corrected = event(n, 'correcting-export', 'the corrected text', day);
  t.deepEqual(await writeAll(root, [first]), [`delivered ${FOLDER}/cur/${maildirBaseName(first)}:2,S`]);
  t.deepEqual(await writeAll(root, [corrected]), [`delivered ${FOLDER}/cur/${maildirVariantName(corrected)}:2,S`]);
  const base = maildirBaseName(first);
  const identity = base.slice(0, -'.pivot-archive'.length);
  /** The folder's files of this item, each with which version it holds. */
  const versions = async () => (await held(root, { first, corrected })).filter((file) => file.includes(identity));
  return { root, first, corrected, base, variant: maildirVariantName(corrected), cur: join(root, FOLDER, 'cur'), versions };
}

for (const [kept, where] of [
  ['as written', (variant: string) => `cur/${variant}:2,S`],
  ['flagged by a client', (variant: string) => `cur/${variant}:2,FS`],
  ['moved back to new/ by a server', (variant: string) => `new/${variant}`],
] as const) {
  test(`maildir versions: the first version removed, a re-run of the corrected export finds the corrected one under its variant (${kept}) and stores nothing; the first export's re-run stores the first version again under the base name`, async (t) => {
    const { root, first, corrected, base, variant, cur } = await twoVersions(t, 1);
    await rename(join(cur, `${variant}:2,S`), join(root, FOLDER, where(variant)));
    await rm(join(cur, `${base}:2,S`));
    t.deepEqual(await writeAll(root, [corrected]), [`skipped ${FOLDER}/${where(variant)}`]);
    t.deepEqual(await held(root, { first, corrected }), [`${where(variant)} corrected`], 'the corrected version once');
    t.deepEqual(await writeAll(root, [first]), [`delivered ${FOLDER}/cur/${base}:2,S`], 'the first version is missing: stored again');
    t.deepEqual(await held(root, { first, corrected }), [`cur/${base}:2,S first`, `${where(variant)} corrected`].sort());
    t.deepEqual(await writeAll(root, [first, corrected]), [`skipped ${FOLDER}/cur/${base}:2,S`, `skipped ${FOLDER}/${where(variant)}`]);
  });
}

test('maildir versions: the first version removed and the corrected one flagged after the run listed the folder: the corrected one is found (the folder listed again), not stored twice', async (t) => {
  const { root, corrected, base, variant, cur, versions } = await twoVersions(t, 2);
  const sink = await openSink(root);
  // The run's first delivery into the folder lists it: it sees both versions.
  t.is((await sink.write(event(3, 'correcting-export', 'another event'))).outcome, 'delivered');
  await rm(join(cur, `${base}:2,S`));
  await rename(join(cur, `${variant}:2,S`), join(cur, `${variant}:2,RS`));
  t.deepEqual(await sink.write(corrected), { outcome: 'skipped', location: `${FOLDER}/cur/${variant}:2,RS` });
  await sink.close();
  t.deepEqual(await versions(), [`cur/${variant}:2,RS corrected`]);
});

for (const [when, day] of [
  ['a day the run listed', undefined],
  ['a day the run had not listed yet', '2026-10-01'],
] as const) {
  test(`maildir versions: the first version torn under the base name (${when}): the corrected one is found under its variant, not written over the torn file; the first export's re-run replaces the torn file with the first version`, async (t) => {
    const { root, first, corrected, base, variant, cur, versions } = await twoVersions(t, 4, day);
    // What a file system may leave of a file after a crash.
    await writeFile(join(cur, `${base}:2,S`), Buffer.alloc(64));
    const sink = await openSink(root);
    // The run's first delivery lists the folder for its own day (with the days either side).
    t.is((await sink.write(event(5, 'correcting-export', 'another event'))).outcome, 'delivered');
    t.deepEqual(await sink.write(corrected), { outcome: 'skipped', location: `${FOLDER}/cur/${variant}:2,S` });
    await sink.close();
    t.deepEqual(await writeAll(root, [first]), [`delivered ${FOLDER}/cur/${base}:2,S`]);
    t.deepEqual(await versions(), [`cur/${base}:2,S first`, `cur/${variant}:2,S corrected`].sort());
  });
}

test('maildir versions: two writers at once, the first version removed: each version ends up stored once', async (t) => {
  const { root, first, corrected, base, variant, cur, versions } = await twoVersions(t, 6);
  await rm(join(cur, `${base}:2,S`));
  // Both writers list the folder before either writes.
  const [one, two] = await Promise.all([openSink(root), openSink(root)]);
  await Promise.all([one.write(event(7, 'x', 'listing one')), two.write(event(8, 'y', 'listing two'))]);
  const both = await Promise.all([one.write(corrected), two.write(corrected)]);
  t.deepEqual(both.map((s) => s.outcome), ['skipped', 'skipped']);
  const firsts = await Promise.all([one.write(first), two.write(first)]);
  t.deepEqual(firsts.map((s) => s.outcome).sort(), ['delivered', 'skipped'], 'one writer stores it, the other finds it (the name taken)');
  t.deepEqual(firsts.map((s) => s.location), [`${FOLDER}/cur/${base}:2,S`, `${FOLDER}/cur/${base}:2,S`]);
  await Promise.all([one.close(), two.close()]);
  t.deepEqual(await versions(), [`cur/${base}:2,S first`, `cur/${variant}:2,S corrected`].sort());
});

test('maildir versions (CLI): after the first version of a corrected item is removed, a re-run of the corrected export delivers nothing; a re-run of the first export stores the first version again, once', async (t) => {
  t.timeout(300_000);
  const dir = await tempDir(t);
  const root = join(dir, 'mail');
  const first = await writeArchive(join(dir, 'a.zip'), CORRECTED_EXPORT);
  const corrected = await writeArchive(join(dir, 'a-corrected.zip'), { ...CORRECTED_EXPORT, attachments: { a_1: ATTACHMENT_BYTES } });
  let runs = 0;
  const run = async (archive: string) => {
    const status = join(dir, `status-${++runs}.jsonl`);
    const r = await cli(['run', archive, '--sink', `maildir:${root}`, '--domain', 'acme.example', '--state-dir', join(dir, 'state'), '--status-log', status, '--rejects', join(dir, 'rejects'), '--quiet'], {});
    t.is(r.code, 0, r.stderr);
    return readStatusLog(status);
  };
  const cur = join(root, MAILBOXES[0]!, '.INBOX.Pivot', 'cur');
  const contents = async () => {
    const names = (await readdir(cur)).sort();
    return Promise.all(names.map(async (name) => createHash('sha256').update(await readFile(join(cur, name))).digest('hex')));
  };
  t.is((await run(first)).summary.delivered, 6);
  t.is((await run(corrected)).summary.delivered, 2);
  const both = await contents();
  t.is(new Set(both).size, 4, 'three items, one of them in two versions');
  // The first version of m_att (the second file of 09:00:02, under the base name) removed.
  const baseOfAtt = (await readdir(cur)).find((name) => name.startsWith(String(Date.parse('2026-11-23T09:00:02Z') / 1000)) && !name.includes('.C'))!;
  await rm(join(cur, baseOfAtt));
  const again = await run(corrected);
  t.is(again.summary.delivered, 0, 'the corrected version is held under its variant');
  const att = again.lines.find((l) => l.itemId === 'm_att' && l.mailbox === MAILBOXES[0] && l.outcome !== undefined);
  t.is(att?.outcome, 'skipped');
  t.regex(String(att?.location), /\.C[0-9a-f]{16}\.pivot-archive:2,S$/);
  t.is((await readdir(cur)).length, 3);
  t.is((await run(first)).summary.delivered, 1, 'the first version, missing, is stored again');
  t.deepEqual((await contents()).sort(), [...both].sort(), 'each version once, the first again under its base name');
  t.true((await readdir(cur)).includes(baseOfAtt));
});
