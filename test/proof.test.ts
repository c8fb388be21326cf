// The proof end to end, through the command line, on a real Maildir: keygen, a signed run, the
// ledger's records, `verify` against the store (flags set by a client, one byte changed, one
// message deleted, one not in the ledger) and against the ledger itself (a line edited, the tail
// dropped, the wrong key), and `status --export` over a killed and a resumed run.
import test, { type ExecutionContext } from 'ava';
import { createHash } from 'node:crypto';
import { appendFile, readFile, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateSample } from '../src/sample/generate.js';
import { cli, startCli } from './helpers/cli.js';
import { readMaildir } from './helpers/maildir.js';
import { PYTHON_MISSING, needingTools, parseHtmlIndependently, readCsvIndependently } from './helpers/report-tools.js';
import { tempDir } from './helpers/tmp.js';

type Json = Record<string, unknown>;

async function ledgerLines(state: string): Promise<Json[]> {
  return (await readFile(join(state, 'ledger.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Json);
}

/** A signed run of a 400-event sample into a Maildir, with its state dir and key. */
async function signedRun(t: ExecutionContext) {
  const dir = await tempDir(t);
  const key = join(dir, 'ledger.key');
  const made = await cli(['keygen', '--out', key, '--name', 'acme-archive']);
  t.is(made.code, 0, made.stderr);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 400, seed: 5 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const args = ['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--signing-key', key, '--json'];
  const run = await cli(args);
  t.is(run.code, 0, run.stderr);
  const summary = JSON.parse(run.stdout) as Json;
  const verifyArgs = ['verify', '--state-dir', state, '--sink', `maildir:${mail}`, '--public-key', `${key}.pub`, '--json'];
  return { dir, key, archive, mail, state, args, summary, verifyArgs };
}

async function verifyJson(args: string[]): Promise<{ code: number | null; result: Json; stdout: string; stderr: string }> {
  const r = await cli(args);
  let result: Json = {};
  try {
    result = JSON.parse(r.stdout) as Json;
  } catch {
    // asserted by the caller
  }
  return { code: r.code, result, stdout: r.stdout, stderr: r.stderr };
}

test('keygen writes a private key only its owner reads, never over an existing one, and prints the public key', async (t) => {
  const dir = await tempDir(t);
  const key = join(dir, 'k');
  const made = await cli(['keygen', '--out', key, '--name', 'acme']);
  t.is(made.code, 0, made.stderr);
  t.is((await stat(key)).mode & 0o777, 0o600);
  const pub = await readFile(`${key}.pub`, 'utf8');
  t.regex(pub, /^acme\+[0-9a-f]{8}\+[A-Za-z0-9+/=]{44}\n$/);
  t.true(made.stdout.includes(pub.trim()));
  t.false(made.stdout.includes((await readFile(key, 'utf8')).trim()), 'the private key is never printed');
  const again = await cli(['keygen', '--out', key]);
  t.is(again.code, 2);
  t.regex(again.stderr, /exists: keygen never replaces a key/);
});

test("the signing key's text given where its path goes (--signing-key or PIVOT_ARCHIVE_SIGNING_KEY) is refused, and never written to a record", async (t) => {
  const dir = await tempDir(t);
  const key = join(dir, 'k');
  t.is((await cli(['keygen', '--out', key, '--name', 'acme'])).code, 0);
  const text = (await readFile(key, 'utf8')).trim();
  const data = text.split('+').at(-1)!;
  const archive = join(dir, 's.zip');
  await generateSample(archive, { events: 10, seed: 5, edgeCases: false });
  for (const [n, [args, env]] of ([
    [['--signing-key', text], {}],
    [[], { PIVOT_ARCHIVE_SIGNING_KEY: text }],
  ] as const).entries()) {
    const state = join(dir, `state${n}`);
    const status = join(dir, `status${n}.jsonl`);
    const logFile = join(dir, `log${n}.jsonl`);
    const result = await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--all-domains', '--state-dir', state, '--status-log', status, '--log-file', logFile, '--json', ...args], { env });
    t.is(result.code, 2, result.stderr);
    t.regex(result.stderr, /E_CONFIG: --signing-key takes the path of the key file keygen wrote, not the key's text/);
    const written = [result.stdout, result.stderr, await readFile(status, 'utf8'), await readFile(logFile, 'utf8')];
    for (const file of await readdir(state, { recursive: true })) if (!(await stat(join(state, file))).isDirectory()) written.push(await readFile(join(state, file), 'utf8'));
    t.true(written.length > 5, 'the state dir holds the failure');
    for (const w of written) t.false(w.includes(data), 'no part of the key');
  }
});

test('verify, status and report given a --public-key file that is not there: E_CONFIG naming it, exit 2 (was: exit 70 with a stack trace)', async (t) => {
  const dir = await tempDir(t);
  const archive = join(dir, 's.zip');
  await generateSample(archive, { events: 10, seed: 6, edgeCases: false });
  const state = join(dir, 'state');
  t.is((await cli(['run', archive, '--sink', `maildir:${join(dir, 'mail')}`, '--all-domains', '--state-dir', state])).code, 0);
  const missing = join(dir, 'missing.pub');
  for (const args of [['verify', '--state-dir', state], ['status', '--state-dir', state, '--export', 'acme-2026-11-23'], ['report', '--state-dir', state, '--export', 'acme-2026-11-23', '--out', join(dir, 'report')]]) {
    const result = await cli([...args, '--public-key', missing]);
    t.is(result.code, 2, `${args[0]}: ${result.stderr}`);
    t.true(result.stderr.includes(`E_CONFIG: --public-key ${missing} cannot be read: ENOENT`), result.stderr);
    t.notRegex(result.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('a signed run leaves a ledger: start, one outcome per delivery with Message-ID, sentAt, sha256 and where it is, summary, signed checkpoint', async (t) => {
  const { mail, state, summary } = await signedRun(t);
  const lines = await ledgerLines(state);
  t.is(lines[0]!.record, 'start');
  t.is(lines.at(-1)!.record, 'checkpoint');
  t.is(lines.at(-2)!.record, 'summary');
  const start = lines[0]!;
  t.is(start.command, 'run');
  t.is(start.exportId, summary.exportId);
  t.regex(String(start.sha256), /^[0-9a-f]{64}$/);
  t.deepEqual((start.options as Json).domains, ['acme.example']);
  t.true(lines.every((l) => l.runId === start.runId && typeof l.at === 'string'));
  const delivered = lines.filter((l) => l.outcome === 'delivered');
  t.is(delivered.length, Number(summary.delivered));
  // Each record's sha256 is of the bytes the Maildir holds at its location (read here by hand).
  for (const d of delivered.slice(0, 50)) {
    t.regex(String(d.messageId), /^<.+>$/);
    t.regex(String(d.sentAt), /^\d{4}-\d\d-\d\dT/);
    const bytes = await readFile(join(mail, String(d.location)));
    t.is(createHash('sha256').update(bytes).digest('hex'), String(d.sha256));
    t.is(bytes.length, Number(d.size));
  }
  t.is((lines.at(-1)!.signedBy as Json).name, 'acme-archive');
  t.is(await readFile(join(state, 'checkpoint.note'), 'utf8'), String(lines.at(-1)!.note));
});

test('verify: an untouched store passes; flags a client set do not matter; one byte changed, one message deleted and one not in the ledger are each found (exit 6)', async (t) => {
  t.timeout(300_000);
  const { dir, mail, summary, verifyArgs } = await signedRun(t);
  const clean = await verifyJson(verifyArgs);
  t.is(clean.code, 0, clean.stdout + clean.stderr);
  t.is((clean.result.store as Json).intact, Number(summary.delivered));
  t.deepEqual((clean.result.store as Json).unexpected, []);
  // A random sample says it is one, and checks only that many.
  const sampled = await verifyJson([...verifyArgs, '--sample', '25']);
  t.is(sampled.code, 0);
  t.like(sampled.result.store as Json, { checked: 25, of: Number(summary.delivered), sampled: true, intact: 25, unexpected: null });
  t.is((await cli([...verifyArgs, '--sample', '0'])).code, 2);

  const stored = await readMaildir(mail);
  // A client reads one (flag S -> FS) and moves another back to new/.
  const [first, second, third, fourth] = stored;
  const folder = (m: (typeof stored)[number]) => join(mail, m.mailbox, '.INBOX.Pivot');
  const curOf = async (m: (typeof stored)[number]) => ((await readdir(join(folder(m), 'cur'))).includes(m.file) ? 'cur' : 'new');
  await rename(join(folder(first!), await curOf(first!), first!.file), join(folder(first!), 'cur', first!.file.replace(/:2,.*$/, ':2,FS')));
  await rename(join(folder(second!), await curOf(second!), second!.file), join(folder(second!), 'new', second!.file.replace(/:2,.*$/, '')));
  const flagged = await verifyJson(verifyArgs);
  t.is(flagged.code, 0, flagged.stdout);

  // One byte of one message changed (a new file renamed over it: the copies hard-linked to it keep theirs).
  const thirdPath = join(folder(third!), 'cur', third!.file);
  const bytes = await readFile(thirdPath);
  bytes[bytes.length - 3] = bytes[bytes.length - 3]! ^ 0x01;
  await writeFile(`${thirdPath}.edited`, bytes);
  await rename(`${thirdPath}.edited`, thirdPath);
  const altered = await verifyJson(verifyArgs);
  t.is(altered.code, 6, altered.stdout);
  const alteredList = (altered.result.store as Json).altered as Json[];
  t.is(alteredList.length, 1);
  t.is(alteredList[0]!.mailbox, third!.mailbox);

  // One message deleted.
  await unlink(join(folder(fourth!), 'cur', fourth!.file));
  const missing = await verifyJson(verifyArgs);
  t.is(missing.code, 6);
  const missingList = (missing.result.store as Json).missing as Json[];
  t.is(missingList.length, 1);
  t.is(missingList[0]!.mailbox, fourth!.mailbox);
  const human = await cli(verifyArgs.filter((a) => a !== '--json'));
  t.regex(human.stdout, /MISSING .*\n[\s\S]*ALTERED/);

  // Messages of ours the ledger never recorded: another export delivered without a state dir.
  const other = join(dir, 'other.zip');
  await generateSample(other, { events: 50, seed: 99, edgeCases: false });
  t.is((await cli(['run', other, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--rejects', join(dir, 'rejects')])).code, 0);
  const unexpected = await verifyJson(verifyArgs);
  t.is(unexpected.code, 6);
  t.true(((unexpected.result.store as Json).unexpected as Json[]).length > 0);
  // Limited to the export, the other one's messages are not looked for (and it says so).
  const scoped = await verifyJson([...verifyArgs, '--export', String(summary.exportId)]);
  t.is((scoped.result.store as Json).unexpected, null);
});

test('verify with no temporary space for its list of messages to find exits 2, E_TEMPORARY naming where, no stack trace', async (t) => {
  t.timeout(120_000);
  const { dir, verifyArgs } = await signedRun(t);
  const missing = join(dir, 'no-such-tmp');
  const result = await cli(verifyArgs, { env: { TMPDIR: missing } });
  t.is(result.code, 2, result.stdout + result.stderr);
  t.true(result.stderr.includes(`E_TEMPORARY: verify's list of the messages to find cannot be kept in a temporary file under ${missing}`), result.stderr);
  t.notRegex(result.stderr, /^\s+at /m);
});

test('verify --ledger: a ledger line edited, its last records dropped, or the wrong public key, each exit 7', async (t) => {
  const { dir, state, verifyArgs } = await signedRun(t);
  const ledger = join(state, 'ledger.jsonl');
  const original = await readFile(ledger, 'utf8');
  const ledgerOnly = [...verifyArgs, '--ledger'];
  t.is((await cli(ledgerOnly)).code, 0);

  const lines = original.trim().split('\n');
  const n = Math.floor(lines.length / 2);
  lines[n] = lines[n]!.replace(/"mailbox":"([^"]+)"/, '"mailbox":"x$1"');
  await writeFile(ledger, lines.join('\n') + '\n');
  const edited = await verifyJson(ledgerOnly);
  t.is(edited.code, 7);
  t.regex(JSON.stringify(edited.result), /does not hold the hash of the line before/);

  await writeFile(ledger, original.trim().split('\n').slice(0, -5).join('\n') + '\n');
  const dropped = await verifyJson(ledgerOnly);
  t.is(dropped.code, 7);
  t.regex(JSON.stringify(dropped.result), /cut from its end/);

  await writeFile(ledger, original);
  const otherKey = join(dir, 'other.key');
  t.is((await cli(['keygen', '--out', otherKey, '--name', 'acme-archive'])).code, 0);
  const wrongKey = await verifyJson(ledgerOnly.map((a) => (a.endsWith('.pub') ? `${otherKey}.pub` : a)));
  t.is(wrongKey.code, 7);
  t.is((wrongKey.result.ledger as Json).signature, 'failed');
});

test('status --export reconciles a killed run and its resumed run into one account that adds up', async (t) => {
  t.timeout(180_000);
  const dir = await tempDir(t);
  const archive = join(dir, 'export.zip');
  await generateSample(archive, { events: 3000, seed: 11 });
  const mail = join(dir, 'mail');
  const state = join(dir, 'state');
  const args = ['run', archive, '--sink', `maildir:${mail}`, '--domain', 'acme.example', '--state-dir', state, '--rejects', join(dir, 'rejects'), '--max-rejected', '100%'];
  const { child, exited } = startCli(args);
  // Kill it once a few hundred outcomes are in the ledger and its checkpoint (saved about every second) is on disk.
  for (;;) {
    const text = await readFile(join(state, 'ledger.jsonl'), 'utf8').catch(() => '');
    const checkpoints = await readdir(join(state, 'checkpoints')).catch(() => [] as string[]);
    if ((text.match(/"outcome":"delivered"/g) ?? []).length > 300 && checkpoints.some((n) => n.endsWith('.json'))) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  await exited;
  // Killed half way: the export is not complete, and status says so in its exit code too.
  const half = await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23']);
  t.regex(half.stdout, /INCOMPLETE/);
  t.is(half.code, 1, half.stderr);
  const resumed = await cli([...args, '--json']);
  t.is(resumed.code, 0, resumed.stderr);
  const summary = JSON.parse(resumed.stdout) as Json;
  t.true(Number(summary.itemsDoneEarlier) > 0, 'the second run resumed from the checkpoint');
  const exportId = String(summary.exportId);
  const status = await cli(['status', '--state-dir', state, '--export', exportId, '--json']);
  t.is(status.code, 0, status.stderr);
  const { account, ledger } = JSON.parse(status.stdout) as { account: Json; ledger: Json };
  const runs = account.runs as Json[];
  t.is(runs.length, 2);
  t.is(runs[0]!.ended, 'killed');
  t.is(runs[1]!.ended, 'summary');
  const pairs = account.pairs as Json;
  const stored = await readMaildir(mail);
  t.is(Number(pairs.delivered) + Number(pairs.skipped), stored.length);
  t.is(pairs.failed, 0);
  t.true(account.complete as boolean);
  t.true(ledger.chainIntact as boolean);
  const human = await cli(['status', '--state-dir', state, '--export', exportId]);
  t.regex(human.stdout, new RegExp(`export ${exportId}.*COMPLETE`));
  t.regex(human.stdout, /\(no end recorded: still running, killed, or its records could not be written\): no end/);
  // An export the ledger never saw is an error, not an empty account.
  const unknown = await cli(['status', '--state-dir', state, '--export', 'nope']);
  t.is(unknown.code, 2);
});

needingTools('report from a real ledger (Python html.parser and csv)', [PYTHON_MISSING], () => {
  test("report: the HTML (read by Python's html.parser) holds the run's counters and the ledger's head; the CSV one line per item; an edited ledger turns it red", async (t) => {
    const { dir, state, summary, key } = await signedRun(t);
    const exportId = String(summary.exportId);
    const html = join(dir, 'report.html');
    const csv = join(dir, 'items.csv');
    const made = await cli(['report', '--state-dir', state, '--export', exportId, '--out', html, '--csv', csv, '--public-key', `${key}.pub`]);
    t.is(made.code, 0, made.stderr);
    const doc = await parseHtmlIndependently(await readFile(html, 'utf8'));
    t.deepEqual(doc.errors, []);
    t.is(doc.keyed.verdict, 'COMPLETE');
    t.is(doc.keyed['pairs.delivered'], Number(summary.delivered).toLocaleString('en-US'));
    t.is(doc.keyed['items.inArchive'], Number(summary.eventsInArchive).toLocaleString('en-US'));
    t.is(doc.keyed['rejects.total'], String(summary.rejectedTotal));
    const lines = await ledgerLines(state);
    t.is(doc.keyed['ledger.head'], createHash('sha256').update((await readFile(join(state, 'ledger.jsonl'), 'utf8')).trim().split('\n').at(-1)!).digest('hex'));
    t.regex(doc.keyed['ledger.signature']!, /verified/);
    t.false(doc.tags.includes('script'));
    const rows = await readCsvIndependently(csv);
    t.is(rows[0]![0], 'itemId');
    t.is(rows.length - 1, Number(summary.delivered) + Number(summary.rejectedTotal));
    t.is(rows.filter((r) => r[3] === 'delivered').length, lines.filter((l) => l.outcome === 'delivered').length);

    // An edited ledger: the same report says so, in red.
    const ledger = join(state, 'ledger.jsonl');
    const text = (await readFile(ledger, 'utf8')).split('\n');
    const edited = text.findIndex((l) => l.includes('"outcome":"delivered"'));
    text[edited] = text[edited]!.replace('"outcome":"delivered"', '"outcome":"skipped"');
    await writeFile(ledger, text.join('\n'));
    const again = await cli(['report', '--state-dir', state, '--export', exportId, '--out', html, '--public-key', `${key}.pub`]);
    t.is(again.code, 7, 'the report is written, and the exit code says the ledger fails');
    const broken = await parseHtmlIndependently(await readFile(html, 'utf8'));
    t.not(broken.keyed.verdict, 'COMPLETE');
    t.regex(broken.keyed['ledger.chain']!, /BROKEN/);
  });
});

test('verify --since checks a later run\'s skips against the earlier delivery: an alteration is not hidden by the window', async (t) => {
  t.timeout(120_000);
  const { dir, mail, state, archive, args, key } = await signedRun(t);
  const since = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 1100));
  // The same archive again: every message is found there (skipped).
  t.is((await cli(args)).code, 0);
  const [victim] = await readMaildir(mail);
  const path = join(mail, victim!.mailbox, '.INBOX.Pivot', 'cur', victim!.file);
  await writeFile(`${path}.x`, Buffer.concat([await readFile(path), Buffer.from('tampered\r\n')]));
  await rename(`${path}.x`, path);
  const windowed = await verifyJson(['verify', '--state-dir', state, '--sink', `maildir:${mail}`, '--since', since, '--public-key', `${key}.pub`, '--json']);
  t.is(windowed.code, 6, windowed.stdout);
  t.is(((windowed.result.store as Json).altered as Json[]).length, 1);
  // A window or an export that names nothing is an error, not a green "checked 0".
  t.is((await cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`, '--export', 'acme-2026-11-32'])).code, 2);
  t.is((await cli(['verify', '--state-dir', state, '--sink', `maildir:${mail}`, '--since', '2099-01-01'])).code, 2);
  t.is((await cli(['verify', '--state-dir', join(dir, 'no-such-state')])).code, 2);
  void archive;
});

test('the ledger fails (exit 7) on a checkpoint copy that is no note, a missing checkpoint.note, and a finished run appended without its checkpoint', async (t) => {
  const { dir, state, key } = await signedRun(t);
  const ledgerArgs = ['verify', '--state-dir', state, '--public-key', `${key}.pub`];
  await writeFile(join(dir, 'junk.note'), 'hello\n');
  const junk = await cli([...ledgerArgs, '--checkpoint', join(dir, 'junk.note')]);
  t.is(junk.code, 7);
  t.regex(junk.stdout, /not a checkpoint note/);
  t.is((await cli([...ledgerArgs, '--checkpoint', join(dir, 'missing.note')])).code, 2);

  // A whole run forged after the last checkpoint, chained correctly, with a summary but no checkpoint.
  const ledger = join(state, 'ledger.jsonl');
  const original = await readFile(ledger, 'utf8');
  const lines = original.trim().split('\n');
  let prev = createHash('sha256').update(lines.at(-1)!).digest('hex');
  let seq = lines.length;
  const forged: string[] = [];
  for (const record of [{ record: 'start', runId: 'forged', at: '2026-11-29T00:00:00.000Z', command: 'run', exportId: 'acme-2026-11-24', sink: 'maildir:x', options: {} }, { record: 'summary', runId: 'forged', at: '2026-11-29T00:01:00.000Z', source: 'pivot-zip', exportId: 'acme-2026-11-24' }]) {
    const line = JSON.stringify({ seq: seq++, prev, ...record });
    forged.push(line);
    prev = createHash('sha256').update(line).digest('hex');
  }
  await writeFile(ledger, [...lines, ...forged].join('\n') + '\n');
  const appended = await cli(ledgerArgs);
  t.is(appended.code, 7);
  t.regex(appended.stdout, /run forged ended but no checkpoint follows it/);

  await writeFile(ledger, original);
  await unlink(join(state, 'checkpoint.note'));
  const noNote = await cli(ledgerArgs);
  t.is(noNote.code, 7);
  t.regex(noNote.stdout, /checkpoint\.note is missing/);
});

test('a ledger whose last line is damaged stops the next run (exit 2) with a failure record in the run log; report never writes over the ledger', async (t) => {
  const { dir, state, args } = await signedRun(t);
  const ledger = join(state, 'ledger.jsonl');
  await appendFile(ledger, 'edited by hand\n');
  const refused = await cli(args);
  t.is(refused.code, 2);
  const status = await cli(['status', '--state-dir', state, '--last', '1']);
  t.regex(status.stdout, /FAILED before delivering \(exit 2\): E_LEDGER/);
  const over = await cli(['report', '--state-dir', state, '--export', 'acme-2026-11-23', '--out', ledger]);
  t.is(over.code, 2);
  t.regex(await readFile(ledger, 'utf8'), /edited by hand\n$/);
  void dir;
});

test('status --export: a reject the first run could not keep and the second kept counts once, kept; the export completes', async (t) => {
  t.timeout(120_000);
  const dir = await tempDir(t);
  const state = join(dir, 'state');
  await writeFile(join(dir, 'not-a-dir'), '');
  const base = ['run', '--sample', '--sink', `maildir:${join(dir, 'mail')}`, '--domain', 'acme.example', '--state-dir', state];
  t.is((await cli([...base, '--rejects', join(dir, 'not-a-dir', 'sub')])).code, 1);
  t.is((await cli([...base, '--rejects', join(dir, 'rejects')])).code, 0);
  const status = await cli(['status', '--state-dir', state, '--export', 'acme-2026-11-23', '--json']);
  const { account } = JSON.parse(status.stdout) as { account: { items: Json; complete: boolean; balanced: boolean } };
  t.is(account.items.rejectedNotKept, 0);
  t.is(account.items.rejectedKept, 4);
  t.true(account.balanced);
  t.true(account.complete);
});
