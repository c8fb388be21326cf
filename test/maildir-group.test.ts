// The Maildir sink's group commit: writes posted together are made durable together, and a write
// that fails in a group fails exactly its own items (a real file system that runs out of space:
// a small tmpfs), none of them answered delivered, nothing of theirs left, the others delivered.
import { execFile } from 'node:child_process';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createSink } from '../src/sinks/index.js';
import type { Delivery } from '../src/model.js';
import { delivery } from './helpers/sink-conformance.js';
import { readMaildir } from './helpers/maildir.js';
import { needing, tmpfsMissing } from './helpers/needing.js';
import { tempDir } from './helpers/tmp.js';

const run = promisify(execFile);

const noTmpfs = await tmpfsMissing();


/** A delivery made `size` bytes larger (its body padded), so that it cannot fit. */
function padded(d: Delivery, size: number): Delivery {
  return { ...d, message: Buffer.concat([d.message, Buffer.from(`${'x'.repeat(76)}\r\n`.repeat(Math.ceil(size / 78)))]) };
}

needing(noTmpfs, 'maildir group: a write that fails for want of space in a group fails exactly its items; the rest of the group is delivered', async (t) => {
  const dir = await tempDir(t);
  const mount = join(dir, 'small');
  await mkdir(mount);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=512k', 'tmpfs', mount]);
  t.teardown(() => run('umount', [mount]).then(() => undefined));
  const root = join(mount, 'mail');
  const sink = await createSink(`maildir:${root}?links=0`, { cwd: '/' });
  await sink.open();
  // Twelve deliveries in one turn of the event loop (one group): every third too large for the
  // file system, each alone; the others small. Two mailboxes, so two folders share the group.
  const deliveries = Array.from({ length: 12 }, (_, i) => {
    const d = delivery(i + 1, i % 2 === 0 ? 'jane@acme.example' : 'omar@acme.example');
    return i % 3 === 2 ? padded(d, 600 * 1024) : d;
  });
  const settled = await Promise.allSettled(deliveries.map((d) => sink.write(d)));
  const tooLarge = deliveries.filter((d) => d.message.length > 512 * 1024).map((d) => `${d.mailbox} ${d.itemId}`);
  t.is(tooLarge.length, 4);
  const failed = settled.flatMap((s, i) => (s.status === 'rejected' ? [`${deliveries[i]!.mailbox} ${deliveries[i]!.itemId}`] : []));
  t.deepEqual(failed, tooLarge, 'exactly the items whose write failed');
  for (const s of settled) {
    if (s.status === 'rejected') t.regex(String((s.reason as Error).message), /ENOSPC/, 'the reason: no space');
    else t.is(s.value.outcome, 'delivered');
  }
  // What is on disk is what was answered delivered, byte for byte, and nothing of the failed.
  const stored = await readMaildir(root);
  const expected = deliveries.filter((d) => d.message.length < 512 * 1024);
  t.deepEqual(stored.map((m) => `${m.mailbox} ${m.itemId}`).sort(), expected.map((d) => `${d.mailbox} ${d.itemId}`).sort());
  for (const d of expected) t.true(stored.find((m) => m.mailbox === d.mailbox && m.itemId === d.itemId)!.raw.equals(d.message));
  for (const mailbox of ['jane@acme.example', 'omar@acme.example']) t.deepEqual(await readdir(join(root, mailbox, '.INBOX.Pivot', 'tmp')), [], `no tmp/ file left in ${mailbox}`);
  // The failure is the items', not the sink's: the next group is delivered.
  t.is((await sink.write(delivery(20))).outcome, 'delivered');
  await sink.close();
});
