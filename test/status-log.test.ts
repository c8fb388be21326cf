import test from 'ava';
import { readFile } from 'node:fs/promises';
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
