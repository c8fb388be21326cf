import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { StatusLog } from '../src/status-log.js';
import { tempDir } from './helpers/tmp.js';

test('many writers held up by a full status log share one wait: every line lands, and Node warns of no listener leak', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'status.jsonl');
  const log = await StatusLog.open([path], 'test-run');
  const warnings: Error[] = [];
  const onWarning = (w: Error) => warnings.push(w);
  process.on('warning', onWarning);
  t.teardown(() => process.off('warning', onWarning));
  // Each line is over the stream's 16 KiB high-water mark, so every writer waits for 'drain'.
  const detail = 'x'.repeat(20_000);
  await Promise.all(
    Array.from({ length: 300 }, (_, n) => log.write({ record: 'outcome', exportId: 'acme-1', itemId: `m_${n}`, conversationId: 'c_1', mailbox: 'a@acme.example', sink: 'maildir', outcome: 'failed', detail })),
  );
  await log.close();
  await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
  t.deepEqual(warnings.map((w) => w.name), []);
  const ids = (await readFile(path, 'utf8')).trim().split('\n').map((line) => (JSON.parse(line) as { itemId: string }).itemId);
  t.deepEqual(ids, Array.from({ length: 300 }, (_, n) => `m_${n}`));
});

test('a line a full disk cut short stays alone: the next run\'s records each start a line of their own and parse', async (t) => {
  const dir = await tempDir(t);
  const path = join(dir, 'status.jsonl');
  const whole = JSON.stringify({ record: 'start', runId: 'before' });
  await writeFile(path, `${whole}\n{"record":"outcome","runId":"before","ite`);
  const log = await StatusLog.open([path], 'next-run');
  await log.write({ record: 'outcome', exportId: 'acme-1', itemId: 'm_1', conversationId: 'c_1', mailbox: 'a@acme.example', sink: 'maildir', outcome: 'delivered' });
  await log.close();
  const lines = (await readFile(path, 'utf8')).split('\n');
  t.deepEqual(lines.slice(0, 2), [whole, '{"record":"outcome","runId":"before","ite']);
  t.like(JSON.parse(lines[2]!), { runId: 'next-run', itemId: 'm_1' });
  t.is(lines[3], '');
  // An empty file, and one that ends a line, get no blank line.
  const clean = join(dir, 'clean.jsonl');
  for (let run = 0; run < 2; run++) {
    const again = await StatusLog.open([clean], `run-${run}`);
    await again.write({ record: 'outcome', exportId: 'acme-1', itemId: `m_${run}`, conversationId: 'c_1', mailbox: 'a@acme.example', sink: 'maildir', outcome: 'delivered' });
    await again.close();
  }
  t.is((await readFile(clean, 'utf8')).split('\n').filter((line) => line === '').length, 1);
});
