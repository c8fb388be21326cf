// Two writers delivering the same deliveries into one Maildir root at the same time (two runs at
// once, no lock): every message ends up exactly once, complete, and no write is rejected.
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { unlinkSync, watch } from 'node:fs';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { Delivery } from '../src/model.js';
import { createSink } from '../src/sinks/index.js';
import { maildirBaseName } from '../src/sinks/maildir/index.js';
import { raceDeliveries, RACE_MAILBOXES, writeAll, type RaceReport } from './maildir-race-writer.js';
import { tempDir } from './helpers/tmp.js';

const WRITER = fileURLToPath(new URL('./maildir-race-writer.js', import.meta.url));

/** Every message once per mailbox, complete, under its name; nothing in new/ or tmp/. */
async function checkStore(t: ExecutionContext, root: string, deliveries: Delivery[]): Promise<void> {
  for (const mailbox of RACE_MAILBOXES) {
    const folder = join(root, mailbox, '.INBOX.Pivot');
    const mine = deliveries.filter((d) => d.mailbox === mailbox);
    const cur = (await readdir(join(folder, 'cur'))).sort();
    t.deepEqual(cur, mine.map((d) => `${maildirBaseName(d)}:2,S`).sort(), `${mailbox}: one file per message`);
    t.deepEqual(await readdir(join(folder, 'new')), [], `${mailbox}: new/`);
    t.deepEqual(await readdir(join(folder, 'tmp')), [], `${mailbox}: tmp/ left clean`);
    const torn: string[] = [];
    for (const d of mine) {
      const bytes = await readFile(join(folder, 'cur', `${maildirBaseName(d)}:2,S`));
      if (!bytes.equals(d.message)) torn.push(`${d.itemId} (${bytes.length} of ${d.message.length} bytes)`);
    }
    t.deepEqual(torn, [], `${mailbox}: every file complete`);
  }
}

/** No write rejected, and every (mailbox, item) answered `delivered` by exactly one writer. */
function checkReports(t: ExecutionContext, reports: RaceReport[], deliveries: Delivery[]): void {
  t.deepEqual(reports.flatMap((r) => r.errors), [], 'no write rejected');
  const delivered = reports.flatMap((r) => r.deliveredKeys).sort();
  t.deepEqual(delivered, deliveries.map((d) => `${d.mailbox} ${d.itemId}`).sort(), 'each delivered exactly once');
  t.is(reports.reduce((sum, r) => sum + r.delivered + r.skipped, 0), deliveries.length * reports.length);
}

test('maildir race: two sinks in one process delivering the same deliveries into one root store each message once, complete, and reject nothing', async (t) => {
  const root = await tempDir(t);
  const deliveries = raceDeliveries(150);
  // Both writers go through the same items at the same moment, 256 in flight each.
  const reports = await Promise.all([writeAll(`maildir:${root}`, deliveries), writeAll(`maildir:${root}`, deliveries)]);
  checkReports(t, reports, deliveries);
  await checkStore(t, root, deliveries);
  // Hard links still work under the race: an item is one file for its four mailboxes, or a few.
  const again = await writeAll(`maildir:${root}`, deliveries);
  t.deepEqual(again, { delivered: 0, skipped: deliveries.length, errors: [], deliveredKeys: [] }, 'a re-run finds everything');
});

test('maildir race: two sinks with links=0 racing store each message once, complete, and reject nothing', async (t) => {
  const root = await tempDir(t);
  const deliveries = raceDeliveries(100);
  const reports = await Promise.all([writeAll(`maildir:${root}?links=0`, deliveries), writeAll(`maildir:${root}?links=0`, deliveries)]);
  checkReports(t, reports, deliveries);
  await checkStore(t, root, deliveries);
});

test('maildir race: two processes delivering the same export into one root at once store each message once, complete, and reject nothing', async (t) => {
  const root = await tempDir(t);
  const items = 150;
  const run = async () => JSON.parse((await promisify(execFile)(process.execPath, [WRITER, root, String(items)], { maxBuffer: 64 << 20 })).stdout) as RaceReport;
  const reports = await Promise.all([run(), run()]);
  const deliveries = raceDeliveries(items);
  checkReports(t, reports, deliveries);
  await checkStore(t, root, deliveries);
});

test('maildir race: a tmp/ file of ours removed under it (a cleaner that took it for left over) is written again, not a failed write', async (t) => {
  const root = await tempDir(t);
  // The cleaner must strike while the write goes: under load the watch event can come only after
  // it, so the try is made again (a fresh root) until it struck, and every try must deliver.
  for (let attempt = 1; ; attempt++) {
    const tries = join(root, String(attempt));
    const tmp = join(tries, 'a@acme.example', '.INBOX.Pivot', 'tmp');
    await mkdir(tmp, { recursive: true });
    const removed: string[] = [];
    // Another host's tmp/ cleaner, or a writer in another PID namespace that took our pid for gone.
    const watcher = watch(tmp, (_event, name) => {
      if (!name || removed.length > 0) return;
      try {
        unlinkSync(join(tmp, name));
        removed.push(name);
      } catch {
        // already gone
      }
    });
    // Megabytes, so the write is still going when the cleaner strikes.
    const [d] = raceDeliveries(1);
    const big = { ...d!, message: Buffer.concat([d!.message, Buffer.alloc(8 << 20, 'x')]) };
    const sink = await createSink(`maildir:${tries}?links=0`, { cwd: '/' });
    await sink.open();
    try {
      t.is((await sink.write(big)).outcome, 'delivered');
    } finally {
      await sink.close();
      watcher.close();
    }
    t.true((await readFile(join(tries, 'a@acme.example', '.INBOX.Pivot', 'cur', `${maildirBaseName(big)}:2,S`))).equals(big.message));
    t.deepEqual(await readdir(tmp), []);
    if (removed.length === 1) return t.log(`the cleaner struck at try ${attempt}`);
    if (attempt === 5) return t.fail('the cleaner never struck during a write in 5 tries');
  }
});
