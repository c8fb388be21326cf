// The ledger on its own: the chain and its checkpoints, written by LedgerWriter and checked by
// checkLedger, tampered with the ways an auditor fears (a byte changed, a line removed, lines
// swapped, the tail cut, the wrong key). Signatures are also checked here by hand from the
// signed-note format, not with our reader.
import test from 'ava';
import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto';
import { appendFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode } from '../src/errors.js';
import { generateKeys, parseSigningKey, parseVerifierKey } from '../src/ledger/note.js';
import { checkLedger, readCheckpointCopies } from '../src/ledger/reader.js';
import { LedgerWriter } from '../src/ledger/writer.js';
import type { LogRecord } from '../src/status-log.js';
import { tempDir } from './helpers/tmp.js';

const keys = generateKeys('test-key');
const signing = parseSigningKey(keys.privateText, 'test key');
const verifier = parseVerifierKey(keys.verifierText, 'test key');

function outcome(runId: string, n: number): LogRecord {
  return { record: 'outcome', runId, at: '2026-11-23T02:30:00.000Z', exportId: 'acme-1', itemId: `m_${n}`, conversationId: 'c_1', mailbox: 'jane@acme.example', sink: 'maildir', outcome: 'delivered', messageId: `<m_${n}@acme>`, sentAt: '2026-11-23T10:00:00.000Z', sha256: 'ab'.repeat(32), size: 100 };
}

/** Two runs of three outcomes each, each sealed: 8 lines. */
async function twoRuns(dir: string, key: typeof signing | null = signing): Promise<{ path: string; note: string }> {
  const path = join(dir, 'ledger.jsonl');
  const note = join(dir, 'checkpoint.note');
  for (const runId of ['run-1', 'run-2']) {
    const ledger = await LedgerWriter.open(path);
    for (let n = 0; n < 3; n++) await ledger.append(JSON.stringify(outcome(runId, n)));
    await ledger.seal(runId, key ?? undefined, note);
    await ledger.close();
  }
  return { path, note };
}

async function lines(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8')).split('\n').filter(Boolean);
}

test('an untouched ledger holds: chain intact, every checkpoint signed by the key, the copy matching', async (t) => {
  const { path, note } = await twoRuns(await tempDir(t));
  const check = await checkLedger(path, { key: verifier, copies: await readCheckpointCopies([note]) });
  t.deepEqual(check.problems, []);
  t.true(check.chainIntact);
  t.is(check.records, 8);
  t.is(check.checkpoints, 2);
  t.is(check.signature, 'verified');
  t.is(check.unsealed, 0);
  // Without a key the signature is not checked, and says so.
  t.is((await checkLedger(path, {})).signature, 'not checked');
});

test('each line holds the sha256 of the line before; the checkpoint note is a signed-note an independent reader can check', async (t) => {
  const { path, note } = await twoRuns(await tempDir(t));
  const all = await lines(path);
  for (let i = 1; i < all.length; i++) {
    t.is((JSON.parse(all[i]!) as { prev: string }).prev, createHash('sha256').update(all[i - 1]!).digest('hex'));
  }
  const text = await readFile(note, 'utf8');
  const [body, signatures] = text.split('\n\n') as [string, string];
  const [origin, size, root] = body.split('\n');
  t.regex(origin!, /^pivot-archive\/ledger\/[0-9a-f]{16}$/);
  t.is(size, '7'); // the second checkpoint covers the 7 lines before it
  t.is(Buffer.from(root!, 'base64').toString('hex'), createHash('sha256').update(all[6]!).digest('hex'));
  // signed-note: "— name base64(keyid(4) || ed25519 signature(64))" over the body and its newline.
  const match = /^\u2014 test-key (\S+)\n$/.exec(signatures)!;
  t.truthy(match);
  const blob = Buffer.from(match[1]!, 'base64');
  const [, name, keyId, data] = /^([^+]+)\+([0-9a-f]{8})\+(.+)$/.exec(keys.verifierText.trim()) as unknown as [string, string, string, string];
  t.is(name, 'test-key');
  t.is(blob.subarray(0, 4).toString('hex'), keyId);
  const raw = Buffer.from(data, 'base64').subarray(1);
  const publicKey = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
  t.true(verifySignature(null, Buffer.from(`${body}\n`), publicKey, blob.subarray(4)));
});

test('a byte changed in one record breaks the chain at the next line', async (t) => {
  const { path } = await twoRuns(await tempDir(t));
  const all = await lines(path);
  all[2] = all[2]!.replace('"m_2"', '"m_X"');
  await writeFile(path, all.join('\n') + '\n');
  const check = await checkLedger(path, { key: verifier });
  t.false(check.chainIntact);
  t.regex(check.problems.join('\n'), /line 4 .*does not hold the hash of the line before/);
});

test('a record removed, or two records swapped, is found', async (t) => {
  const dir = await tempDir(t);
  const { path } = await twoRuns(dir);
  const all = await lines(path);
  await writeFile(path, [...all.slice(0, 1), ...all.slice(2)].join('\n') + '\n');
  const removed = await checkLedger(path, {});
  t.false(removed.chainIntact);
  t.regex(removed.problems.join('\n'), /numbered 2/);
  await writeFile(path, [all[0], all[2], all[1], ...all.slice(3)].join('\n') + '\n');
  const swapped = await checkLedger(path, {});
  t.false(swapped.chainIntact);
  t.regex(swapped.problems.join('\n'), /re-ordered/);
});

test("the ledger's last records dropped are found by the checkpoint copy, even when whole runs are cut", async (t) => {
  const dir = await tempDir(t);
  const { path, note } = await twoRuns(dir);
  const copies = await readCheckpointCopies([note]);
  const all = await lines(path);
  // Cut the second run entirely: what is left is a whole, valid chain of its own.
  await writeFile(path, all.slice(0, 4).join('\n') + '\n');
  t.true((await checkLedger(path, { key: verifier })).chainIntact, 'alone, a cut at a run boundary looks whole');
  const check = await checkLedger(path, { key: verifier, copies });
  t.false(check.chainIntact);
  t.regex(check.problems.join('\n'), /covers 7 records, the ledger holds 4: records were cut from its end/);
  // Cut inside a run: the last checkpoint is gone, the records after the one before are unsealed.
  await writeFile(path, all.slice(0, 6).join('\n') + '\n');
  const cut = await checkLedger(path, { copies });
  t.false(cut.chainIntact);
  t.is(cut.unsealed, 2);
});

test('the wrong public key fails the signature; a checkpoint rewritten without a key fails it too', async (t) => {
  const { path } = await twoRuns(await tempDir(t));
  const other = parseVerifierKey(generateKeys('test-key').verifierText, 'other');
  const wrong = await checkLedger(path, { key: other });
  t.is(wrong.signature, 'failed');
  t.true(wrong.chainIntact);
  const unsigned = await twoRuns(await tempDir(t), null);
  const check = await checkLedger(unsigned.path, { key: verifier });
  t.is(check.signature, 'failed');
  t.regex(check.problems.join('\n'), /last checkpoint is not signed/);
});

test('a line a crash cut short is reported, not counted broken, and cut off by the next writer, which says how much it cut', async (t) => {
  const dir = await tempDir(t);
  const { path, note } = await twoRuns(dir);
  await appendFile(path, '{"seq":8,"prev":"00');
  const check = await checkLedger(path, { key: verifier, copies: await readCheckpointCopies([note]) });
  t.true(check.chainIntact);
  t.is(check.records, 8);
  t.regex(check.problems.join('\n'), /cut short/);
  const writer = await LedgerWriter.open(path);
  t.is(writer.tornBytes, '{"seq":8,"prev":"00'.length);
  await writer.append(JSON.stringify(outcome('run-3', 0)));
  await writer.seal('run-3', signing, note);
  await writer.close();
  const after = await checkLedger(path, { key: verifier, copies: await readCheckpointCopies([note]) });
  t.deepEqual(after.problems, []);
  t.is(after.records, 10);
});

test('a last line that is whole but not a record is refused: nothing is appended to a damaged ledger', async (t) => {
  const dir = await tempDir(t);
  const { path } = await twoRuns(dir);
  await appendFile(path, 'edited by hand\n');
  const before = await readFile(path);
  const err = await t.throwsAsync(LedgerWriter.open(path), { code: ErrorCode.LEDGER });
  t.regex(err!.message, /last line is not a ledger record/);
  t.deepEqual(await readFile(path), before);
});

test('keys: a damaged key file is refused without quoting it', (t) => {
  const damaged = keys.privateText.replace(/.{4}\n$/, 'AAAA\n');
  const err = t.throws(() => parseSigningKey(damaged, '--signing-key k'));
  t.false(err!.message.includes(damaged.trim().split('+').pop()!));
  t.throws(() => parseVerifierKey('not a key', '--public-key x'), { code: ErrorCode.CONFIG });
});

test('lines of a second writer among a run\'s own (its lock taken over) are found when the run seals: no checkpoint, E_LEDGER', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'ledger.jsonl');
  const first = await LedgerWriter.open(path);
  await first.append(JSON.stringify({ record: 'start', runId: 'a' }));
  await first.flush();
  const second = await LedgerWriter.open(path);
  await second.append(JSON.stringify({ record: 'start', runId: 'b' }));
  await second.close();
  await first.append(JSON.stringify({ record: 'summary', runId: 'a' }));
  const error = await t.throwsAsync(first.seal('a', undefined, join(dir, 'checkpoint.note')), { code: 'E_LEDGER' });
  t.regex(error!.message, /another writer appended to it meanwhile/);
  await first.close().catch(() => undefined);
  t.false((await readFile(path, 'utf8')).includes('"record":"checkpoint"'), 'nothing sealed');
  // A writer alone seals as ever.
  const alone = await LedgerWriter.open(join(dir, 'alone.jsonl'));
  await alone.append(JSON.stringify({ record: 'start', runId: 'c' }));
  await alone.seal('c', undefined, join(dir, 'alone.note'));
  await alone.close();
  t.true((await readFile(join(dir, 'alone.jsonl'), 'utf8')).includes('"record":"checkpoint"'));
});
